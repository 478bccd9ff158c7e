"""What every section builds on: the frozen model that refuses unknown keys, the
type of secret keys, the error a bad configuration raises, the ``host:port``
check of listen addresses."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from .routes import split_hostport

Secret = SecretStr
"""The type of a key that holds a password or token: never logged, shown as ``***``."""


class ConfigError(Exception):
    """The configuration cannot be used; the message names the key and the reason."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _listen(value: str) -> str:
    split_hostport(value)
    return value


Listen = Annotated[str, Field(description="host:port; port 0 picks a free one")]
