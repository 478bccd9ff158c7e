"""The operator's handlers against the kmock Kubernetes API emulator."""

from __future__ import annotations

import base64
from typing import Any

from cryptography import x509
from operator_harness import IMAGE, Clock, Harness

SPEC: dict[str, Any] = {
    "hostname": "mx.example.org",
    "localDomains": ["example.org"],
    "ingress": {"replicas": 3},
    "dkim": {"keys": [{"domain": "example.org", "selector": "s2026"}]},
}


def owned_by_cluster(obj: dict[str, Any]) -> bool:
    refs = obj["metadata"].get("ownerReferences") or []
    return any(
        r["kind"] == "ElemtaCluster" and r["uid"] == "uid-mail" and r["controller"] for r in refs
    )


def not_after(secret: dict[str, Any]) -> tuple[Any, int]:
    cert = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["tls.crt"]))
    return cert.not_valid_after_utc, cert.serial_number


async def test_creating_a_cluster_produces_its_children_owned_by_it(operator: Harness) -> None:
    await operator.submit(SPEC)
    await operator.reconcile()

    for component in ("ingress", "policy", "queue", "delivery", "api"):
        deployment = await operator.get("Deployment", f"mail-{component}")
        assert owned_by_cluster(deployment)
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        assert container["image"] == IMAGE
        assert container["args"] == ["serve", component]
    for kind, name in [
        ("ConfigMap", "mail-config"),
        ("Service", "mail-smtp"),
        ("Service", "mail-policy"),
        ("StatefulSet", "mail-nats"),
        ("HorizontalPodAutoscaler", "mail-delivery"),
        ("Secret", "mail-ca"),
        ("Secret", "mail-smtp-tls"),
        ("Secret", "mail-policy-tls"),
        ("Secret", "mail-nats-tls"),
        ("Secret", "mail-client-tls"),
        ("Secret", "mail-nats-auth"),
        ("Secret", "mail-dkim-s2026-example-org"),
    ]:
        assert owned_by_cluster(await operator.get(kind, name)), f"{kind} {name}"


async def test_children_carry_the_fields_the_spec_asked_for(operator: Harness) -> None:
    await operator.submit(SPEC)
    await operator.reconcile()

    assert (await operator.get("Deployment", "mail-ingress"))["spec"]["replicas"] == 3
    queue = await operator.get("Deployment", "mail-queue")
    # two queue pods, one active through its lease: a rolling update hands over
    assert queue["spec"]["replicas"] == 2
    assert queue["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    assert (await operator.get("PodDisruptionBudget", "mail-queue"))["spec"]["maxUnavailable"] == 1
    # The HPA owns delivery's replica count; the Deployment leaves it out.
    assert "replicas" not in (await operator.get("Deployment", "mail-delivery"))["spec"]
    hpa = await operator.get("HorizontalPodAutoscaler", "mail-delivery")
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 10)
    smtp = await operator.get("Service", "mail-smtp")
    assert smtp["spec"]["type"] == "LoadBalancer"
    assert smtp["spec"]["externalTrafficPolicy"] == "Local"
    assert smtp["spec"]["ports"] == [
        {"name": "smtp", "port": 25, "targetPort": 2525, "protocol": "TCP"}
    ]
    nats = await operator.get("StatefulSet", "mail-nats")
    assert nats["spec"]["replicas"] == 3
    conf = (await operator.get("ConfigMap", "mail-nats-config"))["data"]["nats.conf"]
    assert "sync_interval: always" in conf
    assert "mail-nats-2.mail-nats-headless.mail.svc:6222" in conf


