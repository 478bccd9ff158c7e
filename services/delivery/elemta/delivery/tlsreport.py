"""TLS-RPT (RFC 8460), the reporting half: one aggregate report per domain and UTC day.

Once a UTC day has ended and ``tlsrpt.send_delay`` has passed, each policy
domain with counts for that day (see :mod:`.tlsrpt`) gets one report: the
counts of every delivery process merged, as the JSON of RFC 8460 4.4,
gzip-compressed, sent to every ``rua`` of the domain's ``_smtp._tls`` TXT
record:

* ``mailto:`` — a ``multipart/report; report-type="tlsrpt"`` message (RFC 8460
  5.3) queued through Elemta itself, published to ``ELEMTA_MESSAGES`` as
  ingress stores mail, so it is retried and bounced like any other;
* ``https:`` — POSTed as ``application/tlsrpt+gzip``; the certificate must
  verify; a failure is logged, not retried.

Every delivery process runs the check; the first to create the key
``sent.<YYYYMMDD>.<domain>`` in ``ELEMTA_TLSRPT`` sends that report, the others
skip it. Which day it is comes from an injected clock.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import gzip
import json
import logging
import re
import ssl
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from email.mime.application import MIMEApplication
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.policy import SMTP
from email.utils import format_datetime, make_msgid
from typing import Any
from urllib.parse import unquote, urlsplit

from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from elemta.common.config import Config
from elemta.common.envelope import Envelope, new_queue_id
from elemta.common.jetstream import store_message
from elemta.common.resolver import DnsError, Resolver
from elemta.common.tasks import cancel_and_wait

from .tlsrpt import KEEP_DAYS, DayCounts, day_of, merge
from .webclient import https_session

__all__ = ["ReportSender", "build_report", "parse_rua", "report_message"]

log = logging.getLogger(__name__)

CONTENT_TYPE = "application/tlsrpt+gzip"


def parse_rua(texts: list[str]) -> list[str]:
    """The ``rua`` URIs of a domain's ``_smtp._tls`` TXT records (RFC 8460 3)."""
    records = [t for t in texts if re.match(r"v=TLSRPTv1\s*(;|$)", t)]
    if len(records) != 1:
        raise ValueError(f"{len(records)} records begin with v=TLSRPTv1; exactly one must")
    fields = dict(
        (k.strip(), v.strip())
        for k, _, v in (f.partition("=") for f in records[0].split(";")[1:] if f.strip())
    )
    uris = [u.strip() for u in fields.get("rua", "").split(",") if u.strip()]
    uris = [u for u in uris if u.lower().startswith(("mailto:", "https:"))]
    if not uris:
        raise ValueError("no mailto: or https: rua")
    return uris


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def _day_start(day: str) -> float:
    """The first second of a ``YYYYMMDD`` UTC day."""
    return dt.datetime.strptime(day, "%Y%m%d").replace(tzinfo=dt.UTC).timestamp()


def build_report(
    counts: DayCounts, day: str, organization: str, contact: str, report_id: str
) -> dict[str, Any]:
    start = _day_start(day)
    return {
        "organization-name": organization,
        "date-range": {"start-datetime": _iso(start), "end-datetime": _iso(start + 86399)},
        "contact-info": contact,
        "report-id": report_id,
        "policies": counts.policy_entries(),
    }


def report_message(
    report: dict[str, Any], domain: str, submitter: str, sender: str, to: list[str]
) -> bytes:
    """The report as mail (RFC 8460 5.3): human-readable part and gzip attachment."""
    start = report["date-range"]["start-datetime"]
    begin = int(_day_start(start[:10].replace("-", "")))
    name = f"{submitter}!{domain}!{begin}!{begin + 86399}!{report['report-id'][:8]}.json.gz"
    msg = MIMEMultipart("report", report_type="tlsrpt")
    msg["From"] = sender
    msg["To"] = ", ".join(to)
    msg["Date"] = format_datetime(dt.datetime.now(dt.UTC))
    msg["Subject"] = (
        f"Report Domain: {domain} Submitter: {submitter} Report-ID: <{report['report-id']}>"
    )
    msg["Message-ID"] = make_msgid(domain=submitter)
    msg["TLS-Report-Domain"] = domain
    msg["TLS-Report-Submitter"] = submitter
    msg.attach(
        MIMEText(
            f"This is an aggregate TLS report (RFC 8460) from {submitter} for {domain},"
            f" {start[:10]}.\n",
            "plain",
            "utf-8",
        )
    )
    part = MIMEApplication(gzip.compress(json.dumps(report).encode()), "tlsrpt+gzip")
    part.add_header("Content-Disposition", "attachment", filename=name)
    msg.attach(part)
    return msg.as_bytes(policy=SMTP)


@dataclass
class _Due:
    day: str
    domain: str
    keys: list[str]


