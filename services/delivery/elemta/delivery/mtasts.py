"""MTA-STS (RFC 8461): a recipient domain's published demand for authenticated TLS.

Discovery for a policy domain (RFC 8461 sections 3 and 5.1):

1. The TXT record ``_mta-sts.<domain>``: of the records that begin with
   ``v=STSv1;`` exactly one must remain and be well formed, else the domain
   has no policy. Its ``id`` names the current policy.
2. If a cached policy has that id and has not outlived its ``max_age``, it
   applies. Otherwise the policy is fetched from
   ``https://mta-sts.<domain>/.well-known/mta-sts.txt``: the server's
   certificate must be valid for that name and chain to a trusted root; only a
   ``200`` answer of type ``text/plain`` counts; redirects are not followed;
   at most 64 KiB within ``mta_sts_fetch_timeout`` seconds.
3. A fetch that fails leaves the cached policy in force until it expires, and
   so does a TXT record that disappears: an attacker who strips the record
   does not switch the policy off (trust on first use).

Policies are cached for ``max_age`` in JetStream KV ``ELEMTA_MTA_STS`` (key:
the domain), shared by every delivery process and pod, with a copy in memory
in front of it. A ``none`` policy is cached like the others: it is how a
domain retires its policy.

Failures carry the TLS-RPT result type (RFC 8460 4.3.2.2) that reports them:
``sts-policy-fetch-error``, ``sts-policy-invalid`` or ``sts-webpki-invalid``.
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
import re
import ssl
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import aiohttp
from nats.js.kv import KeyValue

from elemta.common.names import STS_BUCKET
from elemta.common.resolver import DnsError, Resolver, TemporaryDnsError

from .webclient import https_session

__all__ = [
    "Discovery",
    "MtaSts",
    "PolicyCache",
    "PolicyFetcher",
    "StsError",
    "StsLookup",
    "StsPolicy",
    "STS_BUCKET",
    "mx_pattern_matches",
    "parse_record",
]

log = logging.getLogger(__name__)

MAX_POLICY_BYTES = 64 * 1024
MAX_AGE_LIMIT = 31557600  # one year, RFC 8461 3.2
FAILURE_BACKOFF = 300.0  # seconds before a failed fetch is tried again

_ID = re.compile(r"^[A-Za-z0-9]{1,32}$")
_EXT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$")
_EXT_VALUE = re.compile(r"^[\x21-\x3a\x3c\x3e-\x7e]+$")
_MAX_AGE = re.compile(r"^[0-9]{1,10}$")


class StsError(Exception):
    """Discovery failed; ``result_type`` is the TLS-RPT name of the failure."""

    def __init__(self, result_type: str, text: str) -> None:
        super().__init__(text)
        self.result_type = result_type
        self.text = text


def parse_record(text: str) -> str:
    """The ``id`` of an ``_mta-sts`` TXT record; ValueError when it is not one (RFC 8461 3.1)."""
    if not text.startswith("v=STSv1"):
        raise ValueError("does not begin with v=STSv1")
    fields = [f.strip(" \t") for f in text.split(";")]
    if fields and fields[-1] == "":
        fields.pop()  # one trailing ";" is allowed
    if fields[0] != "v=STSv1" or len(fields) < 2:
        raise ValueError("version must be v=STSv1, followed by fields")
    seen: dict[str, str] = {}
    for f in fields[1:]:
        name, sep, value = f.partition("=")
        if not sep or not _EXT_NAME.match(name) or not _EXT_VALUE.match(value):
            raise ValueError(f"malformed field {f!r}")
        if name in seen:
            raise ValueError(f"field {name!r} given twice")
        seen[name] = value
    if "id" not in seen or not _ID.match(seen["id"]):
        raise ValueError("missing or malformed id (1 to 32 letters and digits)")
    return seen["id"]


def select_record(texts: list[str]) -> str:
    """The policy id from a domain's ``_mta-sts`` TXT records; ValueError when none applies."""
    candidates = [t for t in texts if t.startswith("v=STSv1;") or t == "v=STSv1"]
    if len(candidates) != 1:
        raise ValueError(f"{len(candidates)} records begin with v=STSv1; exactly one must")
    return parse_record(candidates[0])


