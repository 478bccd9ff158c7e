"""aiosmtpd's per-connection set-up, found once per class instead of per session.

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
        members = [(n, getattr(obj, n)) for n in _method_names(obj)]
        return [m for m in members if predicate is None or predicate(m[1])]


def install() -> None:
    """Make aiosmtpd's session set-up use the per-class names (idempotent)."""
    module: Any = aiosmtpd.smtp
    if not isinstance(module.__dict__.get("inspect"), _Inspect):
        module.inspect = _Inspect("inspect")
        module.dir = _dir
