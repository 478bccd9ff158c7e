"""DMARC building blocks: policy records, organisational domains, alignment, From.

Records follow RFC 7489 section 6.3 (``v=DMARC1`` first, ``p`` required, ``sp``,
``adkim``/``aspf``, ``pct``, ``rua``/``ruf``, ``fo``, ``rf``, ``ri``), RFC 9091
(``np``, ``psd``) and DMARCbis (``t``). Unknown tags are ignored; a known tag
with a bad value, a duplicate tag or a tag without ``=`` makes the record invalid.
As RFC 7489 6.6.3 says, a record whose ``p`` is missing or invalid (or whose
``sp`` is invalid) is read as ``p=none`` when it names at least one valid
reporting URI in ``rua``. Policy keywords may be abbreviated to an unambiguous
prefix (``p=n``), as OpenDMARC accepts.

Organisational domains come from the Public Suffix List bundled with the
``publicsuffixlist`` package (RFC 7489 3.2).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from publicsuffixlist import PublicSuffixList

__all__ = [
    "AuthorDomains",
    "DmarcRecord",
    "DmarcRecordError",
    "aligned",
    "from_domains",
    "is_dmarc_record",
    "org_domain",
    "parse_record",
    "public_suffix",
]

POLICIES = ("none", "quarantine", "reject")
_VERSION = re.compile(r"^\s*[vV]\s*=\s*DMARC1\s*(?:;|$)")
_TAG = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:[^\s,!]+(?:![0-9]+[kmgtKMGT]?)?$")


class DmarcRecordError(ValueError):
    """The record is not valid; ``kind`` says why.

    ``empty``, ``bad_version``, ``bad_syntax``, ``bad_value``, ``no_required_p``.
    ``policy_problem`` is true for RFC 7489 6.6.3's case (missing or invalid
    ``p``, invalid ``sp``, no valid ``rua``): the receiver applies no DMARC.
    """

    def __init__(self, kind: str, message: str, *, policy_problem: bool = False) -> None:
        super().__init__(message)
        self.kind = kind
        self.policy_problem = policy_problem


@dataclass(frozen=True)
class DmarcRecord:
    p: str
    sp: str | None = None
    np: str | None = None
    adkim: str = "r"
    aspf: str = "r"
    pct: int = 100
    rua: tuple[str, ...] = ()
    ruf: tuple[str, ...] = ()
    fo: tuple[str, ...] = ("0",)
    rf: tuple[str, ...] = ("afrf",)
    ri: int = 86400
    psd: str = "u"
    t: str = "n"
    text: str = ""
    p_defaulted: bool = False  # RFC 7489 6.6.3: no valid p, read as p=none

    @property
    def subdomain_policy(self) -> str:
        return self.sp or self.p

    @property
    def nonexistent_policy(self) -> str:
        """RFC 9091: ``np``, else ``sp``, else ``p``."""
        return self.np or self.subdomain_policy


def is_dmarc_record(text: str) -> bool:
    """Whether a TXT record starts with ``v=DMARC1`` (RFC 7489 6.6.3 step 3)."""
    return bool(_VERSION.match(text))


def _keyword(value: str, choices: tuple[str, ...], tag: str) -> str:
    low = value.strip().lower()
    hits = [c for c in choices if low and c.startswith(low)]
    if len(hits) != 1:
        raise DmarcRecordError("bad_value", f"{tag}={value!r}: expected one of {choices}")
    return hits[0]


def _uris(value: str, tag: str) -> tuple[str, ...]:
    parts = [p.strip() for p in value.split(",")]
    bad = [p for p in parts if not _URI.match(p)]
    if bad:
        raise DmarcRecordError("bad_value", f"{tag}: not a reporting URI: {bad[0]!r}")
    return tuple(parts)


def _number(value: str, tag: str, high: int) -> int:
    v = value.strip()
    if not v.isascii() or not v.isdigit() or int(v) > high:
        raise DmarcRecordError("bad_value", f"{tag}={value!r}: expected 0..{high}")
    return int(v)


def _colon_list(value: str, tag: str, allowed: tuple[str, ...]) -> tuple[str, ...]:
    items = tuple(p.strip().lower() for p in value.split(":"))
    if not items or any(i not in allowed for i in items):
        raise DmarcRecordError("bad_value", f"{tag}={value!r}: expected {':'.join(allowed)}")
    return items


def _tags(text: str) -> dict[str, str]:
    if not text.strip():
        raise DmarcRecordError("empty", "empty record")
    tags: dict[str, str] = {}
    for part in text.split(";"):
        if not part.strip():
            continue
        name, sep, value = part.partition("=")
        name = name.strip()
        if not tags and (not sep or name.lower() != "v" or value.strip() != "DMARC1"):
            raise DmarcRecordError("bad_version", f"record does not start with v=DMARC1: {text!r}")
        if not sep or not _TAG.match(name):
            raise DmarcRecordError("bad_syntax", f"missing tag or value: {text!r}")
        if name.lower() in tags:
            raise DmarcRecordError("bad_syntax", f"duplicate tag {name!r}")
        tags[name.lower()] = value.strip()
    return tags


_CHECKS: dict[str, Callable[[str, str], object]] = {
    "np": lambda v, tag: _keyword(v, POLICIES, tag),
    "adkim": lambda v, tag: _keyword(v, ("r", "s"), tag),
    "aspf": lambda v, tag: _keyword(v, ("r", "s"), tag),
    "pct": lambda v, tag: _number(v, tag, 100),
    "ri": lambda v, tag: _number(v, tag, 2**32 - 1),
    "rua": _uris,
    "ruf": _uris,
    "fo": lambda v, tag: _colon_list(v, tag, ("0", "1", "d", "s")),
    "rf": lambda v, tag: _colon_list(v, tag, ("afrf",)),
    "psd": lambda v, tag: _keyword(v, ("y", "n", "u"), tag),
    "t": lambda v, tag: _keyword(v, ("y", "n"), tag),
}


def parse_record(text: str) -> DmarcRecord:
    """Parse a DMARC TXT record; raise :class:`DmarcRecordError` when it is invalid."""
    tags = _tags(text)
    kw: dict[str, Any] = {"text": text}
    kw.update((tag, check(tags[tag], tag)) for tag, check in _CHECKS.items() if tag in tags)
    try:
        if "p" not in tags:
            raise DmarcRecordError("no_required_p", f"no p= tag: {text!r}")
        kw["p"] = _keyword(tags["p"], POLICIES, "p")
        if "sp" in tags:
            kw["sp"] = _keyword(tags["sp"], POLICIES, "sp")
    except DmarcRecordError as exc:
        if not kw.get("rua"):  # RFC 7489 6.6.3: without rua, no DMARC processing
            raise DmarcRecordError(exc.kind, str(exc), policy_problem=True) from None
        return DmarcRecord(p="none", rua=kw["rua"], text=text, p_defaulted=True)
    return DmarcRecord(**kw)


# -- domains ------------------------------------------------------------------


@functools.cache
def _psl() -> PublicSuffixList:
    return PublicSuffixList()


def normalize(domain: str) -> str:
    return domain.strip().strip(".").lower()


def org_domain(domain: str) -> str:
    """The organisational domain (RFC 7489 3.2): one label below the public suffix;
    a public suffix or a malformed name is its own."""
    domain = normalize(domain)
    return str(_psl().privatesuffix(domain) or domain)


def public_suffix(domain: str) -> str:
    return str(_psl().publicsuffix(normalize(domain)) or "")


def aligned(from_domain: str, auth_domain: str, mode: str) -> bool:
    """Identifier alignment (RFC 7489 3.1): strict ``s`` is equality, relaxed ``r``
    is the same organisational domain."""
    a, b = normalize(from_domain), normalize(auth_domain)
    if not a or not b:
        return False
    if a == b:
        return True
    return mode == "r" and org_domain(a) == org_domain(b)


# -- RFC5322.From ----------------------------------------------------------------


@dataclass(frozen=True)
class AuthorDomains:
    """The domains of the From header field(s), in order.

    ``problem`` is ``""`` for one From with one address, else ``missing`` (no
    From), ``multiple-fields``, ``multiple-addresses`` or ``unparseable``.
    """

    domains: tuple[str, ...]
    problem: str = ""
    raw: str = ""

    @property
    def domain(self) -> str | None:
        return self.domains[0] if self.domains else None


def _strip_quotes_and_comments(value: str) -> str:
    out: list[str] = []
    depth, quoted, escaped = 0, False, False
    for ch in value:
        if escaped:
            escaped = False
            continue
        if ch == "\\" and (quoted or depth):
            escaped = True
        elif quoted:
            quoted = ch != '"'
            if not quoted:
                out.append(" ")
        elif ch == "(":
            depth += 1
        elif ch == ")" and depth:
            depth -= 1
            if not depth:
                out.append(" ")
        elif depth:
            continue
        elif ch == '"':
            quoted = True
        else:
            out.append(ch)
    return "".join(out)


_ANGLE = re.compile(r"<([^<>]*@[^<>]*)>")
_BARE = re.compile(r"[^\s<>:,;]*@([^\s<>,;]+)")


def _domain_of(part: str) -> str | None:
    m = _ANGLE.search(part)
    addr = m.group(1).strip() if m else None
    if addr is None:
        bare = _BARE.search(part)
        if bare is None:
            return None
        addr = bare.group(0)
    domain = normalize(addr.rpartition("@")[2])
    if not domain or domain.startswith("[") or any(c.isspace() for c in domain):
        return None
    return domain


def from_domains(headers: list[tuple[str, str]] | list[str]) -> AuthorDomains:
    """RFC5322.From domains of a message's header fields: ``(name, value)`` pairs,
    or raw values of From fields (a leading ``From:`` is tolerated)."""
    values: list[str] = []
    for h in headers:
        if isinstance(h, tuple):
            if h[0].strip().lower() == "from":
                values.append(h[1])
        else:
            values.append(h)
    if not values:
        return AuthorDomains((), "missing")
    raw = values[0].strip()
    if raw[:5].lower() == "from:":
        raw = raw[5:]
    clean = _strip_quotes_and_comments(raw.replace("\r", " ").replace("\n", " "))
    parts = [p for p in clean.split(",") if p.strip()]
    domains = [d for d in (_domain_of(p) for p in parts) if d]
    if not domains:
        return AuthorDomains((), "unparseable", raw.strip())
    problem = ""
    if len(values) > 1:
        problem = "multiple-fields"
    elif len(domains) > 1:
        problem = "multiple-addresses"
    return AuthorDomains(tuple(domains), problem, raw.strip())
