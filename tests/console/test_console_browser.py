"""The web console in a real headless Chromium (Debian's ``chromium``, driven by
Playwright) against the running system (nats-server, policy, queue, delivery,
ingress and api as processes): log in, find a message by its sender, hold it (and
delivery leaves it alone), release it (and it is delivered), create an API key
(shown once, and it works) and revoke it (then it is refused).

Screenshots of the dashboard and of the message detail go to
``$ELEMTA_CONSOLE_SCREENSHOTS`` when set (``make console-screenshots`` writes the
ones in docs/), else to the test's temporary folder.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect, sync_playwright

from support.apiserver import make_keys
from support.dnsserver import DnsServer
from support.natsserver import NatsServer
from support.smtpsink import SmtpSink
from support.stack import ELEMTA, Stack

DOMAIN = "console.test"
ADMIN = "root@example.test"
READER = "alice.console@client.test"  # role user: sees the mail of its own address
PASSWORD = "correct horse battery staple"
CHROMIUM = os.environ.get("ELEMTA_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"


class Console:
    """The running stack, a sink for ``DOMAIN``, an admin key and a browser page."""

    def __init__(self, stack: Stack, sink: SmtpSink, token: str, page: Page) -> None:
        self.stack = stack
        self.sink = sink
        self.token = token
        self.page = page
        self.http = httpx.Client(
            base_url=stack.api_url, headers={"Authorization": f"Bearer {token}"}, timeout=30
        )

    def send(self, sender: str, rcpt: str, subject: str) -> str:
        body = f"From: <{sender}>\r\nTo: <{rcpt}>\r\nSubject: {subject}\r\n\r\nHello.\r\n"
        code, reply = self.stack.send(sender, [rcpt], body)
        assert code == 250, reply
        return reply.decode().rsplit(" ", 1)[1]

    def state(self, qid: str) -> str:
        resp = self.http.get("/api/v1/messages", params={"limit": 1000})
        found = resp.json()["messages"]
        return next((m["state"] for m in found if m["id"] == qid), "gone")

    def wait(self, what: Callable[[], bool], why: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not what():
            assert time.monotonic() < deadline, why
            time.sleep(0.1)

    def attempts_to(self, rcpt: str) -> int:
        return sum(1 for _, r, _ in self.sink.rcpt_log if r == rcpt)


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory, shared_dns: DnsServer) -> Iterator[Console]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"no Chromium at {CHROMIUM}: `make test` installs Debian's chromium")
    workdir = tmp_path_factory.mktemp("console")
    nats = NatsServer(workdir / "nats")
    nats.start()
    sink = SmtpSink().start()
    stack = Stack(
        workdir / "stack",
        nats.url,
        shared_dns.port,
        {
            "transport": {"routes": {DOMAIN: f"smtp:[127.0.0.1]:{sink.port}"}},
            # A deferred message waits a minute: only an action delivers it sooner.
            "queue": {"retry_schedule": [60.0], "retry_jitter": 0.0, "scheduler_interval": 0.2},
        },
    )
    try:
        stack.start("policy", "queue", "delivery", "ingress", "api")
        # Before Playwright: its synchronous API runs an event loop in this thread.
        token = asyncio.run(make_keys(nats.url))["admin"]
        add_user(stack, ADMIN, "admin")
        add_user(stack, READER, "user")
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
            context = browser.new_context(viewport={"width": 1280, "height": 860})
            page = context.new_page()
            page.set_default_timeout(15_000)
            try:
                yield Console(stack, sink, token, page)
            finally:
                browser.close()
    finally:
        stack.stop()
        sink.stop()
        nats.stop()


def add_user(stack: Stack, login: str, role: str) -> None:
    proc = subprocess.run(
        [ELEMTA, "user", "add", login, "--role", role, "--password-stdin",
         "--config", str(stack.config_path)],
        input=PASSWORD + "\n", capture_output=True, text=True, env=stack.env(), timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr


def shots(tmp_path: Path) -> Path:
    where = os.environ.get("ELEMTA_CONSOLE_SCREENSHOTS")
    return Path(where) if where else tmp_path


def test_log_in_find_hold_release_and_manage_keys(console: Console, tmp_path: Path) -> None:
    page = console.page
    out = shots(tmp_path)

    # A message whose destination answers 451 for now: deferred, waiting a minute.
    rcpt = f"bob@{DOMAIN}"
    sender = "alice.console@client.test"
    console.sink.rcpt_replies[rcpt] = "451 4.3.0 try again later"
    qid = console.send(sender, rcpt, "Quarterly report")
    console.send("other@client.test", f"carol@{DOMAIN}", "Something else")
    console.wait(lambda: console.state(qid) == "deferred", f"{qid} never deferred")

    # Log in with a user name and password (the user store, through policy).
    page.goto(console.stack.api_url + "/")
    page.fill("#login", ADMIN)
    page.fill("#password", "wrong")
    page.click("#login-form button[type=submit]")
    expect(page.locator("#login-error")).to_contain_text("wrong user name or password")
    page.fill("#password", PASSWORD)
    page.click("#login-form button[type=submit]")
    expect(page.locator("h1")).to_have_text("Dashboard")
    expect(page.locator("#who")).to_contain_text(f"{ADMIN} · admin")
    expect(page.locator("#by-state [data-state=deferred] .n")).to_have_text("1")
    expect(page.get_by_role("cell", name=DOMAIN)).to_be_visible()
    expect(page.locator("#health tr[data-service]")).to_have_count(5)
    expect(page.locator("#health tr[data-service=api]")).to_contain_text("ready")
    page.screenshot(path=str(out / "console-dashboard.png"), full_page=True)

    # Find it by its sender.
    page.click("#nav a[data-path=messages]")
    page.fill("#search input[name=sender]", sender)
    page.click("#search button[type=submit]")
    rows = page.locator("tr[data-id]")
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-id", qid)
    rows.first.click()
    expect(page.locator("h1")).to_contain_text(qid)
    expect(page.locator("#envelope")).to_contain_text(sender)
    expect(page.locator("#history")).to_contain_text("deferred")
    expect(page.locator("#headers")).to_contain_text("Subject: Quarterly report")
    page.screenshot(path=str(out / "console-message.png"), full_page=True)

    # Hold: the destination would accept now, but a held message gets no attempt.
    tried = console.attempts_to(rcpt)
    page.click("#actions button[data-action=hold]")
    expect(page.locator("h1 .state")).to_have_text("held")
    assert console.state(qid) == "held"
    del console.sink.rcpt_replies[rcpt]
    console.http.post(f"/api/v1/messages/{qid}/retry").raise_for_status()  # its parked retry
    console.wait(
        lambda: console.http.get("/api/v1/queue").json()["deferred"] == 0, "parked retry stayed"
    )
    assert console.attempts_to(rcpt) == tried and console.state(qid) == "held"
    expect(page.locator("#actions button[data-action=retry]")).to_have_count(0)

    # Release: delivered.
    page.click("#actions button[data-action=release]")
    console.wait(lambda: rcpt in console.sink.recipients(), "not delivered after release")
    page.reload()
    expect(page.locator("#history")).to_contain_text("released")

    # Create a key: its secret is shown once, and it works.
    page.click("#nav a[data-path=keys]")
    page.fill("#create-key input[name=label]", "browser made")
    page.select_option("#create-key select[name=role]", "readonly")
    page.click("#create-key button[type=submit]")
    token = page.locator("#new-key-token").inner_text().strip()
    assert token.startswith("elemta_")
    me = httpx.get(
        console.stack.api_url + "/api/v1/me", headers={"Authorization": f"Bearer {token}"}
    )
    assert me.status_code == 200 and me.json()["role"] == "readonly"

    # Revoke it: refused from then on.
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("tr[data-label='browser made'] button")
    expect(page.locator("tr[data-label='browser made']")).to_have_count(0)
    me = httpx.get(
        console.stack.api_url + "/api/v1/me", headers={"Authorization": f"Bearer {token}"}
    )
    assert me.status_code == 401

    # The audit log shows what was done through the console.
    page.click("#nav a[data-path=audit]")
    expect(page.locator("main table")).to_contain_text("queue.hold")
    expect(page.locator("main table")).to_contain_text("key.revoke")

    # Settings: the effective configuration, secrets redacted.
    page.click("#nav a[data-path=settings]")
    expect(page.locator("main")).to_contain_text("[api]")

    # Log out; log in again with an API key.
    page.click("#logout")
    expect(page.locator("#login-error")).to_have_text("Logged out.")
    page.click("details summary")
    page.fill("#api-key", console.token)
    page.click("#key-form button[type=submit]")
    expect(page.locator("#who")).to_contain_text("test admin · admin")


def test_a_password_login_as_a_user_sees_only_its_own_mail(console: Console) -> None:
    rcpt = f"dave@{DOMAIN}"
    console.sink.rcpt_replies[rcpt] = "451 4.3.0 try again later"
    mine = console.send(READER, rcpt, "mine")
    theirs = console.send("mallory@client.test", rcpt, "theirs")
    console.wait(
        lambda: console.state(mine) == console.state(theirs) == "deferred", "never deferred"
    )
    with httpx.Client(base_url=console.stack.api_url) as browser:
        wrong = browser.post("/console/session", json={"login": READER, "password": "x"})
        assert wrong.status_code == 401
        resp = browser.post("/console/session", json={"login": READER, "password": PASSWORD})
        assert resp.status_code == 201, resp.text
        info = resp.json()
        assert (info["kind"], info["role"]) == ("user", "user")
        assert "queue.act" not in info["permissions"]
        seen = [m["id"] for m in browser.get("/api/v1/messages").json()["messages"]]
        assert seen == [mine]
        assert browser.get(f"/api/v1/messages/{theirs}").status_code == 404
        assert browser.get("/api/v1/queue/summary").status_code == 403
