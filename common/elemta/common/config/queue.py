"""The queue's schedule (``[queue]``): retries, lifetimes, bounces, take-over."""

from __future__ import annotations

from pydantic import Field, field_validator

from .base import _Section


class QueueSettings(_Section):
    """Scheduling: retries, lifetime, bounces."""

    http_listen: str = Field("127.0.0.1:9103", description="health and metrics address")
    retry_schedule: list[float] = Field(
        default_factory=lambda: [60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0],
        description="Seconds before each retry; the last repeats until the lifetime ends",
    )
    retry_jitter: float = Field(0.1, ge=0, le=1, description="Fraction of random spread")
    lifetime: float = Field(5 * 86400.0, gt=0, description="Seconds before a message bounces")
    bounce_lifetime: float = Field(5 * 86400.0, gt=0, description="Lifetime of a bounce")
    failed_retention: float = Field(
        5 * 86400.0,
        gt=0,
        description="Seconds a message that failed (bounced, expired) stays visible as failed",
    )
    scheduler_interval: float = Field(1.0, gt=0, description="Seconds between due checks")
    delay_warning_time: float = Field(
        4 * 3600.0,
        ge=0,
        description="Seconds a message waits before its sender is warned of the delay; 0: never",
    )
    drain_timeout: float = Field(
        10.0, gt=0, description="Seconds to finish what is in hand on SIGTERM, then exit"
    )
    lease_time: float = Field(
        10.0,
        ge=1.0,
        description="Seconds within which a standby queue process takes over from a dead active one",
    )

    @field_validator("retry_schedule")
    @classmethod
    def _schedule(cls, v: list[float]) -> list[float]:
        if not v or any(s <= 0 for s in v):
            raise ValueError("must be a non-empty list of positive seconds")
        return v
