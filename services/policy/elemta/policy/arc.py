"""ARC (RFC 8617): validate the chain of a message, seal a message we forward.

:class:`ArcVerifier` runs dkimpy's chain validation in a worker thread with keys
from :class:`~elemta.policy.dnstxt.TxtLookup` and reduces it to ``cv``:
``none`` (no ARC sets), ``pass`` or ``fail``. A chain whose newest seal says
``cv=fail`` has ended and reads as ``fail``; so does any exception. When a key
could not be fetched for a temporary reason, ``temperror`` is set (``cv`` is then
``fail``, as RFC 8617 has no temporary result).

:class:`ArcSealer` adds the next ARC set with dkimpy's ``arc_sign`` (rsa-sha256,
relaxed/relaxed): ``seal(message, auth_results)`` returns the ``ARC-Seal``,
``ARC-Message-Signature`` and ``ARC-Authentication-Results`` header lines to put
on top of the message. ``auth_results`` is the ``Authentication-Results`` value
this ADMD computed (``authserv-id; spf=...; dkim=...; arc=<cv>``); its
``arc=`` result becomes the new seal's ``cv`` (no ``arc=`` means ``none``, which
only a message without ARC sets may have). Authentication-Results fields in the
message that claim our authserv-id are ignored (RFC 8601 section 5: they are
forged or stale). dkimpy copies the results without their comments.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import authres  # type: ignore[import-untyped]
import dkim

from elemta.common.config import DnsSettings
from elemta.common.resolver import Resolver

from .dkimcheck import SIGN_HEADERS, DnsFunc, load_private_key
from .dnstxt import TxtLookup

__all__ = ["ArcResult", "ArcSealError", "ArcSealer", "ArcVerifier"]

_CV = {dkim.CV_Pass: "pass", dkim.CV_Fail: "fail", dkim.CV_None: "none"}


@dataclass(frozen=True)
class ArcResult:
    cv: str  # pass | fail | none
    reason: str = ""
    instances: int = 0  # ARC sets evaluated
    domains: tuple[str, ...] = ()  # d= of each ARC-Seal, newest first
    temperror: bool = False  # a key lookup failed temporarily


class ArcVerifier:
    """Validate the ARC chain of a message; never raises."""

    def __init__(
        self, dns: DnsSettings | Resolver, *, minkey: int = 1024, dnsfunc: DnsFunc | None = None
    ) -> None:
        resolver = Resolver.of(dns)
        self.dns = resolver.settings
        self.minkey = minkey
        self._lookup: DnsFunc = dnsfunc or TxtLookup(resolver)

    async def verify(self, message: bytes) -> ArcResult:
        return await asyncio.to_thread(self.verify_sync, message)

    def verify_sync(self, message: bytes) -> ArcResult:
        temporary: list[str] = []

        def lookup(name: bytes, timeout: float = 5.0) -> bytes | None:
            try:
                return self._lookup(name, timeout=timeout)
            except dkim.DnsTimeoutError as exc:
                temporary.append(str(exc))
                raise

        try:
            cv, results, reason = dkim.arc_verify(message, dnsfunc=lookup, minkey=self.minkey)
        except Exception as exc:  # dkimpy raises outside its own handler on odd input
            return ArcResult("fail", f"{type(exc).__name__}: {exc}", temperror=bool(temporary))
        domains = tuple(
            r["as-domain"].decode("ascii", "replace").lower()
            for r in results
            if isinstance(r.get("as-domain"), bytes)
        )
        text = reason if isinstance(reason, str) else str(reason)
        if temporary:
            text = f"{text}; DNS: {temporary[0]}"
        return ArcResult(
            _CV.get(cv, "fail") if cv is not None else "fail",
            text,
            instances=len(results),
            domains=domains,
            temperror=bool(temporary) and cv != dkim.CV_Pass,
        )


class ArcSealError(Exception):
    """The message could not be sealed (bad Authentication-Results, cv, key)."""


_HEADER_END = re.compile(rb"\r?\n\r?\n")
_FIELD_START = re.compile(rb"^(?=[^ \t\r\n])", re.MULTILINE)


def _authserv_id(value: bytes | str) -> str:
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    text = re.sub(r"\([^)]*\)", " ", text.split(";", 1)[0])
    return (text.split() or [""])[0].lower()


def strip_auth_results(message: bytes, authserv_id: str) -> bytes:
    """``message`` without the Authentication-Results fields of ``authserv_id``."""
    end = _HEADER_END.search(message)
    head, rest = (message[: end.start()], message[end.start() :]) if end else (message, b"")
    fields = _FIELD_START.split(head)
    kept = []
    wanted = authserv_id.lower()
    for f in fields:
        name, sep, value = f.partition(b":")
        if sep and name.strip().lower() == b"authentication-results":
            if _authserv_id(value) == wanted:
                continue
        kept.append(f)
    return b"".join(kept) + rest


class ArcSealer:
    """Add the next ARC set (rsa-sha256) as ``authserv_id`` signing for ``domain``.

    The ARC-Message-Signature covers ``headers`` that are present, in that order,
    and ``From`` once more (``oversign``) so that no From can be added.
    """

    def __init__(
        self,
        authserv_id: str,
        domain: str,
        selector: str,
        key: bytes,
        headers: Sequence[str] = SIGN_HEADERS,
        *,
        oversign: bool = True,
    ) -> None:
        self.oversign = oversign
        self.authserv_id = authserv_id.strip()
        self.domain = domain.lower().rstrip(".")
        self.selector = selector
        self.headers = tuple(h.lower() for h in headers)
        if "from" not in self.headers:
            raise ValueError("the From header field must be signed")
        try:
            self._key = load_private_key("rsa-sha256", key)
        except ValueError as exc:
            raise ValueError(f"ARC key {selector}._domainkey.{domain}: {exc}") from None

    @classmethod
    def from_file(
        cls,
        authserv_id: str,
        domain: str,
        selector: str,
        path: str | Path,
        headers: Sequence[str] = SIGN_HEADERS,
        *,
        oversign: bool = True,
    ) -> ArcSealer:
        return cls(
            authserv_id, domain, selector, Path(path).read_bytes(), headers, oversign=oversign
        )

    def seal(
        self,
        message: bytes,
        auth_results: str,
        *,
        timestamp: int | None = None,
        standardize: bool = False,
    ) -> list[bytes]:
        """ARC-Seal, ARC-Message-Signature, ARC-Authentication-Results lines (CRLF).

        Returns ``[]`` when the chain must not be continued (an existing chain
        whose validation result is missing from ``auth_results``). Raises
        :class:`ArcSealError` for unusable input. ``standardize`` writes the tags
        sorted and unfolded, as the ARC test suite does.
        """
        value = auth_results.strip()
        if value.lower().startswith("authentication-results:"):
            value = value.split(":", 1)[1].strip()
        try:
            parsed = authres.AuthenticationResultsHeader.parse("Authentication-Results: " + value)
        except Exception as exc:
            raise ArcSealError(f"unparseable Authentication-Results: {exc}") from None
        if parsed.authserv_id.lower() != self.authserv_id.lower():
            raise ArcSealError(
                f"Authentication-Results of {parsed.authserv_id!r}, not {self.authserv_id!r}"
            )
        srv_id = parsed.authserv_id  # as written, which dkimpy matches exactly
        body = strip_auth_results(message, srv_id)
        full = b"Authentication-Results: " + value.encode("utf-8") + b"\r\n" + body
        try:
            a = dkim.ARC(full, signature_algorithm=b"rsa-sha256")
            present = {name.lower().decode("ascii", "replace") for name, _ in a.headers}
            include = [h for h in self.headers if h in present or h == "from"]
            if self.oversign:
                include.append("from")
            return list(
                a.sign(
                    self.selector.encode(),
                    self.domain.encode(),
                    self._key,
                    srv_id.encode(),
                    include_headers=[h.encode() for h in include],
                    timestamp=timestamp,
                    standardize=standardize,
                )
            )
        except dkim.DKIMException as exc:
            raise ArcSealError(str(exc)) from None
