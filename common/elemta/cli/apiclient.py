"""The ``elemta`` commands' HTTP client for the API (``elemta queue``, ``key``, ``audit``,
``suspend``).

Where the API is and which key to send, first found wins: the ``--api-url`` and
``--api-key`` options, ``ELEMTA_API_URL`` and ``ELEMTA_API_KEY`` (or
``ELEMTA_API_KEY_FILE``, a file holding the key), then the file
``$ELEMTA_CLI_CONFIG`` or ``~/.config/elemta/cli.toml`` (``url = "..."``,
``key = "..."``); the URL defaults to ``http://127.0.0.1:8025``, the address
``make run`` gives the API. The key is never printed.

Every failure is one line on stderr and a non-zero exit status: 1 for an answer
of the API (the problem's detail), 2 for a usage error (click's), 69
(EX_UNAVAILABLE) when the API cannot be reached.
"""

from __future__ import annotations

import functools
import os
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
import httpx

__all__ = ["ApiClient", "ApiError", "api_options"]

DEFAULT_URL = "http://127.0.0.1:8025"
EX_UNAVAILABLE = 69

F = TypeVar("F", bound=Callable[..., Any])


class ApiError(click.ClickException):
    """An answer of the API that is an error: its problem detail, one line."""

    exit_code = 1

    def show(self, file: Any = None) -> None:
        click.echo(f"elemta: {self.message}", err=True)


class Unreachable(ApiError):
    exit_code = EX_UNAVAILABLE


def _file_settings() -> dict[str, str]:
    path = Path(os.environ.get("ELEMTA_CLI_CONFIG") or Path.home() / ".config/elemta/cli.toml")
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ApiError(f"{path}: {exc}") from None
    return {k: str(v) for k, v in data.items() if k in ("url", "key")}


def _env_key() -> str:
    if os.environ.get("ELEMTA_API_KEY"):
        return os.environ["ELEMTA_API_KEY"]
    path = os.environ.get("ELEMTA_API_KEY_FILE")
    if path:
        try:
            return Path(path).read_text().strip()
        except OSError as exc:
            raise ApiError(f"ELEMTA_API_KEY_FILE: {exc}") from None
    return ""


class ApiClient:
    def __init__(self, url: str, key: str, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.key = key
        self.timeout = timeout

    @classmethod
    def resolve(cls, url: str | None, key: str | None) -> ApiClient:
        settings: dict[str, str] | None = None

        def from_file(name: str) -> str:
            nonlocal settings
            if settings is None:
                settings = _file_settings()
            return settings.get(name, "")

        url = url or os.environ.get("ELEMTA_API_URL") or from_file("url") or DEFAULT_URL
        key = key or _env_key() or from_file("key")
        if not key:
            raise ApiError(
                'no API key: pass --api-key, set ELEMTA_API_KEY, or put key = "..." in '
                "~/.config/elemta/cli.toml (the first: elemta key create --bootstrap)"
            )
        return cls(url, key)

    def request(
        self, method: str, path: str, params: dict[str, Any] | None = None, json: Any = None
    ) -> Any:
        """The decoded JSON answer (None for 204); ApiError for any error."""
        clean = {k: v for k, v in (params or {}).items() if v not in (None, "", ())}
        try:
            resp = httpx.request(
                method,
                self.url + path,
                params=clean,
                json=json,
                headers={"Authorization": f"Bearer {self.key}"},
                timeout=self.timeout,
            )
        except httpx.HTTPError as exc:
            raise Unreachable(f"cannot reach the API at {self.url}: {exc}") from None
        if resp.status_code >= 400:
            raise ApiError(_problem_line(resp))
        if resp.status_code == 204 or not resp.content:
            return None
        try:
            return resp.json()
        except ValueError:
            return resp.text

    def raw(self, path: str) -> bytes:
        try:
            resp = httpx.get(
                self.url + path,
                headers={"Authorization": f"Bearer {self.key}"},
                timeout=self.timeout,
            )
        except httpx.HTTPError as exc:
            raise Unreachable(f"cannot reach the API at {self.url}: {exc}") from None
        if resp.status_code >= 400:
            raise ApiError(_problem_line(resp))
        return resp.content

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params)

    def post(self, path: str, json: Any = None, **params: Any) -> Any:
        return self.request("POST", path, params=params, json=json)

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)


def _problem_line(resp: httpx.Response) -> str:
    try:
        body = resp.json()
        detail = body.get("detail") or body.get("title") or ""
    except (ValueError, AttributeError):
        detail = resp.text.strip().splitlines()[0] if resp.text.strip() else ""
    return f"{resp.status_code} {resp.reason_phrase}: {detail}".rstrip(": ")


def api_options(f: F) -> F:
    """``--api-url`` and ``--api-key``; the command receives ``client: ApiClient``."""

    @click.option(
        "--api-url",
        metavar="URL",
        help="The API (default $ELEMTA_API_URL, then cli.toml, then http://127.0.0.1:8025).",
    )
    @click.option("--api-key", metavar="KEY", help="API key (default $ELEMTA_API_KEY or cli.toml).")
    @functools.wraps(f)
    def wrapper(*args: Any, api_url: str | None, api_key: str | None, **kwargs: Any) -> Any:
        return f(*args, client=ApiClient.resolve(api_url, api_key), **kwargs)

    return wrapper  # type: ignore[return-value]
