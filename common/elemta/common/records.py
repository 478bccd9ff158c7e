"""Records read from JSON that another process wrote: fields a newer version added
are left out, so that old and new processes can run side by side.

During a rolling upgrade the old delivery and queue pods read what the new ones
store (an envelope, a job, an outcome, the queue's state) and the other way
round. A record built with ``cls(**json)`` refuses a keyword it does not know,
and the process that reads it terms or naks it for ever. :func:`build` keeps the
fields the class knows, leaves out the rest (missing ones take their defaults, as
before), and says at debug level which fields it left out, once per class and
set of fields. The rule that makes this safe is in docs/decisions.md: fields are
only ever added, never renamed nor given a new meaning; a removed field keeps
being accepted.

Every message is decoded here, so the common case costs nothing more: the class
is called with the record as it is, and only when that fails with ``TypeError``
are the unknown fields looked for (against the field names, found once per
class).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, TypeVar

__all__ = ["build"]

log = logging.getLogger(__name__)

T = TypeVar("T")

_known: dict[type, frozenset[str]] = {}
# (class, unknown field names) already logged; bounded, for records that are not
# from a newer version but simply wrong would otherwise fill it.
_told: set[tuple[type, frozenset[str]]] = set()
_TOLD_MAX = 256


def known_fields(cls: type) -> frozenset[str]:
    """The names ``cls`` (a dataclass) takes as keywords, found once."""
    names = _known.get(cls)
    if names is None:
        names = _known[cls] = frozenset(f.name for f in dataclasses.fields(cls) if f.init)
    return names


def build(cls: type[T], raw: Any) -> T:
    """``cls(**raw)`` without the fields of ``raw`` that ``cls`` does not know.

    A record that is not a JSON object, or lacks a required field, still raises
    ``TypeError`` as ``cls(**raw)`` would: that is a broken record, not a newer one.
    """
    try:
        return cls(**raw)
    except TypeError:
        if not isinstance(raw, dict):
            raise
        names = known_fields(cls)
        unknown = raw.keys() - names
        if not unknown:
            raise
    _tell(cls, frozenset(unknown))
    return cls(**{k: v for k, v in raw.items() if k in names})


def _tell(cls: type, unknown: frozenset[str]) -> None:
    key = (cls, unknown)
    if key in _told or len(_told) >= _TOLD_MAX:
        return
    _told.add(key)
    log.debug(
        "%s record with fields this version does not know, ignored: %s",
        cls.__name__,
        ", ".join(sorted(unknown)),
    )
