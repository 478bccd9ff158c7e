"""Authentication and roles: every operation of the OpenAPI document refuses a request
without credentials (401) and one whose role lacks the permission (403), walking the
permission table; keys that are unknown, revoked or expired are refused; a ``user``
sees only its own mail; the table in docs/api.md is the table the code enforces."""

from __future__ import annotations

import json
import re
import time

import httpx
import nats
import pytest
from nats.js import JetStreamContext

from elemta.api.permissions import PERMISSIONS
from elemta.common.apikeys import ROLES, KeyStore
from elemta.common.config import Config
from elemta.common.envelope import new_queue_id
from elemta.common.jetstream import STATE_BUCKET

from support.apiserver import USER_ADDRESS
from support.stack import ROOT

SAMPLE = {"id": "0" * 20, "key_id": "0" * 12, "domain": "example.net"}


def _path(template: str) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: SAMPLE.get(m.group(1), "x"), template)


async def operations(api: httpx.AsyncClient) -> list[tuple[str, str, str]]:
    doc = (await api.get("/api/v1/openapi.json")).json()
    ops = []
    for template, methods in doc["paths"].items():
        for method, op in methods.items():
            ops.append((method.upper(), _path(template), op["x-permission"]))
    return ops


async def test_every_operation_names_a_permission_of_the_table(api: httpx.AsyncClient) -> None:
    ops = await operations(api)
    assert len(ops) >= 6
    for method, path, permission in ops:
        assert path.startswith("/api/v1/"), path
        assert permission in PERMISSIONS, (method, path, permission)


async def test_every_operation_is_401_without_credentials_or_with_a_bad_key(
    api: httpx.AsyncClient,
) -> None:
    for method, path, _ in await operations(api):
        for headers in (
            {},
            {"Authorization": "Bearer not-a-key"},
            {"Authorization": "Bearer elemta_000000000000_" + "A" * 43},
            {"Authorization": "Basic YWRtaW46YWRtaW4="},
        ):
            resp = await api.request(method, path, headers={"Authorization": ""} | headers)
            assert resp.status_code == 401, (method, path, headers, resp.text)
            assert resp.headers["content-type"] == "application/problem+json"
            assert resp.headers["www-authenticate"].startswith("Bearer")


async def test_every_operation_is_403_for_each_role_the_table_leaves_out_and_not_for_the_others(
    api: httpx.AsyncClient, tokens: dict[str, str]
) -> None:
    checked = 0
    for method, path, permission in await operations(api):
        for role in ROLES:
            headers = {"Authorization": f"Bearer {tokens[role]}"}
            resp = await api.request(method, path, headers=headers, json={})
            if role in PERMISSIONS[permission]:
                assert resp.status_code not in (401, 403), (method, path, role, resp.text)
            else:
                assert resp.status_code == 403, (method, path, role, resp.text)
                assert permission in resp.json()["detail"]
                checked += 1
    assert checked > 10


async def test_a_revoked_key_is_refused_at_once(api: httpx.AsyncClient, cfg: Config) -> None:
    created = await api.post("/api/v1/keys", json={"label": "short-lived", "role": "readonly"})
    assert created.status_code == 201, created.text
    token = created.json()["token"]
    auth = {"Authorization": f"Bearer {token}"}
    assert (await api.get("/api/v1/me", headers=auth)).json()["role"] == "readonly"
    assert (await api.delete(f"/api/v1/keys/{created.json()['id']}")).status_code == 204
    assert (await api.get("/api/v1/me", headers=auth)).status_code == 401


async def test_an_expired_key_is_refused(api: httpx.AsyncClient, cfg: Config) -> None:
    nc = await nats.connect(cfg.nats.url)
    try:
        store = await KeyStore.open(nc.jetstream())
        _, token = await store.create("old", "admin", "test", expires_at=time.time() - 1)
    finally:
        await nc.close()
    resp = await api.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 401
    assert "expired" in resp.json()["detail"]


async def _message(js: JetStreamContext, sender: str, recipients: list[str]) -> str:
    qid = new_queue_id()
    kv = await js.key_value(STATE_BUCKET)
    state = {"id": qid, "sender": sender, "recipients": recipients, "status": "active"}
    await kv.put(qid, json.dumps(state).encode())
    event = {"type": "accepted", "id": qid, "sender": sender, "recipients": recipients}
    await js.publish(f"elemta.events.{qid}", json.dumps(event).encode())
    return qid


@pytest.mark.parametrize("path", ["", "/events"])
async def test_a_user_sees_its_own_mail_and_not_another_users(
    api: httpx.AsyncClient, js: JetStreamContext, tokens: dict[str, str], path: str
) -> None:
    as_user = {"Authorization": f"Bearer {tokens['user']}"}
    to_me = await _message(js, "dave@example.net", [USER_ADDRESS.upper()])
    from_me = await _message(js, USER_ADDRESS, ["erin@example.net"])
    others = await _message(js, "dave@example.net", ["erin@example.net"])
    for qid in (to_me, from_me):
        resp = await api.get(f"/api/v1/messages/{qid}{path}", headers=as_user)
        assert resp.status_code == 200, resp.text
    resp = await api.get(f"/api/v1/messages/{others}{path}", headers=as_user)
    assert resp.status_code == 404  # as if it did not exist
    assert (await api.get(f"/api/v1/messages/{others}{path}")).status_code == 200  # admin


def test_the_permission_table_in_the_docs_is_the_one_the_code_enforces() -> None:
    text = (ROOT / "docs/api.md").read_text()
    table = text.split("<!-- permissions -->")[1]
    rows: dict[str, set[str]] = {}
    header: list[str] = []
    for line in table.strip().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not header:
            header = cells
            continue
        if set(cells[0]) <= {"-", ":"}:
            continue
        if not cells[0].startswith("`"):
            break
        rows[cells[0].strip("`")] = {
            r for r, c in zip(header[1:], cells[1:], strict=True) if c == "yes"
        }
    assert header[1:] == list(ROLES)
    assert rows == {k: set(v) for k, v in PERMISSIONS.items()}


async def test_a_users_list_holds_only_its_own_mail(
    api: httpx.AsyncClient, js: JetStreamContext, tokens: dict[str, str]
) -> None:
    mine = await _message(js, "dave@example.net", [USER_ADDRESS])
    others = await _message(js, "dave@example.net", ["erin@example.net"])
    as_user = {"Authorization": f"Bearer {tokens['user']}"}
    listed = (await api.get("/api/v1/messages", headers=as_user)).json()["messages"]
    assert [m["id"] for m in listed] == [mine]
    everyone = (await api.get("/api/v1/messages")).json()["messages"]
    assert {mine, others} <= {m["id"] for m in everyone}
