"""elemta-queue: the queue manager — intake, retries, bounces.

DESCRIPTION
    The queue service is Elemta's qmgr(8). It owns the JetStream streams
    (it creates ELEMTA_MESSAGES, ELEMTA_DELIVERY, ELEMTA_OUTCOMES,
    ELEMTA_DEFERRED, ELEMTA_EVENTS, KV ELEMTA_STATE and Object Store ELEMTA_BODIES
    at start-up, and the durable consumers ``delivery``, ``delivery-first`` and
    ``queue-outcomes``), and decides what happens to every message ingress stored:

    Intake: delivery makes each stored message's first attempt itself and reports
    it on ``elemta.outcome.<id>`` (a FirstAttempt). A message delivered to every
    recipient is removed at once, with no state. Anything else gets its state in
    KV ELEMTA_STATE and is handled as an outcome below. A message the policy put
    on hold arrives untried: it gets state but no jobs until it is released
    (``elemta.queue.release``), when it is routed per recipient (local domains,
    then the transport table, then MX) and split into one delivery job per
    destination on ``elemta.delivery.<id>``.

    Outcomes: delivery workers report each attempt on ``elemta.outcome.<id>``.
    Delivered recipients are done; permanently failed ones are returned to the
    sender in a DSN; deferred ones are parked in ELEMTA_DEFERRED for the next
    retry, or expire once the message outlives its lifetime. When the last
    recipient is final the stored message, its body object and its state are
    removed.

    Scheduler: moves parked jobs back to delivery when due; rebuilt from the
    ELEMTA_DEFERRED stream at start-up.

    Every step is recorded as an event on ``elemta.events.<id>`` (accepted,
    hold, released, attempt, delivered, deferred, bounced, expired, failed,
    done, deleted, withdrawn); the events of one step go out as one record.

STANDARDS
    RFC 3464 (delivery status notifications), RFC 3463 (enhanced status codes),
    RFC 5321 4.5.4.1 (retry strategy: retry intervals, give up after a lifetime
    of at least 4-5 days), RFC 5321 6.1 and 4.5.5 (never bounce a bounce),
    RFC 3834 (Auto-Submitted).

SECURITY
    The queue talks to nothing but NATS. A DSN returns only the headers of the
    original message, never the body, so a forged sender cannot use bounces to
    reflect content. Bounces of bounces are dropped, so two misconfigured
    systems cannot loop.

DIAGNOSTICS
    Structured logs on stderr, each line naming the queue id; spans
    ``queue.intake``, ``queue.outcome``, ``queue.schedule``, ``queue.bounce``
    join the trace of the original message. ``/healthz``, ``/readyz`` (NATS
    connected, streams ensured) and ``/metrics`` on ``queue.http_listen``:
    elemta_queue_intake_total, elemta_queue_intake_seconds,
    elemta_queue_outcomes_total, elemta_queue_events_total{type},
    elemta_queue_deferred_messages, elemta_queue_bounces_total,
    elemta_queue_active.

HIGH AVAILABILITY
    Run two: the process holding the lease in KV ELEMTA_QUEUE_LEASE is active,
    the other stands by (ready, connected, idle) and takes over within
    queue.lease_time when the active one dies, rebuilding the retry schedule
    from ELEMTA_DEFERRED; elemta_queue_active is 1 in the active one. See
    :mod:`elemta.queue.lease`.

CONFIGURATION PARAMETERS
    queue.http_listen (127.0.0.1:9103): health and metrics address.
    queue.retry_schedule (60, 300, 900, 1800, 3600, 7200, 14400): seconds before
        each retry; the last entry repeats until the lifetime ends.
    queue.retry_jitter (0.1): random spread of each retry delay, as a fraction.
    queue.lifetime (432000): seconds before undeliverable mail is returned
        (status 4.4.7); Postfix's maximal_queue_lifetime.
    queue.bounce_lifetime (432000): the same for bounces; Postfix's
        bounce_queue_lifetime.
    queue.scheduler_interval (1.0): seconds between checks for due retries.
    queue.lease_time (10): seconds within which a standby takes over.
    server.hostname (localhost): Reporting-MTA and the MAILER-DAEMON address.
    server.local_domains (localhost): domains routed to local (Maildir) delivery.
    transport.routes ({}): domain -> route; see elemta.common.config.
    nats.url (nats://127.0.0.1:4222), nats.replicas (1), nats.publish_timeout (5).
"""
