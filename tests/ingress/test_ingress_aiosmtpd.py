"""What ingress relies on inside aiosmtpd, pinned against the version in use.

``protocol.py`` lists these reaches. When aiosmtpd is upgraded, these tests say
whether each still holds; the version check below says to read them again.
"""

from __future__ import annotations

import asyncio
import logging

import aiosmtpd
import aiosmtpd.smtp
from ingress_harness import CoalescingTLSClient, RawSMTP, wait_until

from elemta.ingress.chunking import ChunkingCommands
from elemta.ingress.protocol import IngressSMTP
from elemta.ingress.smtpauth import AuthCommands

# The version whose insides these tests were written against. After an upgrade,
# check each test below (and the list in protocol.py), then move this on.
PINNED = "1.4.6"


def test_the_aiosmtpd_in_use_is_the_one_these_reaches_were_checked_against():
    assert aiosmtpd.__version__ == PINNED, (
        "aiosmtpd changed: re-check the reaches listed in elemta/ingress/protocol.py"
    )


def test_a_session_reads_its_stream_from_the_reader_aiosmtpd_keeps(ingress):
    with RawSMTP(ingress.port) as c:
        c.reply()
        wait_until(lambda: ingress.svc.server.sessions, what="the session")
        (session,) = ingress.svc.server.sessions
        assert isinstance(session, IngressSMTP)
        assert isinstance(session._reader, asyncio.StreamReader)


def test_aiosmtpd_starts_a_new_session_with_ssl_set_once_tls_is_up(ingress):
    with RawSMTP(ingress.port) as c:
        c.reply()
        c.cmd(b"EHLO client.test")
        (session,) = ingress.svc.server.sessions
        assert session.session.ssl is None and not session.tls
        c.cmd(b"STARTTLS")
        client = CoalescingTLSClient(c.sock)
        # the greeting from before TLS does not count inside it (RFC 3207 4.2)
        client.handshake_then(b"MAIL FROM:<a@client.test>\r\n")
        assert client.reply() == b"503 5.5.1 Error: send HELO/EHLO first\r\n"
        assert session.tls and session.session.ssl is not None


def test_aiosmtpd_drops_plaintext_pipelined_after_starttls_when_the_handshake_completes(
    ingress,
):
    with RawSMTP(ingress.port) as c:
        c.reply()
        c.cmd(b"EHLO client.test")
        c.send(b"STARTTLS\r\nRSET\r\nRSET\r\n")
        assert c.reply() == b"220 2.0.0 Ready to start TLS\r\n"
        client = CoalescingTLSClient(c.sock)
        client.handshake_then(b"NOOP\r\n")
        # one reply, to the NOOP: the plaintext RSETs were never run
        assert client.reply() == b"250 2.0.0 Ok\r\n"


def test_aiosmtpd_answers_what_it_answers_itself_through_push(ingress):
    with RawSMTP(ingress.port) as c:
        c.reply()
        c.cmd(b"EHLO client.test")
        assert c.cmd(b"B\x00GUS") == b'500 5.5.2 Error: command "B?GUS" not recognized\r\n'
        assert c.cmd(b"") == b"500 5.5.2 Error: bad syntax\r\n"
        assert c.cmd(b"X" * 600) == b"500 5.5.2 Line too long\r\n"


def test_aiosmtpd_logs_through_the_logger_ingress_makes_printable():
    assert aiosmtpd.smtp.log is logging.getLogger("mail.log")
    assert any(type(f).__name__ == "PrintableLogs" for f in aiosmtpd.smtp.log.filters)


def test_a_session_finds_the_auth_mechanisms_commands_and_hooks_aiosmtpd_finds_itself():
    """sessioninit answers aiosmtpd's getmembers/dir from a per-class cache, and
    ingress installs it."""
    import inspect

    from elemta.ingress import sessioninit

    assert isinstance(aiosmtpd.smtp.__dict__.get("inspect"), sessioninit._Inspect)

    class Handler:
        async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
            return "250 OK"

        async def auth_EXAMPLE(self, server, args):  # type: ignore[no-untyped-def]
            return None

    loop = asyncio.new_event_loop()
    try:
        sessioninit.install()
        cached = [aiosmtpd.smtp.SMTP(Handler(), loop=loop, hostname="h") for _ in range(2)]
        aiosmtpd.smtp.inspect = inspect  # type: ignore[attr-defined]
        del aiosmtpd.smtp.dir  # type: ignore[attr-defined]
        try:
            plain = aiosmtpd.smtp.SMTP(Handler(), loop=loop, hostname="h")
        finally:
            sessioninit.install()
    finally:
        loop.close()
    for session in cached:
        assert sorted(session._auth_methods) == sorted(plain._auth_methods)
        assert sorted(session._smtp_methods) == sorted(plain._smtp_methods)
        assert sorted(session._handle_hooks) == sorted(plain._handle_hooks)
        # bound to the session (and its handler) at hand, not to the first one
        assert all(m.__self__ is session for m in session._smtp_methods.values())
        assert session._auth_methods["EXAMPLE"].method.__self__ is session.event_handler
    assert "EXAMPLE" in plain._auth_methods and "DATA" in plain._handle_hooks


def test_an_ingress_session_has_the_commands_and_auth_mechanisms_aiosmtpd_would_give_it(ingress):
    """Ingress sessions bind their commands when used (sessioninit.BoundCommands);
    what they answer to is what aiosmtpd itself finds on the class."""
    import inspect

    from elemta.ingress import sessioninit

    with RawSMTP(ingress.port) as c:
        c.reply()
        wait_until(lambda: ingress.svc.server.sessions, what="the session")
        (session,) = ingress.svc.server.sessions
        assert getattr(IngressSMTP, sessioninit.LAZY)
        commands = {n[5:] for n in dir(session) if n.startswith("smtp_")}
        assert sorted(session._smtp_methods) == sorted(commands)
        assert all(m.__self__ is session for m in session._smtp_methods.values())
        assert session._smtp_methods["MAIL"] == session.smtp_MAIL
        # AUTH and BDAT are the mixins' (ahead of SMTP), not aiosmtpd's own AUTH
        assert session._smtp_methods["AUTH"].__func__ is AuthCommands.smtp_AUTH
        assert session._smtp_methods["BDAT"].__func__ is ChunkingCommands.smtp_BDAT
        assert session._smtp_methods.get("NOPE") is None
        # the mechanisms aiosmtpd offers itself are excluded: ingress does AUTH
        builtin = {n for n, _ in inspect.getmembers(session) if n.startswith("auth_")}
        assert builtin and session._auth_methods == {}
        assert c.cmd(b"HELP").startswith(b"250 ")
