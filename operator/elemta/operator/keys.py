"""Secrets whose content the operator makes: the CA, certificates, DKIM keys.

Unlike rendered children these are not re-rendered each time: a certificate is
issued when :func:`~elemta.operator.certs.renewal_reason` says so (missing,
near expiry, names or CA changed), a DKIM key only when its Secret is absent.
Each issue is reported to the caller, which posts an Event.
"""

from __future__ import annotations

import base64
import datetime as dt
import secrets
from dataclasses import dataclass, field
from typing import Any

from . import certs, dkim
from .kube import Kube
from .model import Cluster
from .status import Check
from .workloads import dkim_secret_name, smtp_secret_name

__all__ = ["KeyReport", "ensure_keys", "leaf_certificates", "tls_check"]


@dataclass
class KeyReport:
    """What :func:`ensure_keys` did and found."""

    actions: list[tuple[str, str]] = field(default_factory=list)  # (reason, message)
    warnings: list[tuple[str, str]] = field(default_factory=list)
    dkim_txt: dict[tuple[str, str], str] = field(default_factory=dict)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(secret: dict[str, Any] | None, key: str) -> bytes | None:
    if not secret:
        return None
    value = (secret.get("data") or {}).get(key)
    return base64.b64decode(value) if value else None


def _tls_secret(cluster: Cluster, name: str, cert: bytes, key: bytes, ca: bytes) -> dict[str, Any]:
    meta = cluster.metadata("x", "tls")
    meta["name"] = name
    info = certs.describe(cert)
    meta["annotations"] = {"elemta.io/not-after": info.not_after.strftime("%Y-%m-%dT%H:%M:%SZ")}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/tls",
        "metadata": meta,
        "data": {"tls.crt": _b64(cert), "tls.key": _b64(key), "ca.crt": _b64(ca)},
    }


def leaf_certificates(cluster: Cluster) -> dict[str, tuple[list[str], bool]]:
    """Secret name -> (DNS names, RSA key?) of every certificate the operator issues."""
    ns = cluster.namespace
    out: dict[str, tuple[list[str], bool]] = {}
    tls = cluster.spec["tls"]
    if tls["mode"] == "operator":
        out[cluster.child("smtp-tls")] = (
            [cluster.spec["hostname"], cluster.service_host("smtp")],
            True,
        )
    if tls["internal"]:
        policy = cluster.child("policy")
        out[cluster.child("policy-tls")] = (
            [
                cluster.service_host("policy"),
                policy,
                f"{cluster.service_host('policy')}.cluster.local",
            ],
            False,
        )
        # The services' client certificate (ingress to policy; its ca.crt checks NATS).
        out[cluster.child("client-tls")] = ([f"{cluster.child('client')}.{ns}.svc"], False)
        if cluster.spec["nats"]["mode"] == "managed":
            headless = f"{cluster.child('nats-headless')}.{ns}.svc"
            out[cluster.child("nats-tls")] = (
                [cluster.service_host("nats"), cluster.child("nats"), f"*.{headless}"],
                False,
            )
    return out


async def _put(kube: Kube, secret: dict[str, Any], exists: bool) -> None:
    meta = secret["metadata"]
    if exists:
        await kube.patch("Secret", meta["namespace"], meta["name"], secret)
    else:
        await kube.create(secret)


async def _ensure_certs(kube: Kube, cluster: Cluster, now: dt.datetime, report: KeyReport) -> None:
    leaves = leaf_certificates(cluster)
    if not leaves:
        return
    tls = cluster.spec["tls"]
    ca_name = cluster.child("ca")
    ca_secret = await kube.get("Secret", cluster.namespace, ca_name)
    ca_cert, ca_key = _unb64(ca_secret, "tls.crt"), _unb64(ca_secret, "tls.key")
    reason = certs.renewal_reason(
        ca_cert,
        dns_names=[],
        ca_cert_pem=None,
        now=now,
        renew_before=dt.timedelta(days=certs.CA_RENEW_DAYS),
    )
    if reason or not ca_key:
        ca_cert, ca_key = certs.issue_ca(f"Elemta CA {cluster.namespace}/{cluster.name}", now)
        await _put(kube, _tls_secret(cluster, ca_name, ca_cert, ca_key, ca_cert), bool(ca_secret))
        report.actions.append(("IssuedCA", f"CA {ca_name} issued ({reason or 'no key'})"))
    assert ca_cert is not None and ca_key is not None
    renew_before = dt.timedelta(days=tls["renewBeforeDays"])
    for name, (dns_names, rsa_key) in leaves.items():
        current = await kube.get("Secret", cluster.namespace, name)
        reason = certs.renewal_reason(
            _unb64(current, "tls.crt"),
            dns_names=dns_names,
            ca_cert_pem=ca_cert,
            now=now,
            renew_before=renew_before,
        )
        if reason is None:
            continue
        cert, key = certs.issue_leaf(
            ca_cert, ca_key, dns_names, now, tls["validityDays"], rsa_key=rsa_key
        )
        await _put(kube, _tls_secret(cluster, name, cert, key, ca_cert), current is not None)
        verb = "Issued" if reason == "missing" else "Renewed"
        report.actions.append((f"Certificate{verb}", f"{name}: {verb.lower()} ({reason})"))