async def test_keda_scales_delivery_on_consumer_lag_when_installed(
    operator: Harness, kmock: Any
) -> None:
    await operator.submit(SPEC)
    await operator.reconcile()
    assert await operator.find("HorizontalPodAutoscaler", "mail-delivery") is not None

    kmock.resources["keda.sh/v1alpha1/scaledobjects"].kind = "ScaledObject"  # KEDA installed
    await operator.reconcile(timer=True)

    scaled = await operator.get("ScaledObject", "mail-delivery")
    (first, trigger, _cpu) = scaled["spec"]["triggers"]
    assert first["type"] == trigger["type"] == "nats-jetstream"
    assert (first["metadata"]["stream"], first["metadata"]["consumer"]) == (
        "ELEMTA_MESSAGES",
        "delivery-first",
    )
    assert trigger["metadata"]["stream"] == "ELEMTA_DELIVERY"
    assert trigger["metadata"]["consumer"] == "delivery"
    assert trigger["metadata"]["natsServerMonitoringEndpoint"] == "mail-nats.mail.svc:8222"
    assert await operator.find("HorizontalPodAutoscaler", "mail-delivery") is None
    assert ("Deleted", "HorizontalPodAutoscaler mail-delivery") in await operator.events()


async def test_changing_replicas_patches_the_deployment(operator: Harness) -> None:
    await operator.submit(SPEC)
    await operator.reconcile()
    await operator.edit("mail", {"spec": {"policy": {"replicas": 4}}})
    await operator.reconcile()
    assert (await operator.get("Deployment", "mail-policy"))["spec"]["replicas"] == 4
    assert ("Updated", "Deployment mail-policy") in await operator.events()


async def test_changing_config_rolls_every_pod_template(operator: Harness) -> None:
    await operator.submit(SPEC)
    await operator.reconcile()

    def config_hash(d: dict[str, Any]) -> str:
        return str(d["spec"]["template"]["metadata"]["annotations"]["elemta.io/config-hash"])

    before = config_hash(await operator.get("Deployment", "mail-delivery"))
    await operator.edit("mail", {"spec": {"config": {"delivery": {"concurrency": 16}}}})
    await operator.reconcile()

    text = (await operator.get("ConfigMap", "mail-config"))["data"]["elemta.toml"]
    assert "concurrency = 16" in text
    for component in ("ingress", "policy", "queue", "delivery", "api"):
        after = config_hash(await operator.get("Deployment", f"mail-{component}"))
        assert after != before, component


async def test_certificate_near_expiry_is_renewed(operator: Harness, clock: Clock) -> None:
    await operator.submit(SPEC)  # 90-day certificates, renewed 30 days before the end
    await operator.reconcile()
    first_end, first_serial = not_after(await operator.get("Secret", "mail-smtp-tls"))

    clock.advance(days=50)
    await operator.reconcile(timer=True)
    assert not_after(await operator.get("Secret", "mail-smtp-tls")) == (first_end, first_serial)

    def nats_template_hash(sts: dict[str, Any]) -> str:
        return str(sts["spec"]["template"]["metadata"]["annotations"]["elemta.io/config-hash"])

    before = nats_template_hash(await operator.get("StatefulSet", "mail-nats"))
    clock.advance(days=15)  # 25 days left
    await operator.reconcile(timer=True)
    end, serial = not_after(await operator.get("Secret", "mail-smtp-tls"))
    assert serial != first_serial
    assert (end - first_end).days == 65
    # nats-server reads its certificate at start: the renewal rolls the servers.
    assert nats_template_hash(await operator.get("StatefulSet", "mail-nats")) != before
    assert any(
        r == "CertificateRenewed" and "mail-smtp-tls" in m for r, m in await operator.events()
    )


