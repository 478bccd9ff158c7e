"""Console sessions: a login with an API key sets a cookie (HttpOnly, SameSite=Strict)
that the API accepts like the key; a change through it needs the CSRF token; a
revoked key ends its sessions; logout ends one; failed logins are limited per
client address; the console's files are served with a policy allowing only its
own origin."""

from __future__ import annotations

import json

import httpx

from elemta.api.console import ASSETS
from elemta.api.logins import PasswordLogins, console_role
from elemta.api.sessions import COOKIE, LoginLimiter, Session
from elemta.common.config import load_config

from support.clock import FakeClock
from support.dnsserver import free_port


async def login(api: httpx.AsyncClient, token: str) -> tuple[httpx.Response, httpx.AsyncClient]:
    """Log in; the answer and a client that holds only the session cookie (no key)."""
    resp = await api.post(
        "/console/session", json={"api_key": token}, headers={"Authorization": ""}
    )
    api.cookies.clear()
    browser = httpx.AsyncClient(base_url=api.base_url)
    if COOKIE in resp.cookies:
        browser.cookies.set(COOKIE, resp.cookies[COOKIE])
    return resp, browser


async def test_a_login_with_a_key_opens_a_session_the_api_accepts(
    api: httpx.AsyncClient, tokens: dict[str, str]
) -> None:
    resp, b = await login(api, tokens["operator"])
    assert resp.status_code == 201, resp.text
    info = resp.json()
    assert info["role"] == "operator" and info["label"] == "test operator"
    assert "queue.act" in info["permissions"] and "keys.write" not in info["permissions"]
    set_cookie = resp.headers["set-cookie"].lower()
    assert "httponly" in set_cookie and "samesite=strict" in set_cookie and "path=/" in set_cookie
    assert "secure" not in set_cookie  # plain HTTP here; over TLS the cookie is Secure

    me = await b.get("/api/v1/me")
    assert me.status_code == 200 and me.json()["role"] == "operator"
    # The role still decides: an operator may not list keys.
    assert (await b.get("/api/v1/keys")).status_code == 403
    again = await b.get("/console/session")
    assert again.json()["csrf_token"] == info["csrf_token"]

    # A change needs the CSRF token.
    body = {"domain": "csrf.test", "reason": "x", "duration": 60}
    no_token = await b.post("/api/v1/suspensions", json=body)
    assert no_token.status_code == 403 and no_token.json()["type"].endswith("/csrf")
    wrong = await b.post(
        "/api/v1/suspensions",
        json=body,
        headers={"X-CSRF-Token": "x" * 43},
    )
    assert wrong.status_code == 403

    # Logout needs the token too, and ends the session.
    assert (await b.delete("/console/session")).status_code == 403
    out = await b.delete("/console/session", headers={"X-CSRF-Token": info["csrf_token"]})
    assert out.status_code == 204
    assert (await b.get("/api/v1/me")).status_code == 401
    assert (await b.get("/console/session")).status_code == 401
    await b.aclose()


async def test_a_change_with_the_token_is_made_and_revoking_a_key_ends_its_sessions(
    api: httpx.AsyncClient, tokens: dict[str, str]
) -> None:
    resp, admin = await login(api, tokens["admin"])
    csrf = {"X-CSRF-Token": resp.json()["csrf_token"]}
    created = await admin.post(
        "/api/v1/keys", json={"label": "short", "role": "readonly"}, headers=csrf
    )
    assert created.status_code == 201, created.text
    key = created.json()
    _, b = await login(api, key["token"])
    assert (await b.get("/api/v1/me")).status_code == 200
    assert (await admin.delete(f"/api/v1/keys/{key['id']}", headers=csrf)).status_code == 204
    resp = await b.get("/api/v1/me")
    assert resp.status_code == 401 and "session has ended" in resp.json()["detail"]
    audit = (await api.get("/api/v1/audit")).json()["entries"]
    assert [e["action"] for e in audit[:3]] == ["key.revoke", "session.login", "key.create"]
    assert audit[0]["actor"]["id"] == audit[2]["actor"]["id"]  # the admin key's session
    await admin.aclose()
    await b.aclose()


