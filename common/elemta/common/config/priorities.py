"""Message priorities (``[priorities]``, RFC 6710) and the delivery classes they fall in."""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from .base import _Section

PRIORITY_MIN, PRIORITY_MAX = -9, 9  # RFC 6710's range of MT-PRIORITY


class PrioritySettings(_Section):
    """Message priorities (RFC 6710's -9..9, 0 by default) and the delivery classes
    they fall in. Off, nothing of it runs: MT-PRIORITY is not offered (the
    parameter is refused as unknown) and every message is ``normal``. On, a
    message's priority is the MT-PRIORITY of an authenticated or trusted client,
    else the first rule that matches: ``users`` (SMTP AUTH login), ``senders``
    (address, then domain, then ``.parent`` domain), ``routes`` (recipient domain
    or ``.parent``, the highest among the recipients); else 0. Delivery takes
    ``high`` mail first, but keeps ``normal_share`` and ``low_share`` of its
    concurrency for those classes while they wait."""

    enabled: bool = Field(False, description="Order delivery by priority; offer MT-PRIORITY")
    senders: dict[str, int] = Field(
        default_factory=dict,
        description="Priority by sender address, domain or .parent domain",
    )
    users: dict[str, int] = Field(default_factory=dict, description="Priority by SMTP AUTH login")
    routes: dict[str, int] = Field(
        default_factory=dict,
        description="Priority by recipient domain or .parent domain (highest recipient wins)",
    )
    high: int = Field(
        1, ge=PRIORITY_MIN, le=PRIORITY_MAX, description="Lowest priority in the high class"
    )
    low: int = Field(
        -1, ge=PRIORITY_MIN, le=PRIORITY_MAX, description="Highest priority in the low class"
    )
    normal_share: float = Field(
        0.2, ge=0, le=0.5, description="Share of delivery.concurrency kept for waiting normal mail"
    )
    low_share: float = Field(
        0.1, ge=0, le=0.5, description="Share of delivery.concurrency kept for waiting low mail"
    )

    @field_validator("senders", "users", "routes")
    @classmethod
    def _priorities(cls, v: dict[str, int]) -> dict[str, int]:
        out = {}
        for key, priority in v.items():
            if not PRIORITY_MIN <= priority <= PRIORITY_MAX:
                raise ValueError(f"{key!r}: priority {priority} is not in -9..9")
            out[key.strip().lower()] = priority
        return out

    @model_validator(mode="after")
    def _classes(self) -> PrioritySettings:
        if self.low >= self.high:
            raise ValueError("low must be below high")
        return self

    def class_of(self, priority: int) -> str:
        """``high``, ``normal`` or ``low``."""
        if priority >= self.high:
            return "high"
        if priority <= self.low:
            return "low"
        return "normal"
