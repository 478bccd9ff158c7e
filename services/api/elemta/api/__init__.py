"""elemta-api: the REST API and web dashboard, a window on the queue.

DESCRIPTION
    The api service reads what the other services keep in JetStream and answers
    in JSON. It writes nothing: no message is changed, held or deleted through it
    (yet).

    ``GET /api/v1/queue``
        Counts: messages in ``ELEMTA_MESSAGES``, delivery jobs in
        ``ELEMTA_DELIVERY`` (waiting and in flight), jobs in ``ELEMTA_DEFERRED``,
        outcomes not yet digested, and per stream the state and its durable
        consumers (pending, ack-pending, redelivered, waiting pulls).
    ``GET /api/v1/messages/<queue id>``
        The message's state from KV ``ELEMTA_STATE`` (``null`` once the message
        is finished and the queue removed it) and its history from
        ``ELEMTA_EVENTS`` (subject ``elemta.events.<queue id>``), oldest first.
    ``GET /api/v1/messages/<queue id>/events``
        The history alone.
    ``GET /``
        A small HTML page that shows the queue counts and looks up a queue id.

    A queue id is 20 characters of Crockford base32 (``[0-9A-HJKMNP-TV-Z]``);
    lower case is accepted and folded to upper case. A malformed id is answered
    400, an id with neither state nor history 404. Errors are JSON objects
    ``{"error": <code>, "detail": <text>}``; while NATS is unreachable or the
    streams do not exist yet, the ``/api`` endpoints answer 503.

SECURITY
    There is no authentication and no TLS yet. The service binds to
    127.0.0.1:8025 by default; do not expose it beyond the host (or, in
    Kubernetes, beyond the namespace) until it has authentication. It reveals
    envelope senders and recipients, never message bodies. It holds no
    privileges and needs no writable storage.

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
    nats.url (nats://127.0.0.1:4222): where the streams live.
    nats.connect_timeout (2.0): seconds per connection attempt.
    nats.publish_timeout (5.0): seconds to wait for any JetStream request.
    telemetry.log_level, telemetry.log_format, telemetry.otlp_endpoint: as for
        every service.
"""
