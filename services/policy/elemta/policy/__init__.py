"""elemta-policy: the verdicts on connections, envelopes and messages.

DESCRIPTION
    The policy service answers the ingress service over gRPC
    (``elemta.policy.v1.PolicyService``), once per SMTP stage at most: at connect,
    MAIL FROM, RCPT TO and end of DATA. Each answer is a verdict (accept, reject,
    temporary failure, hold, discard) with the SMTP reply text and the headers to
    add. It keeps no mail; it only judges.

    The checks themselves (SPF, DKIM, DMARC, ARC, DNSBL, greylisting, rate limits,
    content scanners) plug into :class:`elemta.policy.checks.Pipeline`; with no
    check configured every stage answers accept.

STANDARDS
    RFC 5321 (reply codes), RFC 3463 (enhanced status codes).

SECURITY
    Binds to localhost by default; in Kubernetes only the ingress pods reach it
    (NetworkPolicy). Message bodies are held in memory only for one call.

DIAGNOSTICS
    Structured logs on stderr; ``/healthz``, ``/readyz`` (gRPC server up and NATS
    connected) and ``/metrics`` on ``policy.http_listen``.

CONFIGURATION PARAMETERS
    policy.listen (127.0.0.1:7071): the gRPC address to bind.
    policy.http_listen (127.0.0.1:9102): health and metrics.
    nats.url (nats://127.0.0.1:4222): shared state (greylisting, rate limits).
"""
