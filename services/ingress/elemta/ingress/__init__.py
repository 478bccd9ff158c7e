"""elemta-ingress: the SMTP server that takes mail in.

DESCRIPTION
    The ingress service speaks SMTP to the world (and to local clients), decides
    at RCPT TO who may relay, reads the message in bulk, asks the policy service
    for a verdict once per message (gRPC ``CheckData``), prepends its
    ``Received:`` header and stores the message in JetStream. The client reads
    ``250 2.0.0 Ok: queued as <id>`` only after JetStream acknowledged the store;
    from then on the message is the queue service's to deliver.

    Several ingress processes may share one SMTP port (``SO_REUSEPORT``). Each
    serves many sessions on one event loop; the limits below hold per session.

    Modules: ``server`` (listener, sessions, drain), ``protocol`` (the SMTP
    dialogue, an aiosmtpd subclass), ``address`` (the RFC 5321 path and ESMTP
    parameter grammar), ``arguments`` (MAIL FROM and RCPT TO read, or refused),
    ``data`` (bulk DATA reading and checks), ``replies`` (reply texts, enhanced
    codes), ``text`` (client text made safe for replies, logs and headers),
    ``relay`` (relay control),
    ``transaction`` (end of DATA), ``policy_client`` (gRPC client, verdict
    mapping), ``handoff`` (JetStream store), ``received`` (the trace header),
    ``tls`` (STARTTLS certificate), ``metrics``, ``service`` (wiring).

STANDARDS
    RFC 5321 (SMTP), RFC 1870 (SIZE), RFC 6152 (8BITMIME), RFC 6531 (SMTPUTF8),
    RFC 2920 (PIPELINING), RFC 2034 and RFC 3463 (enhanced status codes),
    RFC 3207 (STARTTLS), RFC 3848 (ESMTPS in Received:), RFC 5322 (dates).

SECURITY
    No open relay: mail for ``server.local_domains`` is taken from anyone, mail
    for other domains only from ``server.trusted_networks``; everyone else reads
    ``554 5.7.1 <rcpt>: Relay access denied``. Local parts that hide a route
    (``%``, ``!``, ``@``) count as relaying.

    SMTP smuggling: DATA ends only at ``<CR><LF>.<CR><LF>``. A bare CR or bare LF
    anywhere in the data refuses the whole message with ``550 5.6.11``, so a
    ``<LF>.<LF>`` or ``<CR>.<CR>`` inside cannot start a second message here or
    at any server the message is relayed to.

    STARTTLS command injection: plaintext pipelined after ``STARTTLS`` is
    discarded, never read as a command inside TLS; the first command sent inside
    TLS is answered even when it shares a TCP segment with the handshake's
    ``Finished``. No AUTH is offered.

    Client-supplied text (HELO name, addresses, unknown commands) is made
    printable before it goes into a header or a log line, and printable ASCII
    before it goes into a reply; policy headers are checked for name syntax and
    line breaks. Malformed addresses are a permanent ``501 5.1.7`` (sender) or
    ``501 5.1.3`` (recipient); 20 error replies end a session with ``421 4.7.0``.

DIAGNOSTICS
    Structured logs on stderr, carrying the queue id: one line per accepted
    message (``from=<...> size=... nrcpt=... queued as <id>``) and one per
    refusal with its reply (``reject: RCPT|DATA from ...: <reply>``).
    ``/healthz``, ``/readyz`` (checks ``nats``, ``stream``, ``listener``) and
    ``/metrics`` on ``ingress.http_listen``: ``elemta_ingress_connections_total``,
    ``elemta_ingress_sessions``, ``elemta_ingress_messages_total{result}``,
    ``elemta_ingress_replies_total{code_class}``, ``elemta_ingress_accept_seconds``,
    ``elemta_ingress_message_bytes``. Traces: ``ingress.message`` with children
    ``policy.check_data`` and ``ingress.store``; the context travels on in the
    NATS headers.

    Temporary failures answer ``451 4.3.0``: the policy service cannot be asked
    (``Temporary policy failure``) or JetStream is unavailable or slow (``Queue
    temporarily unavailable``); nothing is stored and the client retries.

CONFIGURATION PARAMETERS
    server.hostname (localhost): the name in the greeting, EHLO and Received:.
    server.local_domains (localhost): domains whose mail is always accepted.
    server.trusted_networks (127.0.0.0/8, ::1/128): clients that may relay.
    server.state_dir (var): where the self-signed certificate is written (tls/).
    ingress.listen (127.0.0.1:2525): the SMTP address.
    ingress.http_listen (127.0.0.1:9101): health and metrics.
    ingress.max_message_size (26214400): SIZE limit in bytes; 552 5.3.4 above it.
    ingress.max_recipients (100): RCPT TO per transaction; 452 4.5.3 above it.
    ingress.command_timeout (300): idle seconds before 421 4.4.2.
    ingress.data_timeout (600): seconds to receive the whole DATA before 421 4.4.2.
    ingress.max_line_length (998): text line limit without CRLF; 500 5.5.2 above it.
    ingress.tls_cert (empty): PEM certificate; empty: self-signed in state_dir/tls.
    ingress.tls_key (empty): PEM key of tls_cert (may be in the same file).
    ingress.policy_timeout (10): seconds to wait for the policy verdict.
    ingress.drain_timeout (30): seconds open transactions get on SIGTERM.
    ingress.reuse_port (true): SO_REUSEPORT, so several processes share the port.
    policy.address (127.0.0.1:7071): the policy service's gRPC address.
    nats.url (nats://127.0.0.1:4222): the JetStream server(s).
    nats.publish_timeout (5): seconds to wait for a PubAck before 451.
    nats.inline_body_limit (4194304): bodies above it go to the Object Store.
"""
