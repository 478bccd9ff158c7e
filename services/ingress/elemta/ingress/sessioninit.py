"""aiosmtpd's per-connection set-up, found once per class instead of per session;
its per-command logging skipped when the level is not logged.

For every connection, :class:`aiosmtpd.smtp.SMTP` finds its AUTH mechanisms with
``inspect.getmembers`` of the session and of the handler (which evaluates every
attribute of both) and its command and hook methods with ``dir()``: about 0.3 ms
of CPU per session, a tenth of what ingress spends on a message when each message
comes on a connection of its own (as ``smtp-source`` and many MTAs send). Which
names those are depends only on the classes, so here they are found once per class
and each new session still gets them bound to itself.

:func:`install` gives ``aiosmtpd.smtp`` (that module only) a ``dir`` and an
``inspect`` whose ``getmembers`` answer from that cache; everything else of
``inspect`` is the real module. ``tests/ingress/test_ingress_aiosmtpd.py`` checks
that a session finds exactly what aiosmtpd finds without it.
"""

from __future__ import annotations

import inspect
import logging
import types
from collections.abc import Callable
from typing import Any

import aiosmtpd.smtp

__all__ = ["install"]

# The prefixes aiosmtpd looks for: AUTH mechanisms, commands, handler hooks.
_PREFIXES = ("auth_", "smtp_", "handle_")
_names: dict[type, list[str]] = {}


def _method_names(obj: object) -> list[str]:
    names = _names.get(type(obj))
    if names is None:
        names = _names[type(obj)] = [n for n in dir(obj) if n.startswith(_PREFIXES)]
    return names


def _dir(obj: object = None) -> list[str]:
    return _method_names(obj)


class _Inspect(types.ModuleType):
    """``inspect``, with ``getmembers`` limited to the names aiosmtpd filters for."""

    def __getattr__(self, name: str) -> Any:
        return getattr(inspect, name)

    @staticmethod
    def getmembers(obj: object, predicate: Callable[[Any], bool] | None = None) -> list[Any]:
        # aiosmtpd asks getmembers for its AUTH mechanisms only (it keeps the
        # auth_ names): the other methods need not be bound here.
        members = [(n, getattr(obj, n)) for n in _method_names(obj) if n.startswith("auth_")]
        return [m for m in members if predicate is None or predicate(m[1])]


_sanitized_log = aiosmtpd.smtp.sanitized_log


def _log_if_enabled(func: Callable[..., None], msg: Any, *args: Any, **kwargs: Any) -> None:
    """aiosmtpd's ``sanitized_log``, skipped when the level is not logged.

    Its command loop hides AUTH secrets in every command line (a regular
    expression and a list per call) before a ``debug`` and an ``info`` call on
    ``mail.log``, which Elemta logs at WARNING and up only.
    """
    logger = getattr(func, "__self__", None)
    level = _LEVELS.get(getattr(func, "__name__", ""))
    if isinstance(logger, logging.Logger) and level is not None and not logger.isEnabledFor(level):
        return
    _sanitized_log(func, msg, *args, **kwargs)


_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def install() -> None:
    """Make aiosmtpd's session set-up use the per-class names, and its command
    loop log only what is logged (idempotent)."""
    module: Any = aiosmtpd.smtp
    if not isinstance(module.__dict__.get("inspect"), _Inspect):
        module.inspect = _Inspect("inspect")
        module.dir = _dir
        module.sanitized_log = _log_if_enabled
