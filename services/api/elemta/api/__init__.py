"""elemta-api: the REST API and the web console, a window on the queue.

DESCRIPTION
    The api service is the administration interface: a REST API under
    ``/api/v1`` (FastAPI under uvicorn) with an OpenAPI 3.1 document generated
    from the code at ``/api/v1/openapi.json`` and a browsable page at
    ``/api/v1/docs``, and the web console at ``/console/``. Reads come from JetStream
    (KV ``ELEMTA_STATE``, streams); changes to messages are asked of the queue
    service, which owns their state. docs/api.md describes the endpoints,
    the roles and the errors (RFC 9457 problem details).

    ``GET /api/v1/queue``
        Counts of messages and jobs, and every stream's state and durable
        consumers.
    ``GET /api/v1/messages/<queue id>`` and ``.../events``
        A message's state and its history, oldest first.
    ``GET|POST /api/v1/keys``, ``DELETE /api/v1/keys/<key id>``
        API keys; a new key is shown once.
    ``GET /api/v1/audit``
        The audit log, newest first.
    ``GET /api/v1/me``
        The caller's key: id, label, role, addresses.
    ``/console/``, ``POST|GET|DELETE /console/session``
        The web console (static files in the package) and its login: a
        session cookie opened with an API key; writes through it need the
        CSRF token (``X-CSRF-Token``).

SECURITY
    Every ``/api`` path but the OpenAPI document and its page needs an API key
    (``Authorization: Bearer``); a missing or bad key is ``401``, a role without
    the permission ``403``. Keys are stored as SHA-256 hashes in KV
    ``ELEMTA_API_KEYS`` and shown only when created; every change is recorded in
    stream ``ELEMTA_AUDIT``. With ``api.tls_cert`` and ``api.tls_key`` the API
    listens with TLS; without, keep it on localhost (the default, 127.0.0.1:8025)
    or behind a TLS-terminating proxy. It holds no privileges and needs no
    writable storage.

DIAGNOSTICS
    Structured logs on stderr (access lines for ``/api`` and ``/`` only).
    ``/healthz``, ``/readyz`` (NATS connected and stream ``ELEMTA_EVENTS``
    present; otherwise 503 naming the failing checks) and ``/metrics`` are served
    on the API port itself, since the API has no separate health listener.
    A bad configuration exits with status 78 (EX_CONFIG), an address that cannot
    be bound with status 1.

CONFIGURATION PARAMETERS
    api.listen (127.0.0.1:8025): the HTTP address of the API, the page and the
        health endpoints.
    api.tls_cert, api.tls_key (empty): PEM certificate and key; set, the API
        listens with TLS.
    api.audit_retention (31536000): seconds the audit log keeps a record.
    api.session_lifetime (28800): seconds a console login lasts.
    api.login_attempts (10): failed console logins per client address in 5
        minutes before 429.
    nats.url (nats://127.0.0.1:4222): where the streams live.
    nats.connect_timeout (2.0): seconds per connection attempt.
    nats.publish_timeout (5.0): seconds to wait for any JetStream request.
    telemetry.log_level, telemetry.log_format, telemetry.otlp_endpoint: as for
        every service.
"""