async def tls_check(kube: Kube, cluster: Cluster, now: dt.datetime) -> Check:
    tls = cluster.spec["tls"]
    if tls["mode"] == "certManager":
        cert = await kube.get("Certificate", cluster.namespace, cluster.child("smtp"))
        if cert is None:
            return Check("TLSReady", False, "CertManagerMissing", "no cert-manager Certificate")
        ready = [
            c for c in (cert.get("status") or {}).get("conditions", []) if c.get("type") == "Ready"
        ]
        if ready and ready[0].get("status") == "True":
            return Check(
                "TLSReady", True, "CertificateReady", "cert-manager issued the certificate"
            )
        message = ready[0].get("message", "waiting for cert-manager") if ready else "pending"
        return Check("TLSReady", False, "CertificatePending", message)
    name = smtp_secret_name(cluster)
    secret = await kube.get("Secret", cluster.namespace, name)
    pem = _unb64(secret, "tls.crt")
    if not pem or not _unb64(secret, "tls.key"):
        return Check("TLSReady", False, "SecretMissing", f"Secret {name} has no tls.crt/tls.key")
    try:
        info = certs.describe(pem)
    except ValueError:
        return Check("TLSReady", False, "SecretInvalid", f"Secret {name}: tls.crt is not PEM")
    if info.not_after <= now:
        return Check("TLSReady", False, "Expired", f"{name} expired {info.not_after:%Y-%m-%d}")
    return Check("TLSReady", True, "Valid", f"{name} valid until {info.not_after:%Y-%m-%d}")


async def _ensure_dkim(kube: Kube, cluster: Cluster, report: KeyReport) -> None:
    for key in cluster.spec["dkim"]["keys"]:
        name = dkim_secret_name(cluster, key)
        secret = await kube.get("Secret", cluster.namespace, name)
        pem = _unb64(secret, "private.pem")
        if pem is None and key.get("secretName"):
            report.warnings.append(("DKIMSecretMissing", f"Secret {name} has no private.pem"))
            continue
        if pem is None:
            pem = dkim.generate_key(key["algorithm"], key["bits"])
            meta = cluster.metadata("x", "dkim")
            meta["name"] = name
            meta["annotations"] = {
                "elemta.io/dkim-domain": key["domain"],
                "elemta.io/dkim-selector": key["selector"],
            }
            await kube.create(
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "type": "Opaque",
                    "metadata": meta,
                    "data": {"private.pem": _b64(pem)},
                }
            )
            report.actions.append(
                ("DKIMKeyGenerated", f"{key['selector']}._domainkey.{key['domain']} in {name}")
            )
        try:
            report.dkim_txt[(key["domain"], key["selector"])] = dkim.txt_value(pem)
        except ValueError as exc:
            report.warnings.append(("DKIMKeyInvalid", f"Secret {name}: {exc}"))


async def _ensure_nats_password(kube: Kube, cluster: Cluster, report: KeyReport) -> None:
    """The managed NATS's password, generated once (the services and the servers read it)."""
    if cluster.spec["nats"]["mode"] != "managed" or not cluster.internal_tls:
        return
    name = cluster.child("nats-auth")
    if await kube.get("Secret", cluster.namespace, name) is not None:
        return
    meta = cluster.metadata("nats-auth", "nats")
    password = secrets.token_urlsafe(32)
    await kube.create(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "Opaque",
            "metadata": meta,
            "data": {"username": _b64(b"elemta"), "password": _b64(password.encode())},
        }
    )
    report.actions.append(("NATSPasswordGenerated", f"Secret {name}"))


async def ensure_keys(kube: Kube, cluster: Cluster, now: dt.datetime) -> KeyReport:
    report = KeyReport()
    await _ensure_certs(kube, cluster, now, report)
    await _ensure_dkim(kube, cluster, report)
    await _ensure_nats_password(kube, cluster, report)
    return report
