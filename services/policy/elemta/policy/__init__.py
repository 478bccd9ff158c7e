"""elemta-policy: the verdicts on connections, envelopes and messages.

DESCRIPTION
    The policy service answers the ingress service over gRPC
    (``elemta.policy.v1.PolicyService``), once per SMTP stage at most: at connect,
    MAIL FROM, RCPT TO and end of DATA. Each answer is a verdict (accept, reject,
    temporary failure, hold, discard) with the SMTP reply text and the headers to
    add. It keeps no mail; it only judges.

    The checks plug into :class:`elemta.policy.checks.Pipeline`. At end of DATA,
    :mod:`elemta.policy.authcheck` checks inbound mail (SPF, every DKIM signature,
    the ARC chain, DMARC over the aligned results), writes one
    ``Authentication-Results`` and a ``Received-SPF`` field, drops forged results
    that claim our authserv-id, and rejects or holds on DMARC policy; mail from
    trusted networks is DKIM-signed instead (and ARC-sealed when forwarded for a
    relay domain). For clients outside the trusted networks, DNSBL (client at the
    first MAIL FROM, sender domain at MAIL FROM), rate limits (MAIL FROM) and
    greylisting (RCPT TO) keep shared state in JetStream KV. Content scanners
    (:mod:`elemta.policy.plugins`: ClamAV, SpamAssassin, rspamd, entry-point plugins) run
    last at end of DATA, each with a timeout and a fail-open/closed setting, and
    then the milters (:mod:`elemta.policy.milter`: OpenDKIM, clamav-milter, any
    Sendmail/Postfix milter), whose edits of the envelope and message go back
    to ingress with the verdict.

    SIGHUP, or a change of the configuration file, reloads the plugins and
    milters between calls (:mod:`elemta.policy.reload`); plugins may run in
    worker processes with CPU and memory limits
    (:mod:`elemta.policy.plugins.isolation`). The plugin guide is
    ``docs/plugins.md``.

STANDARDS
    RFC 5321 (reply codes), RFC 3463 (enhanced status codes), RFC 7208 (SPF),
    RFC 6376, 8301, 8463 (DKIM), RFC 7489, 9091 (DMARC), RFC 8617 (ARC),
    RFC 8601 (Authentication-Results); the Sendmail milter protocol version 6
    (libmilter's mfdef.h, as Postfix's milter8.c speaks it).

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
    policy.authserv_id (server.hostname): the name in Authentication-Results.
    policy.spf, policy.dkim_verify, policy.arc_verify (true): inbound checks.
    policy.dmarc (enforce): enforce, monitor or off.
    policy.dkim_keys ([]): signing keys (domain, selector, algorithm, key_file).
    policy.arc_seal_domain, arc_seal_selector, arc_seal_key_file (""): ARC sealing.
    policy.dnsbl_ip_zones, dnsbl_domain_zones ([]): DNS blocklists.
    policy.greylist (false), greylist_delay (300): greylisting.
    policy.rate_limit_per_ip, rate_limit_per_sender (0 = off): rate limits.
    policy.plugins ([]): content scanners (name, order, timeout, fail, options,
        concurrency, isolation, workers, cpu_seconds, memory_mb).
    policy.reload_check_interval (5): seconds between looks at the config file.
    policy.milters ([]): milters, inet:host:port or unix:/path, in order.
    policy.milter_default_action (tempfail): when a milter fails.
    policy.milter_protocol (6); milter_connect/command/content_timeout (5, 5, 8).
    dns.* : the resolver every check uses.
"""
