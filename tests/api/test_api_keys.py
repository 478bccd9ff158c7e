"""API keys through the API: shown once, stored hashed, listed without the secret,
revoked; every change in the audit log with who, what, when and from where."""

from __future__ import annotations

import hashlib
import time

import httpx
import nats

from elemta.common.config import Config
from elemta.common.names import KEYS_BUCKET


async def test_a_key_is_shown_once_stored_hashed_and_listed_without_its_secret(
    api: httpx.AsyncClient, cfg: Config
) -> None:
    resp = await api.post(
        "/api/v1/keys",
        json={"label": "ci", "role": "operator", "expires_at": time.time() + 3600},
    )
    assert resp.status_code == 201, resp.text
    created = resp.json()
    token = created["token"]
    assert token.startswith(f"elemta_{created['id']}_")
    secret = token.removeprefix(f"elemta_{created['id']}_")

    listed = (await api.get("/api/v1/keys")).json()
    mine = [k for k in listed if k["id"] == created["id"]]
    assert mine and "token" not in mine[0] and "secret_sha256" not in mine[0]
    assert mine[0]["role"] == "operator" and mine[0]["label"] == "ci"

    nc = await nats.connect(cfg.nats.url)
    try:
        kv = await nc.jetstream().key_value(KEYS_BUCKET)
        stored = (await kv.get(created["id"])).value or b""
    finally:
        await nc.close()
    assert secret.encode() not in stored
    assert hashlib.sha256(secret.encode()).hexdigest().encode() in stored

    me = await api.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert me.json() == {
        "kind": "key",
        "id": created["id"],
        "label": "ci",
        "role": "operator",
        "addresses": [],
    }


async def test_bad_key_requests_are_422_problems_that_say_what_is_wrong(
    api: httpx.AsyncClient,
) -> None:
    for body, words in (
        ({"label": "x", "role": "root"}, "role"),
        ({"label": "", "role": "admin"}, "label"),
        ({"label": "u", "role": "user"}, "address"),
        ({"label": "u", "role": "user", "addresses": ["not an address"]}, "mail address"),
        ({"label": "x", "role": "admin", "expires_at": 1000}, "past"),
    ):
        resp = await api.post("/api/v1/keys", json=body)
        assert resp.status_code == 422, (body, resp.text)
        assert resp.headers["content-type"] == "application/problem+json"
        assert words in resp.json()["detail"], resp.json()
    resp = await api.post(
        "/api/v1/keys", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert resp.status_code == 422
    assert (await api.delete("/api/v1/keys/000000000000")).status_code == 404


async def test_creating_and_revoking_keys_is_in_the_audit_log_newest_first(
    api: httpx.AsyncClient,
) -> None:
    before = time.time()
    created = (await api.post("/api/v1/keys", json={"label": "temp", "role": "readonly"})).json()
    await api.delete(f"/api/v1/keys/{created['id']}")
    entries = (await api.get("/api/v1/audit", params={"limit": 2})).json()["entries"]
    assert [e["action"] for e in entries] == ["key.revoke", "key.create"]
    for e in entries:
        assert e["target"] == created["id"]
        assert e["actor"]["role"] == "admin" and e["actor"]["label"] == "test admin"
        assert e["remote"] == "127.0.0.1"
        assert before - 1 <= e["at"] <= time.time() + 1
    assert entries[1]["role"] == "readonly" and entries[1]["label"] == "temp"
    assert "token" not in entries[1] and "secret_sha256" not in entries[1]
    older = (
        await api.get("/api/v1/audit", params={"limit": 1, "before": entries[0]["seq"]})
    ).json()
    assert older["entries"][0]["seq"] == entries[1]["seq"]
