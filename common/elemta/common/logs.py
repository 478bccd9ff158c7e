"""Structured logs: one JSON object a line, carrying the queue id and trace id.

The queue id lives in a context variable (:data:`queue_id`) so that every log line
written while a message is handled names it, without passing it around.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time

from opentelemetry import trace

__all__ = ["queue_id", "setup_logging"]

queue_id: contextvars.ContextVar[str] = contextvars.ContextVar("queue_id", default="")

_RESERVED = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    _second = -1
    _second_text = ""

    def _stamp(self, record: logging.LogRecord) -> str:
        second = int(record.created)
        if second != self._second:  # formatted once per second
            self._second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        return f"{self._second_text}.{int(record.msecs):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "ts": self._stamp(record),
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        qid = queue_id.get()
        if qid:
            out["queue_id"] = qid
        span = trace.get_current_span().get_span_context()
        if span.is_valid:
            out["trace_id"] = format(span.trace_id, "032x")
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__(f"%(asctime)s {service} %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        qid = queue_id.get()
        return f"{text} [{qid}]" if qid else text


def setup_logging(service: str, level: str = "INFO", fmt: str = "json") -> None:
    # No formatter here shows the caller's file and line, the thread or the process
    # (Python's logging HOWTO, "Optimization"): a record does not look them up.
    logging._srcfile = None  # type: ignore[attr-defined]
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service) if fmt == "json" else TextFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("nats", "aiosmtpd", "mail.log", "grpc"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