def mx_pattern_matches(pattern: str, host: str) -> bool:
    """RFC 8461 4.1: an exact name, or ``*.`` standing for exactly one leftmost label."""
    pattern, host = pattern.lower().rstrip("."), host.lower().rstrip(".")
    if pattern.startswith("*."):
        head, _, tail = host.partition(".")
        return bool(head) and tail == pattern[2:]
    return pattern == host


@dataclass(frozen=True)
class StsPolicy:
    id: str
    mode: str  # enforce | testing | none
    max_age: int
    mx: tuple[str, ...]
    text: str
    fetched_at: float

    @classmethod
    def parse(cls, text: str, policy_id: str, fetched_at: float) -> StsPolicy:
        """RFC 8461 3.2; unknown keys are ignored, a repeated key other than mx is an error."""
        values: dict[str, str] = {}
        mx: list[str] = []
        for raw in re.split(r"\r?\n", text):
            line = raw.rstrip(" \t")
            if not line:
                continue
            key, sep, value = line.partition(":")
            key, value = key.strip(), value.strip(" \t")
            if not sep or not key or not value:
                raise StsError("sts-policy-invalid", f"not a key: value line: {line[:60]!r}")
            if key == "mx":
                mx.append(value.lower())
            elif key in values:
                raise StsError("sts-policy-invalid", f"{key} given twice")
            else:
                values[key] = value
        if values.get("version") != "STSv1":
            raise StsError("sts-policy-invalid", "version must be STSv1")
        mode = values.get("mode", "")
        if mode not in ("enforce", "testing", "none"):
            raise StsError("sts-policy-invalid", f"mode must be enforce, testing or none: {mode!r}")
        age = values.get("max_age", "")
        if not _MAX_AGE.match(age) or int(age) > MAX_AGE_LIMIT:
            raise StsError("sts-policy-invalid", f"max_age must be 0 to {MAX_AGE_LIMIT}: {age!r}")
        if mode != "none" and not mx:
            raise StsError("sts-policy-invalid", f"mode {mode} needs at least one mx")
        return cls(policy_id, mode, int(age), tuple(mx), text, fetched_at)

    @property
    def expires_at(self) -> float:
        return self.fetched_at + self.max_age

    @property
    def lines(self) -> list[str]:
        """The policy as TLS-RPT's ``policy-string``: one entry per line."""
        return [line.strip() for line in re.split(r"\r?\n", self.text) if line.strip()]

    def allows(self, host: str) -> bool:
        return any(mx_pattern_matches(p, host) for p in self.mx)

    def to_json(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def from_json(cls, data: bytes) -> StsPolicy:
        d = json.loads(data)
        return cls(d["id"], d["mode"], d["max_age"], tuple(d["mx"]), d["text"], d["fetched_at"])


class Discovery(enum.Enum):
    VALID = "valid"  # a policy (any mode) was fetched
    NONE = "none"  # the domain publishes no (usable) record
    FETCH_ERROR = "fetch-error"  # a record, but no policy could be had
    NOT_CHANGED = "not-changed"  # the record's id is the one we know


@dataclass(frozen=True)
class StsLookup:
    """What applies to a delivery: a policy (enforce or testing) or none; and why."""

    policy: StsPolicy | None
    error: StsError | None = None


class PolicyFetcher:
    """HTTPS GET of ``/.well-known/mta-sts.txt`` with the limits of RFC 8461 3.3."""

    def __init__(
        self, resolver: Resolver, ca_file: str = "", timeout: float = 20.0, port: int = 443
    ) -> None:
        self.resolver = resolver
        self.timeout = timeout
        self.port = port
        self.ssl = ssl.create_default_context(cafile=ca_file or None)
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = https_session(self.resolver, self.ssl, "Elemta MTA-STS")
        return self._session

    async def fetch(self, domain: str) -> str:
        """The policy text; :class:`StsError` when it cannot be had."""
        port = "" if self.port == 443 else f":{self.port}"
        url = f"https://mta-sts.{domain}{port}/.well-known/mta-sts.txt"
        try:
            async with asyncio.timeout(self.timeout):
                async with self._client().get(url, allow_redirects=False) as resp:
                    if resp.status != 200:
                        raise StsError("sts-policy-fetch-error", f"{url}: HTTP {resp.status}")
                    if resp.content_type != "text/plain":
                        raise StsError(
                            "sts-policy-invalid", f"{url}: media type {resp.content_type}"
                        )
                    if (resp.content_length or 0) > MAX_POLICY_BYTES:
                        raise StsError("sts-policy-invalid", f"{url}: larger than 64 KiB")
                    body = await resp.content.read(MAX_POLICY_BYTES + 1)
                    while len(body) <= MAX_POLICY_BYTES:
                        more = await resp.content.read(MAX_POLICY_BYTES + 1 - len(body))
                        if not more:
                            break
                        body += more
                    if len(body) > MAX_POLICY_BYTES:
                        raise StsError("sts-policy-invalid", f"{url}: larger than 64 KiB")
        except StsError:
            raise
        except aiohttp.ClientConnectorCertificateError as exc:
            raise StsError("sts-webpki-invalid", f"{url}: {exc.certificate_error}") from None
        except aiohttp.ClientSSLError as exc:
            raise StsError("sts-webpki-invalid", f"{url}: {exc}") from None
        except TimeoutError:
            raise StsError("sts-policy-fetch-error", f"{url}: timed out") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise StsError("sts-policy-fetch-error", f"{url}: {exc}") from None
        try:
            return body.decode("utf-8")
        except UnicodeDecodeError:
            raise StsError("sts-policy-invalid", f"{url}: not UTF-8 text") from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


class PolicyCache:
    """Policies by domain: memory in front of the shared KV bucket (optional).

    A domain the bucket had nothing for is not asked about again for
    ``miss_ttl`` seconds unless the caller insists (``fresh``): most domains
    publish no policy, and a KV round trip per message to them would be waste.
    """

    def __init__(
        self,
        kv: KeyValue | None = None,
        timeout: float = 2.0,
        miss_ttl: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.kv = kv
        self.timeout = timeout
        self.miss_ttl = miss_ttl
        self.clock = clock
        self._memory: dict[str, StsPolicy] = {}
        self._missed: dict[str, float] = {}

    async def get(self, domain: str, fresh: bool = False) -> StsPolicy | None:
        policy = self._memory.get(domain)
        if self.kv is None or (policy is not None and not fresh):
            return policy
        if not fresh and self._missed.get(domain, 0.0) > self.clock():
            return None
        try:
            entry = await asyncio.wait_for(self.kv.get(domain), self.timeout)
        except Exception as exc:  # not found, or NATS not answering: nothing shared
            log.debug("MTA-STS cache %s: %r", domain, exc)
            self._missed[domain] = self.clock() + self.miss_ttl
            return policy
        if entry.value:
            try:
                policy = StsPolicy.from_json(entry.value)
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("unreadable cached MTA-STS policy of %s: %r", domain, exc)
                return policy
            self._memory[domain] = policy
            self._missed.pop(domain, None)
        return policy

    async def put(self, domain: str, policy: StsPolicy) -> None:
        self._memory[domain] = policy
        self._missed.pop(domain, None)
        if self.kv is not None:
            try:
                await asyncio.wait_for(self.kv.put(domain, policy.to_json()), self.timeout)
            except Exception as exc:
                log.warning("MTA-STS policy of %s not shared (%r)", domain, exc)


class MtaSts:
    """Which MTA-STS policy applies to mail for a domain, now."""

    def __init__(
        self,
        resolver: Resolver,
        fetcher: PolicyFetcher,
        cache: PolicyCache | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.resolver = resolver
        self.fetcher = fetcher
        self.cache = cache or PolicyCache()
        self.clock = clock
        self._failed: dict[str, tuple[float, StsError]] = {}
        self._pending: dict[str, asyncio.Future[StsLookup]] = {}

    async def discover(
        self, domain: str, known_id: str | None = None
    ) -> tuple[Discovery, StsPolicy | None]:
        """Record, then policy, without any cache: postfix-mta-sts-resolver's view."""
        domain = _ascii_domain(domain)
        if not domain:
            return Discovery.NONE, None
        try:
            policy_id = await self._record(domain)
        except StsError:
            return Discovery.FETCH_ERROR, None
        if policy_id is None:
            return Discovery.NONE, None
        if policy_id == known_id:
            return Discovery.NOT_CHANGED, None
        try:
            return Discovery.VALID, await self._fetch(domain, policy_id)
        except StsError:
            return Discovery.FETCH_ERROR, None

    async def lookup(self, domain: str) -> StsLookup:
        """The policy in force for ``domain`` (RFC 8461 5.1), from the cache when it can."""
        domain = _ascii_domain(domain)
        if not domain:
            return StsLookup(None)
        fut = self._pending.get(domain)
        if fut is None:
            fut = asyncio.ensure_future(self._lookup(domain))
            self._pending[domain] = fut
            fut.add_done_callback(lambda _f: self._pending.pop(domain, None))
        return await asyncio.shield(fut)

    async def _lookup(self, domain: str) -> StsLookup:
        now = self.clock()
        cached = await self.cache.get(domain)
        if cached is not None and cached.expires_at <= now:
            cached = None
        try:
            policy_id = await self._record(domain)
        except StsError as exc:  # DNS did not answer: keep what we have
            return self._applies(cached, None if cached else exc)
        if policy_id is None:
            return self._applies(cached)
        if cached is None or cached.id != policy_id:
            shared = await self.cache.get(domain, fresh=True)  # another process may have it
            if shared is not None and shared.expires_at > now:
                cached = shared
        if cached is not None and cached.id == policy_id:
            return self._applies(cached)
        failed = self._failed.get(domain)
        if failed is not None and failed[0] > now:
            return self._applies(cached, failed[1])
        try:
            policy = await self._fetch(domain, policy_id)
        except StsError as exc:
            log.warning("MTA-STS policy of %s: %s", domain, exc.text)
            self._failed[domain] = (now + FAILURE_BACKOFF, exc)
            return self._applies(cached, exc)
        self._failed.pop(domain, None)
        await self.cache.put(domain, policy)
        return self._applies(policy)

    @staticmethod
    def _applies(policy: StsPolicy | None, error: StsError | None = None) -> StsLookup:
        if policy is None or policy.mode == "none":
            return StsLookup(None, error)
        return StsLookup(policy, error)

    async def _record(self, domain: str) -> str | None:
        try:
            texts = await self.resolver.txt(f"_mta-sts.{domain}")
        except TemporaryDnsError as exc:
            raise StsError("sts-policy-fetch-error", exc.text) from None
        except DnsError:
            return None
        try:
            return select_record(texts)
        except ValueError:
            return None

    async def _fetch(self, domain: str, policy_id: str) -> StsPolicy:
        text = await self.fetcher.fetch(domain)
        return StsPolicy.parse(text, policy_id, self.clock())

    async def close(self) -> None:
        await self.fetcher.close()


_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


def _ascii_domain(name: str) -> str:
    """The domain in lower-case A-labels; "" for what cannot have a policy (an
    address literal, ``.example``, a single label)."""
    try:
        name = name.lower().rstrip(".").encode("idna").decode("ascii")
    except UnicodeError:
        return ""
    labels = name.split(".")
    if len(labels) < 2 or labels[-1].isdigit() or not all(_LABEL.match(x) for x in labels):
        return ""
    return name
