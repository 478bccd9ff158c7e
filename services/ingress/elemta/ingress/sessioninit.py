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
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import aiosmtpd.smtp

__all__ = ["LAZY", "BoundCommands", "install"]

# The prefixes aiosmtpd looks for: AUTH mechanisms, commands, handler hooks.
_PREFIXES = ("auth_", "smtp_", "handle_")
_names: dict[type, list[str]] = {}
_auth_names: dict[type, list[str]] = {}
# A class whose sessions bind their commands when used (:class:`BoundCommands`)
# says so with this attribute; aiosmtpd then finds no smtp_ names to bind.
LAZY = "_commands_bound_when_used"


def _method_names(obj: object) -> list[str]:
    names = _names.get(type(obj))
    if names is None:
        lazy = getattr(type(obj), LAZY, False)
        names = _names[type(obj)] = [
            n for n in dir(obj) if n.startswith(_PREFIXES) and not (lazy and n.startswith("smtp_"))
        ]
        _auth_names[type(obj)] = [n for n in names if n.startswith("auth_")]
    return names


def _dir(obj: object = None) -> list[str]:
    return _method_names(obj)


class BoundCommands(Mapping[str, Any]):
    """A session's commands as aiosmtpd keeps them (``_smtp_methods``: ``"MAIL"``
    to the bound ``smtp_MAIL``), each bound when it is looked up rather than all
    twenty when the session starts."""

    __slots__ = ("_names", "_session")

    _commands: dict[type, dict[str, str]] = {}

    def __init__(self, session: object) -> None:
        kind = type(session)
        names = self._commands.get(kind)
        if names is None:
            found = (n for n in dir(kind) if n.startswith("smtp_"))
            names = self._commands[kind] = {n.replace("smtp_", ""): n for n in found}
        self._session = session
        self._names = names

    def __getitem__(self, command: str) -> Any:
        return getattr(self._session, self._names[command])

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


class _Inspect(types.ModuleType):
    """``inspect``, with ``getmembers`` limited to the names aiosmtpd filters for."""

    def __getattr__(self, name: str) -> Any:
        return getattr(inspect, name)

    @staticmethod
    def getmembers(obj: object, predicate: Callable[[Any], bool] | None = None) -> list[Any]:
        # aiosmtpd asks getmembers for its AUTH mechanisms only (it keeps the
        # auth_ names): the other methods need not be bound here.
        _method_names(obj)
        members = [(n, getattr(obj, n)) for n in _auth_names[type(obj)]]
        return [m for m in members if predicate is None or predicate(m[1])]


_sanitized_log = aiosmtpd.smtp.sanitized_log


def _log_if_enabled(func: Callable[..., None], msg: Any, *args: Any, **kwargs: Any) -> None:
    """aiosmtpd's ``sanitized_log``, skipped when the level is not logged.

    Its command loop hides AUTH secrets in every command line (a regular
    expression and a list per call) before a ``debug`` and an ``info`` call on
    ``mail.log``, which Elemta logs at WARNING and up only.
    """
    level = _LEVELS.get(getattr(func, "__func__", None))
    if level is not None and not func.__self__.isEnabledFor(level):  # type: ignore[attr-defined]
        return
    _sanitized_log(func, msg, *args, **kwargs)


_LEVELS: dict[object, int] = {
    logging.Logger.debug: logging.DEBUG,
    logging.Logger.info: logging.INFO,
    logging.Logger.warning: logging.WARNING,
    logging.Logger.error: logging.ERROR,
}


def install() -> None:
    """Make aiosmtpd's session set-up use the per-class names, and its command
    loop log only what is logged (idempotent)."""
    module: Any = aiosmtpd.smtp
    if not isinstance(module.__dict__.get("inspect"), _Inspect):
        module.inspect = _Inspect("inspect")
        module.dir = _dir
        module.sanitized_log = _log_if_enabled
