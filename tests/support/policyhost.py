"""An HTTPS server on loopback playing ``mta-sts.<domain>`` for many domains at once.

Each domain gets its own certificate, chosen by SNI, issued by the test CA (a
``trustme.CA``) unless told otherwise: ``cert="untrusted"`` uses a CA nobody
trusts, ``cert="wrong-name"`` a trusted certificate for another name. Every
request is counted per domain, so a test can tell a cached policy from a
fetched one.
"""

from __future__ import annotations

import ssl
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trustme
from aiohttp import web

from .dnsserver import free_port

__all__ = ["PolicyHost"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
WELL_KNOWN = "/.well-known/mta-sts.txt"


@dataclass
class _Site:
    body: str
    status: int
    content_type: str
    handler: Handler | None


class PolicyHost:
    def __init__(self, ca: trustme.CA) -> None:
        self.ca = ca
        self.untrusted_ca = trustme.CA()
        self.port = 0
        self.requests: Counter[str] = Counter()
        self.posts: list[tuple[str, str, str, bytes]] = []  # host, path, content type, body
        self._sites: dict[str, _Site] = {}
        self._contexts: dict[str, ssl.SSLContext] = {}
        self._runner: web.AppRunner | None = None

    def _context(self, ca: trustme.CA, name: str) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert(name).configure_cert(ctx)
        return ctx

    def serve(
        self,
        domain: str,
        body: str = "",
        status: int = 200,
        content_type: str = "text/plain",
        cert: str = "good",
        handler: Handler | None = None,
    ) -> None:
        """Serve ``body`` as ``https://mta-sts.<domain>/.well-known/mta-sts.txt``."""
        host = f"mta-sts.{domain}"
        if cert == "untrusted":
            self._contexts[host] = self._context(self.untrusted_ca, host)
        elif cert == "wrong-name":
            self._contexts[host] = self._context(self.ca, f"mta-sts.not-{domain}")
        else:
            self._contexts[host] = self._context(self.ca, host)
        self._sites[host] = _Site(body, status, content_type, handler)

    def accept_posts(self, host: str) -> None:
        """Take POSTs for ``https://<host>/...`` (a TLS-RPT https: rua)."""
        self._contexts[host] = self._context(self.ca, host)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        host = request.host.partition(":")[0].lower()
        if request.method == "POST":
            body = await request.read()
            self.posts.append((host, request.path, request.content_type, body))
            return web.Response(status=201, text="thanks")
        self.requests[host.removeprefix("mta-sts.")] += 1
        site = self._sites.get(host)
        if site is None or request.path != WELL_KNOWN:
            return web.Response(status=404, text="not found")
        if site.handler is not None:
            return await site.handler(request)
        response = web.Response(status=site.status, body=site.body.encode())
        response.headers["Content-Type"] = site.content_type
        return response

    async def start(self) -> int:
        default = self._context(self.ca, "default.invalid")

        def pick(sslobj: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
            if name and name.lower() in self._contexts:
                sslobj.context = self._contexts[name.lower()]

        default.sni_callback = pick  # type: ignore[assignment]
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        self.port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", self.port, ssl_context=default).start()
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
