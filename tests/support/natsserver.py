"""The tests' nats-server is Elemta's own (:mod:`elemta.launcher.natsserver`): JetStream
with ``sync_interval: always`` on a free port and a temporary store, restartable on
the same port and store (for outage tests)."""

from elemta.launcher.natsserver import NatsServer, nats_server_binary

__all__ = ["NatsServer", "nats_server_binary"]
