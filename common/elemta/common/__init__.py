"""Code shared by every Elemta service: configuration, the envelope model,
JetStream names and connection, telemetry, logs, health and the service runner.

Services import from here and from the generated ``elemta.rpc`` package, never
from one another.
"""
