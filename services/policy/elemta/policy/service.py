"""Wiring: the gRPC server, the NATS connection, readiness."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time

import grpc
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from elemta.common.config import Config
from elemta.common.health import HealthServer
from elemta.common.jetstream import EVENTS_SUBJECT, connect, disconnect
from elemta.common.names import AUTH_FAILURES_BUCKET
from elemta.common.resolver import Resolver
from elemta.common.tlsfiles import GrpcServerTls
from elemta.rpc.policy.v1 import policy_pb2_grpc as pb_grpc

from .authcheck import Authentication
from .checks import Pipeline, Verdict
from .content import ContentStage, build_content
from .credentials.authenticator import Authenticator, FailureCounter
from .credentials.store import StoreError, UserStore, open_store
from .dnsbl import Dnsbl
from .greylist import Greylist, open_greylist_bucket
from .grpc_api import PolicyServicer
from .kvstate import open_bucket
from .ratelimit import RateLimiter, open_ratelimit_bucket
from .reload import Reloader

__all__ = ["PolicyService"]

log = logging.getLogger(__name__)

MAX_MESSAGE = 64 * 1024 * 1024


class PolicyService:
    def __init__(
        self,
        cfg: Config,
        health: HealthServer,
        stop: asyncio.Event,
        config_path: str | None = None,
    ) -> None:
        self.cfg = cfg
        self.reloader = Reloader(
            config_path or os.environ.get("ELEMTA_CONFIG") or None,
            self._apply,
            cfg.policy.reload_check_interval,
        )
        self.stop_event = stop
        trusted = cfg.server.trusted_networks
        self.pipeline = Pipeline()
        p = cfg.policy
        # The one resolver of this process: SPF, DKIM, ARC, DMARC and DNSBL share its cache.
        self.resolver = Resolver(cfg.dns)
        if p.dnsbl_ip_zones or p.dnsbl_domain_zones:
            dnsbl = Dnsbl(self.resolver, p.dnsbl_ip_zones, p.dnsbl_domain_zones, trusted)
            self.pipeline.checks.append(dnsbl)
        self.authentication = Authentication(cfg, self.resolver)
        self.content = ContentStage()
        self._retiring: set[asyncio.Task[None]] = set()
        self.server: grpc.aio.Server | None = None
        self.store: UserStore | None = None
        self.authenticator: Authenticator | None = None
        self.nc: NATS | None = None
        self.port = 0
        health.add_check("grpc", lambda: self.server is not None)
        health.add_check("nats", lambda: self.nc is not None and self.nc.is_connected)

    async def start(self) -> None:
        self.nc = await connect(self.cfg, "elemta-policy", stop=self.stop_event)
        await self._shared_state_checks(self.nc.jetstream())
        self.pipeline.checks.append(self.authentication)
        # content scanners and milters last: the cheaper checks may refuse first
        self.content.swap(await build_content(self.cfg))
        self.pipeline.checks.append(self.content)
        opts = [
            ("grpc.max_receive_message_length", MAX_MESSAGE),
            ("grpc.max_send_message_length", MAX_MESSAGE),
        ]
        await self._open_users(self.nc.jetstream())
        server = grpc.aio.server(options=opts)
        servicer = PolicyServicer(
            self.pipeline, record=self._record, authenticator=self.authenticator
        )
        pb_grpc.add_PolicyServiceServicer_to_server(servicer, server)
        p = self.cfg.policy
        if p.tls_cert:
            # The certificate (and the client CA) are read again when they change.
            creds = GrpcServerTls(p.tls_cert, p.tls_key, p.tls_client_ca).credentials()
            self.port = server.add_secure_port(p.listen, creds)
        else:
            self.port = server.add_insecure_port(p.listen)
        if not self.port:
            raise OSError(f"cannot bind policy.listen {self.cfg.policy.listen}")
        await server.start()
        self.server = server
        self.reloader.install()
        log.info(
            "policy listening on %s (%s); %s",
            p.listen,
            "mTLS" if p.tls_client_ca else "TLS" if p.tls_cert else "plain",
            self.content.current.describe(),
        )

    async def _apply(self, cfg: Config) -> str:
        """A reloaded configuration: the next plugins and milters, swapped in between
        calls; the generation they replace closes when its last call is done."""
        checks = await build_content(cfg)
        old = self.content.swap(checks)
        task = asyncio.create_task(self.content.retire(old))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)
        reloadable = {"plugins", "milters", "reload_check_interval"} | {
            k for k in cfg.policy.model_fields if k.startswith("milter_")
        }
        before = self.cfg.model_dump(exclude={"policy": reloadable})
        if cfg.model_dump(exclude={"policy": reloadable}) != before:
            log.warning("only plugins and milters reload; other changes wait for a restart")
        return checks.describe()

    async def _open_users(self, js: JetStreamContext) -> None:
        """The user store (schema migrated) and the shared failure counts. A store
        that cannot be reached at start leaves mail checks running: logins answer
        "unavailable" (a temporary failure) until it can."""
        u = self.cfg.users
        try:
            store = open_store(self.cfg)
        except StoreError as exc:
            log.error("no user store, logins are refused: %s", exc)
            return
        try:
            await store.start()
        except StoreError as exc:
            log.error("user store not ready: %s", exc)
        self.store = store
        kv = await open_bucket(js, AUTH_FAILURES_BUCKET, u.lockout_window)
        self.authenticator = Authenticator(
            store,
            FailureCounter(kv),
            limit=u.lockout_failures,
            window=u.lockout_window,
            timeout=self.cfg.policy.kv_timeout,
        )
        log.info("users: %s store", u.store)

    async def _shared_state_checks(self, js: JetStreamContext) -> None:
        """Rate limits, then greylisting: state in JetStream KV, shared by replicas."""
        p, trusted = self.cfg.policy, self.cfg.server.trusted_networks
        per_ip = (p.rate_limit_per_ip, p.rate_limit_per_ip_window) if p.rate_limit_per_ip else None
        per_sender = (
            (p.rate_limit_per_sender, p.rate_limit_per_sender_window)
            if p.rate_limit_per_sender
            else None
        )
        if per_ip or per_sender:
            ttl = max(p.rate_limit_per_ip_window, p.rate_limit_per_sender_window)
            kv = await open_ratelimit_bucket(js, ttl=ttl)
            self.pipeline.checks.append(
                RateLimiter(kv, per_ip, per_sender, trusted, timeout=p.kv_timeout)
            )
        if p.greylist:
            kv = await open_greylist_bucket(
                js, ttl=max(p.greylist_retry_window, p.greylist_pass_ttl)
            )
            self.pipeline.checks.append(
                Greylist(
                    kv,
                    p.greylist_delay,
                    p.greylist_retry_window,
                    p.greylist_pass_ttl,
                    trusted,
                    timeout=p.kv_timeout,
                )
            )

    async def _record(self, queue_id: str, verdict: Verdict) -> None:
        """The message's policy record: an event in its history (``ELEMTA_EVENTS``)
        with what the checks found (rspamd symbols, milter replies and edits)."""
        if self.nc is None:
            return
        event = {
            "type": "policy",
            "at": round(time.time(), 6),
            "id": queue_id,
            "action": verdict.action,
            **(
                {"reply": f"{verdict.code} {verdict.enhanced} {verdict.reason}"}
                if verdict.code
                else {}
            ),
            "checks": verdict.notes,
        }
        try:
            payload = json.dumps(event, separators=(",", ":"), default=str).encode()
            await self.nc.publish(f"{EVENTS_SUBJECT}.{queue_id}", payload)
        except Exception as exc:  # a lost record is not worth failing the message for
            log.warning("cannot record the policy verdict: %s", exc)

    async def stop(self) -> None:
        await self.reloader.close()
        if self.server is not None:
            await self.server.stop(grace=5)
        await asyncio.gather(*self._retiring, return_exceptions=True)
        await self.content.close()
        if self.store is not None:
            await self.store.close()
        if self.nc is not None:
            await disconnect(self.nc)
