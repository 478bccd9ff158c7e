"""rspamd through its HTTP protocol (``POST /checkv2``).

The message goes to rspamd's normal worker with the envelope in request headers
(``IP``, ``Helo``, ``Hostname``, ``From``, one ``Rcpt`` per recipient,
``Queue-Id``, ``User``); rspamd answers with JSON: the ``action``, the score,
the symbols, and a ``milter`` block of headers it wants added or removed.

Actions, as rspamd's own milter proxy applies them:

=================  ==========================================================
no action          accept
add header         accept, ``X-Spam: Yes``
rewrite subject    accept, ``X-Spam: Yes``, Subject replaced by rspamd's
greylist           ``451 4.7.1`` (unless ``greylist = false``)
soft reject        ``451 4.7.1`` with rspamd's message
reject             ``554 5.7.1`` with rspamd's message
=================  ==========================================================

Every scanned message gets the result header (``X-Rspamd-Result``: action,
score and symbols), the headers rspamd's ``milter_headers`` module asks for,
and a ``rspamd`` entry in its policy record. Failures raise
:class:`RspamdError`; the plugin host fails open or closed.
"""

from __future__ import annotations

import logging
from typing import Any

import aiohttp
from pydantic import BaseModel, ConfigDict, Field

from ..checks import ACCEPT, REJECT, TEMPFAIL, Verdict
from .host import hookimpl

__all__ = ["Options", "Rspamd", "RspamdError", "factory", "verdict_from_result"]

log = logging.getLogger(__name__)


class RspamdError(RuntimeError):
    """rspamd could not be reached or did not answer properly."""


class Options(BaseModel):
    """The ``rspamd`` plugin's options."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field("http://127.0.0.1:11333", description="rspamd's normal worker")
    timeout: float = Field(20.0, gt=0, description="Seconds for one scan")
    header: str = Field("X-Rspamd-Result", description="The result header")
    greylist: bool = Field(True, description="rspamd's greylist action answers 451")
    max_size: int = Field(20 * 1024 * 1024, ge=1024, description="Larger is not scanned")
    password: str = Field("", description="rspamd's password, if its worker asks for one")


def _symbols(result: dict[str, Any]) -> dict[str, float]:
    symbols = result.get("symbols") or {}
    out = {}
    for name, info in symbols.items():
        score = info.get("score", 0.0) if isinstance(info, dict) else 0.0
        out[str(name)] = round(float(score or 0.0), 2)
    return out


def _result_header(action: str, score: float, required: float, symbols: dict[str, float]) -> str:
    """``action; score=s/r; SYM(score), ...`` folded a few symbols a line."""
    parts = [f"{name}({value:.2f})" for name, value in sorted(symbols.items())]
    lines = [f"{action}; score={score:.2f}/{required:.2f}"]
    for i in range(0, len(parts), 4):
        lines.append(", ".join(parts[i : i + 4]) + ("," if i + 4 < len(parts) else ""))
    return ";\n".join(lines[:2]) + ("\n" + "\n".join(lines[2:]) if len(lines) > 2 else "")


def _milter_headers(result: dict[str, Any]) -> tuple[list[tuple[str, str]], list[str]]:
    """The headers rspamd's ``milter`` block asks to add and remove."""
    milter = result.get("milter") or {}
    add: list[tuple[str, str]] = []
    for name, spec in (milter.get("add_headers") or {}).items():
        values = spec if isinstance(spec, list) else [spec]
        for value in values:
            text = value.get("value") if isinstance(value, dict) else value
            if text is not None:
                add.append((str(name), str(text)))
    remove = [str(name) for name in (milter.get("remove_headers") or {})]
    return add, remove


def verdict_from_result(
    result: dict[str, Any], header: str = "X-Rspamd-Result", greylist: bool = True
) -> Verdict:
    """rspamd's answer as a verdict (see the module's table)."""
    action = str(result.get("action") or "no action")
    score = float(result.get("score") or 0.0)
    required = float(result.get("required_score") or 0.0)
    symbols = _symbols(result)
    message = str((result.get("messages") or {}).get("smtp_message") or "")
    add, remove = _milter_headers(result)
    add.insert(0, (header, _result_header(action, score, required, symbols)))
    notes = {"rspamd": {"action": action, "score": score, "required": required, "symbols": symbols}}
    verdict = Verdict(action=ACCEPT, add_headers=add, remove_headers=remove, notes=notes)
    if action == "reject":
        verdict.action, verdict.code, verdict.enhanced = REJECT, 554, "5.7.1"
        verdict.reason = message or "Spam message rejected"
    elif action == "soft reject" or (action == "greylist" and greylist):
        verdict.action, verdict.code, verdict.enhanced = TEMPFAIL, 451, "4.7.1"
        verdict.reason = message or "Try again later"
    elif action in ("add header", "rewrite subject"):
        verdict.add_headers.append(("X-Spam", "Yes"))
        verdict.remove_headers.append("X-Spam")
        subject = result.get("subject")
        if action == "rewrite subject" and subject:
            verdict.remove_headers.append("Subject")
            verdict.add_headers.append(("Subject", str(subject)))
    return verdict


class Rspamd:
    """The ``data`` stage check backed by rspamd at ``options.url``."""

    def __init__(self, options: Options) -> None:
        self.options = options
        self.url = options.url.rstrip("/") + "/checkv2"
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.options.timeout)
            )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _headers(
        self, session: dict[str, Any], sender: str, recipients: list[str]
    ) -> list[tuple[str, str]]:
        headers = [("From", sender)]
        headers += [("Rcpt", r) for r in recipients]
        for key, field in (
            ("IP", "client_ip"),
            ("Helo", "helo"),
            ("Hostname", "client_hostname"),
            ("Queue-Id", "queue_id"),
            ("User", "user"),
        ):
            value = str(session.get(field) or "")
            if value:
                headers.append((key, value))
        if self.options.password:
            headers.append(("Password", self.options.password))
        return headers

    async def scan(
        self, session: dict[str, Any], sender: str, recipients: list[str], message: bytes
    ) -> dict[str, Any]:
        await self.start()
        assert self._session is not None
        try:
            async with self._session.post(
                self.url, data=message, headers=self._headers(session, sender, recipients)
            ) as response:
                if response.status != 200:
                    text = (await response.text())[:200]
                    raise RspamdError(f"rspamd answered HTTP {response.status}: {text}")
                result = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise RspamdError(f"rspamd at {self.options.url}: {exc!r}") from exc
        if not isinstance(result, dict) or "action" not in result:
            raise RspamdError(f"rspamd sent no action: {str(result)[:200]}")
        return result

    @hookimpl
    async def check_data(
        self, session: dict[str, Any], sender: str, recipients: list[str], message: bytes
    ) -> Verdict | None:
        if len(message) > self.options.max_size:
            log.info("message of %d bytes not scanned by rspamd", len(message))
            return None
        result = await self.scan(session, sender, recipients, message)
        return verdict_from_result(result, self.options.header, self.options.greylist)


def factory(options: Options) -> Rspamd:
    """The built-in ``rspamd`` plugin (the host checks its options against :class:`Options`)."""
    return Rspamd(options)
