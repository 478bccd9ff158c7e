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
from typing import TextIO

from opentelemetry import trace

__all__ = ["info", "queue_id", "setup_logging"]

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

    def line(self, ts: str, level: str, logger: str, msg: str, fields: dict[str, object]) -> str:
        """The JSON line of one event: the fields every line has, then ``fields``."""
        out: dict[str, object] = {
            "ts": ts,
            "level": level,
            "service": self.service,
            "logger": logger,
            "msg": msg,
        }
        qid = queue_id.get()
        if qid:
            out["queue_id"] = qid
        span = trace.get_current_span().get_span_context()
        if span.is_valid:
            out["trace_id"] = format(span.trace_id, "032x")
        out.update(fields)
        return json.dumps(out, default=str)

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


# The handler setup_logging installed, while it is the only one: info() writes
# to it directly.
_direct: logging.StreamHandler[TextIO] | None = None


def info(logger: logging.Logger, msg: str, **fields: object) -> None:
    """Log ``msg`` at INFO with ``fields`` as the JSON line's extra keys.

    The same line as ``logger.info(msg, extra=fields)`` with the JSON format, for
    the lines written for every message: while the JSON handler of
    :func:`setup_logging` is the only one (no test capture, no other handler), the
    line is built and written in one go, without a ``LogRecord``, the handler
    chain or a second pass over the record's attributes.
    """
    if not logger.isEnabledFor(logging.INFO):
        return
    handler = _direct
    if (
        handler is None
        or logger.handlers
        or logger.filters
        or logging.root.handlers != [handler]
        or handler.filters
    ):
        logger.info(msg, extra=fields)
        return
    formatter = handler.formatter
    assert isinstance(formatter, JsonFormatter)
    now = time.time()
    second = int(now)
    if second != formatter._second:
        formatter._second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        formatter._second = second
    ts = f"{formatter._second_text}.{int((now - second) * 1000):03d}Z"
    line = formatter.line(ts, "info", logger.name, msg, fields)
    with handler.lock:  # type: ignore[union-attr]
        handler.stream.write(line + "\n")
        handler.stream.flush()


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
    global _direct
    _direct = handler if fmt == "json" else None
    root.setLevel(level.upper())
    for noisy in ("nats", "aiosmtpd", "mail.log", "grpc"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