class ReportSender:
    """Sends the reports of finished days; :meth:`run_once` does what is due now."""

    def __init__(
        self,
        cfg: Config,
        js: JetStreamContext,
        kv: KeyValue,
        resolver: Resolver,
        clock: Callable[[], float] = time.time,
        interval: float = 60.0,
    ) -> None:
        host = cfg.server.hostname
        t = cfg.tlsrpt
        self.js = js
        self.kv = kv
        self.resolver = resolver
        self.clock = clock
        self.interval = interval
        self.delay = t.send_delay
        self.submitter = host
        self.organization = t.organization or host
        self.contact = t.contact or f"postmaster@{host}"
        self.sender = t.sender or f"noreply-smtp-tls-reporting@{host}"
        self.publish_timeout = cfg.nats.publish_timeout
        self.ssl = ssl.create_default_context(cafile=cfg.delivery.tls_ca_file or None)
        self._task: asyncio.Task[None] | None = None
        self._done: set[str] = set()

    def _finished_days(self) -> list[str]:
        """Days whose reports are due and that this process has not gone through."""
        now = self.clock()
        days = [day_of(now - n * 86400) for n in range(1, KEEP_DAYS)]
        return [
            d for d in days if d not in self._done and _day_start(d) + 86400 + self.delay <= now
        ]

    async def _due(self) -> list[_Due]:
        now = self.clock()
        try:
            keys = await self.kv.keys()
        except Exception as exc:  # no keys at all, or NATS away: nothing to do now
            log.debug("TLS-RPT keys: %r", exc)
            return []
        today = day_of(now)
        oldest = day_of(now - KEEP_DAYS * 86400)
        groups: dict[tuple[str, str], list[str]] = {}
        for key in keys:
            if not key.startswith("r."):
                continue
            _r, day, rest = key.split(".", 2)
            domain = rest.rpartition(".")[0]
            if oldest <= day < today and _day_start(day) + 86400 + self.delay <= now:
                groups.setdefault((day, domain), []).append(key)
        return [_Due(day, domain, sorted(k)) for (day, domain), k in sorted(groups.items())]

    async def run_once(self) -> list[str]:
        """Send every report that is due and not yet claimed; the domains reported."""
        finished = self._finished_days()
        if not finished:
            return []  # nothing new since the last look: no need to list the bucket
        sent = []
        for due in await self._due():
            try:
                await self.kv.create(f"sent.{due.day}.{due.domain}", str(self.clock()).encode())
            except Exception:
                continue  # another process took it (or took it earlier)
            try:
                await self._send(due)
            except Exception:
                log.exception("TLS-RPT report for %s of %s failed", due.domain, due.day)
                continue
            sent.append(due.domain)
        self._done.update(finished)
        return sent

    async def _send(self, due: _Due) -> None:
        parts = []
        for key in due.keys:
            entry = await self.kv.get(key)
            if entry.value:
                parts.append(DayCounts.from_json(entry.value))
        try:
            rua = parse_rua(await self.resolver.txt(f"_smtp._tls.{due.domain}"))
        except (DnsError, ValueError) as exc:
            log.info("no TLS-RPT report for %s: %s", due.domain, exc)
            return
        report_id = f"{uuid.uuid4()}@{self.submitter}"
        report = build_report(merge(parts), due.day, self.organization, self.contact, report_id)
        mailto = [a for u in rua if u.lower().startswith("mailto:") for a in _addresses(u)]
        if mailto:
            await self._mail(report, due, mailto)
        for uri in rua:
            if uri.lower().startswith("https:"):
                await self._post(report, uri)

    async def _mail(self, report: dict[str, Any], due: _Due, to: list[str]) -> None:
        data = report_message(report, due.domain, self.submitter, self.sender, to)
        env = Envelope(new_queue_id(), self.sender, to, time.time(), size=len(data))
        msg_id = f"tlsrpt.{due.day}.{due.domain}"
        await store_message(self.js, env, data, msg_id, self.publish_timeout)
        log.info("TLS-RPT report %s for %s queued as %s", report["report-id"], due.domain, env.id)

    async def _post(self, report: dict[str, Any], uri: str) -> None:
        body = gzip.compress(json.dumps(report).encode())
        async with https_session(self.resolver, self.ssl, "Elemta TLS-RPT") as session:
            async with asyncio.timeout(60):
                async with session.post(
                    uri, data=body, headers={"Content-Type": CONTENT_TYPE}, allow_redirects=False
                ) as resp:
                    if resp.status // 100 != 2:
                        raise RuntimeError(f"{uri} answered HTTP {resp.status}")
        log.info("TLS-RPT report %s posted to %s", report["report-id"], uri)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="tlsrpt-reports")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.run_once()
            except Exception:
                log.exception("TLS-RPT reporting failed")

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)


def _addresses(uri: str) -> list[str]:
    """The addresses of a ``mailto:`` URI (RFC 6068), without its query."""
    path = unquote(urlsplit(uri).path)
    return [a.strip() for a in path.split(",") if "@" in a]
