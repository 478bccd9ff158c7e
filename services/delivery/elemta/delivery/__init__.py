"""elemta-delivery - Elemta mail delivery agent (SMTP, LMTP, Maildir)

SYNOPSIS
    elemta serve delivery [--config FILE]

DESCRIPTION
    The delivery service makes every message's first attempt straight from
    ELEMTA_MESSAGES (shared durable pull consumer "delivery-first"): it routes the
    recipients (local domains, the transport table, else MX), attempts every
    destination at once and reports them together as one FirstAttempt on
    elemta.outcome.<queue id>, acking the message only after that report is
    stored; a held message is reported untried, and a copy stored after the
    envelope's deadline (the client was told 451) is reported dropped, never
    delivered. Later attempts come as delivery jobs from the JetStream work queue
    ELEMTA_DELIVERY through the shared durable pull consumer "delivery", one job
    per message and destination, and it attempts each one: it fetches the stored
    message from ELEMTA_MESSAGES by stream sequence (or from the Object Store
    ELEMTA_BODIES for large bodies), delivers it by the job's route, and
    reports the result of every recipient as an Outcome on
    elemta.outcome.<queue id>. The queue service decides what happens next
    (done, retry, bounce); this service never retries on its own.

    The end of every attempt that delivered something is first written to a
    file of the process under <server.state_dir>/journal, then stored; a
    process that starts stores the ends a killed one left there before it
    pulls anything, so that a message is not delivered again because its
    delivery process died between the destination's 250 and the stored end
    (elemta.delivery.journal).

    Routes (see the transport table, TransportSettings):

    mx            MX lookup of the recipient domain, SMTP to delivery.smtp_port;
                  without MX records the domain's own address (RFC 5321 5.1).
    smtp:host     MX lookup of host, SMTP to the route's port.
    smtp:[host]   SMTP relay to host itself, no MX lookup.
    lmtp:host:port
                  LMTP to a mail store (Dovecot, Cyrus).
    local         Maildir under maildir_root/<domain>/<user>/.

    MX hosts are tried best preference first, each host's addresses IPv4 then
    IPv6, until one answers; an unreachable host, a 421 greeting or a session
    dropped before MAIL FROM moves on to the next one. SMTP and LMTP sessions
    stay open after a message for the next one to the same peer (RSET, then
    the next transaction). Each process keeps up to delivery.concurrency jobs
    in flight; more capacity is more processes, all pulling from the same
    consumer. Every attempt is logged on one line, Postfix style:

        0Q1VJ8...: to=<bob@example.org>, relay=mx.example.org[192.0.2.1]:25,
        delay=0.21, dsn=2.0.0, status=sent (250 2.0.0 OK)

STANDARDS
    RFC 5321 (SMTP), RFC 3207 (STARTTLS), RFC 7435 (opportunistic security),
    RFC 8461 (MTA-STS), RFC 7672 and RFC 6698 (DANE for SMTP, TLSA),
    RFC 8460 (TLS reporting), RFC 4954 (SMTP AUTH to relays),
    RFC 2033 (LMTP), RFC 2920 (pipelining), RFC 3030 (CHUNKING, BDAT), RFC 6152 (8BITMIME),
    RFC 6531 (SMTPUTF8), RFC 1870 (SIZE), RFC 3463 (enhanced status codes),
    RFC 7505 (null MX), RFC 2308 (negative caching).

SECURITY
    The service needs no privileges: it opens outbound connections and writes
    Maildir files as its own user (files 0600, directories 0700). Mailbox
    names are checked so that no recipient can write outside maildir_root.
    At the default level (may) STARTTLS is opportunistic: used whenever
    offered, without certificate checks, because an encrypted session with an
    unauthenticated peer beats a plain one; when the TLS handshake fails the
    message goes in plain text on a new connection. Where a level, an
    MTA-STS policy in enforce mode or DNSSEC-validated TLSA records demand
    more, a session that does not meet it is closed before MAIL FROM and the
    mail deferred (4.7.4 TLS not offered, 4.7.5 handshake or certificate
    failure): never sent in clear instead. Relay credentials are read from
    files and only sent over TLS. Nothing from the message or the envelope is ever used
    as a file name except the checked mailbox name.

DIAGNOSTICS
    Logs are JSON lines on stderr with queue_id and trace_id. Every reply is
    classified per recipient: 2xx delivered, 4xx deferred, 5xx failed; replies
    Elemta makes up when no server answered use 4.4.1 (no answer from host,
    connection refused), 4.4.2 (connection dropped, timeout), 4.4.3 (DNS
    temporary failure), 5.1.2 / 5.1.10 / 5.4.4 (domain does not exist, null
    MX, MX host without address) and 5.6.7 (SMTPUTF8 needed but not offered).
    /readyz fails with "nats" while the NATS connection is down and with
    "consumer" until the consumer exists (the queue service creates it).
    /metrics: elemta_delivery_attempts_total{result},
    elemta_delivery_recipients_total{status}, elemta_delivery_attempt_seconds,
    elemta_delivery_inflight, elemta_delivery_connections_opened_total,
    elemta_delivery_connections_reused_total,
    elemta_delivery_held_total, elemta_delivery_ends_taken_over_total,
    elemta_delivery_tls_sessions_total{policy,outcome} (policy: none, may,
    encrypt, verify, dane, sts; outcome: verified, encrypted, plain, failed).
    Every TLS session is logged, Postfix style: "Verified TLS connection
    established to mx.example.org[192.0.2.1]:25: TLSv1.3 with cipher ..."
    ("Untrusted" when the certificate was not checked or did not hold).
    TLS failures defer with 4.7.4 (STARTTLS required, not offered) or 4.7.5
    (handshake, certificate, DANE or MTA-STS failure), SMTP AUTH refusals with
    454 4.7.0. Each attempt is a
    "delivery.attempt" span in the message's trace.

CONFIGURATION PARAMETERS
    Section [delivery] unless noted; environment ELEMTA_DELIVERY_<NAME>.

    concurrency (64)
        Jobs in flight per process.
    connect_timeout (30)
        Seconds to connect to a peer and read its greeting.
    command_timeout (300)
        Seconds to wait for each reply, including the one after the message.
    ack_wait (60)
        Seconds JetStream waits before it gives an unacknowledged job to
        another worker; running jobs report progress every ack_wait/3.
    idle_connection_timeout (10)
        Seconds an SMTP/LMTP session may stay open, idle, for the next
        message to the same peer; 0 closes every session after its message.
    max_connections_per_destination (8)
        Sessions (busy or idle) open to one peer address and port.
    maildir_root ("")
        Maildir base; empty means <server.state_dir>/mail.
    tls_security_level ("may")
        none, may, encrypt, verify or dane (see elemta.delivery.tlspolicy).
    tls_policy ({})
        Levels per recipient domain, .subdomain or [host]:port next hop.
    tls_ca_file ("")
        CA bundle for verify, MTA-STS and policy fetches; empty: the system's.
    mta_sts (true), mta_sts_fetch_timeout (20), mta_sts_port (443)
        Honour recipient domains' MTA-STS policies (elemta.delivery.mtasts).
    relays ({})
        Smarthosts by next hop: security_level, implicit_tls, ca_file,
        username_file, password_file (elemta.delivery.relayauth).
    smtp_port (25)
        Port for MX delivery.
    helo_name ("")
        EHLO/LHLO name; empty means server.hostname.
    http_listen (127.0.0.1:9104)
        Address of /healthz, /readyz and /metrics.
    [dns] nameservers, port, timeout, cache_size
        The resolver (see elemta.common.resolver).
    [nats] url, publish_timeout
        The JetStream connection; publish_timeout bounds the wait for the
        outcome's acknowledgement.

SEE ALSO
    elemta.queue (schedules jobs, retries, bounces), elemta.common.resolver.
"""
