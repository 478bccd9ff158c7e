"""The parts of ``tools/run.py`` (``make run``): addresses and ports, child processes,
the embedded nats-server and the supervisor that starts and stops them in order."""