async def test_status_follows_the_components_and_the_generation(operator: Harness) -> None:
    await operator.submit(SPEC)
    status = (await operator.reconcile())["status"]
    conditions = {c["type"]: c for c in status["conditions"]}
    assert status["observedGeneration"] == 1
    assert conditions["Ready"]["status"] == "False"
    assert conditions["TLSReady"]["status"] == "True"
    assert conditions["DeliveryAvailable"]["reason"] == "NoReplicasAvailable"

    await operator.play_controllers()
    await operator.edit("mail", {"spec": {"ingress": {"replicas": 2}}})
    status = (await operator.reconcile())["status"]
    conditions = {c["type"]: c for c in status["conditions"]}
    assert status["observedGeneration"] == 2
    assert conditions["Ready"]["status"] == "True", conditions
    assert conditions["NATSReady"]["message"] == "3/3 NATS servers ready"
    assert status["ingress"]["summary"] == "3/2"  # the controller has not caught up yet
    assert status["smtpEndpoint"] == "mail-smtp.mail.svc:25"
    records = {(r["type"], r["name"]): r["value"] for r in status["dnsRecords"]}
    assert records[("MX", "example.org.")] == "10 mx.example.org."
    assert records[("TXT", "s2026._domainkey.example.org.")].startswith("v=DKIM1; k=rsa; p=")
    assert ("TXT", "_dmarc.example.org.") in records
    assert ("TXT", "_smtp._tls.example.org.") in records


async def test_condition_transition_time_stays_while_the_status_holds(
    operator: Harness, clock: Clock
) -> None:
    await operator.submit(SPEC)
    await operator.reconcile()
    await operator.play_controllers()
    first = {c["type"]: c for c in (await operator.reconcile())["status"]["conditions"]}
    clock.advance(days=1)
    later = {c["type"]: c for c in (await operator.reconcile(timer=True))["status"]["conditions"]}
    assert later["Ready"]["lastTransitionTime"] == first["Ready"]["lastTransitionTime"]


async def test_pause_annotation_stops_changes(operator: Harness) -> None:
    await operator.submit(SPEC)
    await operator.reconcile()
    await operator.edit("mail", {"metadata": {"annotations": {"elemta.io/paused": "true"}}})
    await operator.edit("mail", {"spec": {"ingress": {"replicas": 7}}})
    status = (await operator.reconcile())["status"]

    assert (await operator.get("Deployment", "mail-ingress"))["spec"]["replicas"] == 3
    paused = [c for c in status["conditions"] if c["type"] == "ReconciliationPaused"]
    assert paused and paused[0]["status"] == "True"

    await operator.edit("mail", {"metadata": {"annotations": {"elemta.io/paused": None}}})
    status = (await operator.reconcile())["status"]
    assert (await operator.get("Deployment", "mail-ingress"))["spec"]["replicas"] == 7
    assert not [c for c in status["conditions"] if c["type"] == "ReconciliationPaused"]


async def test_timer_repairs_drift(operator: Harness) -> None:
    await operator.submit(SPEC)
    await operator.reconcile()
    await operator.kube.delete("Deployment", "mail", "mail-api")
    await operator.kube.patch("Service", "mail", "mail-smtp", {"spec": {"type": "ClusterIP"}})

    await operator.reconcile(timer=True)

    assert await operator.find("Deployment", "mail-api") is not None
    assert (await operator.get("Service", "mail-smtp"))["spec"]["type"] == "LoadBalancer"
    events = await operator.events()
    assert ("Created", "Deployment mail-api") in events
    assert ("Updated", "Service mail-smtp") in events


async def test_a_pass_that_changes_nothing_posts_no_event(operator: Harness) -> None:
    await operator.submit(SPEC)
    await operator.reconcile()
    before = await operator.events()
    await operator.reconcile(timer=True)
    assert await operator.events() == before


async def test_dkim_key_is_generated_once_and_signs_in_policy(operator: Harness) -> None:
    from elemta.policy.dkimcheck import DkimSigner, SigningKey

    await operator.submit(SPEC)
    await operator.reconcile()
    secret = await operator.get("Secret", "mail-dkim-s2026-example-org")
    await operator.reconcile(timer=True)
    assert (await operator.get("Secret", "mail-dkim-s2026-example-org"))["data"] == secret["data"]

    pem = base64.b64decode(secret["data"]["private.pem"])
    signer = DkimSigner([SigningKey("example.org", "s2026", "rsa-sha256", pem)])
    message = b"From: a@example.org\r\nTo: b@example.net\r\nSubject: hi\r\n\r\nbody\r\n"
    (header,) = signer.sign(message, "example.org")
    assert b"s=s2026" in header