async def test_a_bad_key_or_a_forged_cookie_is_refused(api: httpx.AsyncClient) -> None:
    resp, _ = await login(api, "elemta_000000000000_" + "A" * 43)
    assert resp.status_code == 401 and resp.headers["content-type"] == "application/problem+json"
    assert COOKIE not in resp.cookies
    forged = {COOKIE: "A" * 43}
    async with httpx.AsyncClient(base_url=api.base_url, cookies=forged) as stranger:
        resp = await stranger.get("/api/v1/me")
    assert resp.status_code == 401
    bad_input = await api.post("/console/session", json={"api_key": ""})
    assert bad_input.status_code == 422


async def test_failed_logins_from_one_address_are_refused_for_a_while(
    api: httpx.AsyncClient, tokens: dict[str, str]
) -> None:
    bad = "elemta_000000000000_" + "B" * 43
    codes = [(await login(api, bad))[0].status_code for _ in range(11)]
    assert codes[:10] == [401] * 10 and codes[10] == 429
    resp, _ = await login(api, tokens["admin"])  # even the right key waits
    assert resp.status_code == 429 and int(resp.headers["retry-after"]) > 0


def test_the_login_limit_forgets_failures_after_its_window() -> None:
    clock = FakeClock()
    limiter = LoginLimiter(3, window=300, clock=clock)
    for _ in range(3):
        assert limiter.retry_after("192.0.2.1") == 0
        limiter.failed("192.0.2.1")
    assert limiter.retry_after("192.0.2.1") == 300
    assert limiter.retry_after("192.0.2.2") == 0  # per address
    clock.advance(299)
    assert 0 < limiter.retry_after("192.0.2.1") <= 1
    clock.advance(2)
    assert limiter.retry_after("192.0.2.1") == 0
    limiter.failed("192.0.2.1")
    limiter.succeeded("192.0.2.1")
    assert limiter.retry_after("192.0.2.1") == 0


def test_a_session_a_newer_api_stored_is_read_by_an_older_one() -> None:
    session = Session("key", "k1", "ops", "operator", "csrf", 1e9, 2e9, ["a@example.test"])
    newer = {**json.loads(session.encode()), "from_a_newer_version": {"x": 1}}
    assert Session.decode(json.dumps(newer).encode()) == session


async def test_the_console_is_served_from_the_package_with_a_strict_policy(
    api: httpx.AsyncClient,
) -> None:
    files = sorted(p.relative_to(ASSETS).as_posix() for p in ASSETS.rglob("*") if p.is_file())
    assert "index.html" in files and "js/main.js" in files
    for name in files:
        resp = await api.get("/console/" + name)
        assert resp.status_code == 200, name
        csp = resp.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
        text = resp.text
        # Offline: nothing is loaded from another origin.
        assert "http://" not in text and "https://" not in text, name
    js = await api.get("/console/js/api.js")
    assert "javascript" in js.headers["content-type"]


async def test_a_login_gives_a_key_or_a_user_name_and_password(api: httpx.AsyncClient) -> None:
    for body in (
        {},
        {"login": "a@example.org"},
        {"password": "x"},
        {"api_key": "elemta_x", "login": "a@example.org", "password": "x"},
    ):
        resp = await api.post("/console/session", json=body, headers={"Authorization": ""})
        assert resp.status_code == 422, (body, resp.text)


def test_the_console_role_is_the_most_powerful_the_table_knows() -> None:
    assert console_role(["user", "operator"]) == "operator"
    assert console_role(["Admin"]) == "admin"
    assert console_role(["smtp-only"]) == ""


async def test_a_password_login_without_policy_is_unavailable_not_refused() -> None:
    cfg = load_config(env={"ELEMTA_POLICY_ADDRESS": f"127.0.0.1:{free_port()}"})
    logins = PasswordLogins(cfg)
    try:
        found = await logins.check("a@example.org", "secret", "192.0.2.1")
    finally:
        await logins.close()
    assert found.result == "unavailable"