async def test_cert_manager_mode_asks_cert_manager_for_the_smtp_certificate(
    operator: Harness, kmock: Any
) -> None:
    kmock.resources["cert-manager.io/v1/certificates"].kind = "Certificate"
    spec = {**SPEC, "tls": {"mode": "certManager", "issuerRef": {"name": "letsencrypt"}}}
    await operator.submit(spec)
    status = (await operator.reconcile())["status"]

    cert = await operator.get("Certificate", "mail-smtp")
    assert cert["spec"]["secretName"] == "mail-smtp-tls"
    assert cert["spec"]["dnsNames"] == ["mx.example.org"]
    assert cert["spec"]["issuerRef"]["kind"] == "ClusterIssuer"
    assert await operator.find("Secret", "mail-smtp-tls") is None  # cert-manager writes it
    tls = [c for c in status["conditions"] if c["type"] == "TLSReady"][0]
    assert (tls["status"], tls["reason"]) == ("False", "CertificatePending")


async def test_external_nats_needs_no_statefulset(operator: Harness) -> None:
    spec = {**SPEC, "nats": {"mode": "external", "url": "tls://nats.infra:4222"}}
    await operator.submit(spec)
    await operator.reconcile()
    assert await operator.find("StatefulSet", "mail-nats") is None
    assert (
        'url = "tls://nats.infra:4222"'
        in (await operator.get("ConfigMap", "mail-config"))["data"]["elemta.toml"]
    )


async def test_services_talk_over_mutual_tls_and_to_nats_with_a_password(
    operator: Harness,
) -> None:
    await operator.submit(SPEC)
    await operator.reconcile()
    text = (await operator.get("ConfigMap", "mail-config"))["data"]["elemta.toml"]
    assert 'url = "tls://mail-nats.mail.svc:4222"' in text
    assert 'tls_client_ca = "/etc/elemta/tls/policy/ca.crt"' in text
    assert 'client_cert = "/etc/elemta/tls/client/tls.crt"' in text
    assert "password" not in text  # from the Secret, through the environment
    policy = (await operator.get("Deployment", "mail-policy"))["spec"]["template"]["spec"]
    assert {v["name"] for v in policy["volumes"]} >= {"policy-tls", "client-tls"}
    env = {e["name"]: e for e in policy["containers"][0]["env"]}
    ref = env["ELEMTA_NATS_PASSWORD"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "mail-nats-auth", "key": "password"}
    conf = (await operator.get("ConfigMap", "mail-nats-config"))["data"]["nats.conf"]
    assert "password: $NATS_PASSWORD" in conf
    assert conf.count('ca_file: "/etc/nats/tls/ca.crt"') == 2  # clients and routes


async def test_external_nats_credentials_come_from_the_named_secret(operator: Harness) -> None:
    await operator.kube.create(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "nats-creds", "namespace": "mail"},
            "data": {"creds": base64.b64encode(b"jwt").decode(), "ca.crt": "Y2E="},
        }
    )
    nats = {
        "mode": "external",
        "url": "tls://nats.infra:4222",
        "credentialsSecret": {"name": "nats-creds"},
    }
    await operator.submit({**SPEC, "nats": nats})
    await operator.reconcile()
    text = (await operator.get("ConfigMap", "mail-config"))["data"]["elemta.toml"]
    assert 'creds_file = "/etc/elemta/nats/creds"' in text
    assert 'tls_ca = "/etc/elemta/nats/ca.crt"' in text
    queue = (await operator.get("Deployment", "mail-queue"))["spec"]["template"]["spec"]
    (mount,) = [v for v in queue["volumes"] if v["name"] == "nats-credentials"]
    assert mount["secret"]["secretName"] == "nats-creds"
