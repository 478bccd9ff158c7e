"""A milter written with purepythonmilter (PyPI) that does what each message asks.

The message chooses: HELO ``reject.helo.test`` is rejected at HELO; a sender
whose local part is ``tempfail-at-mail`` is refused at MAIL FROM; a recipient
``refused@...`` is refused at RCPT TO with a reply code. Otherwise the header
``X-Milter-Do`` names what happens at end of message:

``accept``, ``reject``, ``tempfail``, ``discard``, ``quarantine``,
``reply-5`` / ``reply-4`` (reply codes), ``edits`` (every modification
action), ``skip`` (skip the body after the first chunk and report how many
chunks came), ``hang`` (never answer).

Every message it lets through gets ``X-Milter-Seen`` with what it saw: the
macros ``i`` and ``{client_addr}``, the HELO name and the envelope.

Run: ``python tests/support/testmilter.py PORT``.
"""

from __future__ import annotations

import asyncio
import contextvars
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field

import attrs
from purepythonmilter import (
    Accept,
    AddRecipient,
    AppendHeader,
    BodyChunk,
    ChangeHeader,
    ChangeMailFrom,
    Connect,
    Continue,
    DiscardMessage,
    EndOfMessage,
    Header,
    Helo,
    InsertHeader,
    MailFrom,
    PurePythonMilter,
    RcptTo,
    Reject,
    RejectWithCode,
    RemoveRecipient,
    ReplaceBodyChunk,
    SkipToNextStage,
    TempFailWithCode,
)
from purepythonmilter.protocol.responses import (
    AbstractManipulation,
    AbstractResponse,
    VerdictOrContinue,
)

__all__ = ["TestMilter"]


@dataclass
class _Seen:
    helo: str = ""
    sender: str = ""
    rcpts: list[str] = field(default_factory=list)
    macros: dict[str, str] = field(default_factory=dict)
    todo: str = ""
    chunks: int = 0


_seen: contextvars.ContextVar[_Seen] = contextvars.ContextVar("seen")


@attrs.define(auto_attribs=False, kw_only=True)
class QuarantineWithReason(AbstractManipulation):
    """``SMFIR_QUARANTINE``; purepythonmilter 0.0.1's own ``Quarantine`` cannot be
    built (its reason is not an attrs field and it has no ``encode``)."""

    response_char = b"q"
    reason: str = attrs.field()

    def encode(self) -> bytes:
        return self.response_char + self.reason.encode() + b"\0"


def main(port: int) -> None:  # pragma: no cover - runs in its own process
    async def on_connect(cmd: Connect) -> VerdictOrContinue:
        _seen.set(_Seen(macros=dict(cmd.macros)))
        return Continue()

    async def on_helo(cmd: Helo) -> VerdictOrContinue:
        _seen.get().helo = cmd.hostname
        if cmd.hostname == "reject.helo.test":
            return Reject()
        return Continue()

    async def on_mail_from(cmd: MailFrom) -> VerdictOrContinue:
        seen = _seen.get()
        seen.sender = cmd.address
        seen.macros.update(cmd.macros)
        if cmd.address.startswith("tempfail-at-mail@"):
            return TempFailWithCode(primary_code=(4, 5, 1), enhanced_code=(4, 7, 1), text="Later")
        return Continue()

    async def on_rcpt_to(cmd: RcptTo) -> VerdictOrContinue:
        _seen.get().rcpts.append(cmd.address)
        if cmd.address.startswith("refused@"):
            return RejectWithCode(
                primary_code=(5, 5, 0), enhanced_code=(5, 1, 1), text="No such user here"
            )
        return Continue()

    async def on_header(cmd: Header) -> VerdictOrContinue:
        if cmd.name.lower() == "x-milter-do":
            _seen.get().todo = cmd.text.strip()
        return Continue()

    async def on_body_chunk(cmd: BodyChunk) -> VerdictOrContinue | SkipToNextStage:
        seen = _seen.get()
        seen.chunks += 1
        if seen.todo == "skip":
            return SkipToNextStage()
        return Continue()

    async def on_end_of_message(cmd: EndOfMessage) -> AbstractResponse:
        seen = _seen.get()
        seen.macros.update(cmd.macros)
        todo = seen.todo
        report = (
            f"i={seen.macros.get('i', '')}; client={seen.macros.get('{client_addr}', '')}; "
            f"helo={seen.helo}; from={seen.sender}; to={','.join(seen.rcpts)}"
        )
        edits: list = [AppendHeader(headername="X-Milter-Seen", headertext=report)]
        if todo == "hang":
            await asyncio.sleep(3600)
        if todo == "reject":
            return Reject()
        if todo == "tempfail":
            return TempFailWithCode(primary_code=(4, 5, 1), enhanced_code=(4, 7, 1), text="")
        if todo == "reply-5":
            return RejectWithCode(
                primary_code=(5, 5, 4), enhanced_code=(5, 7, 0), text="Not with that content"
            )
        if todo == "reply-4":
            return TempFailWithCode(
                primary_code=(4, 5, 2), enhanced_code=(4, 3, 1), text="Come back later"
            )
        if todo == "discard":
            return DiscardMessage()
        if todo == "quarantine":
            return Accept(manipulations=[*edits, QuarantineWithReason(reason="looks odd")])
        if todo == "skip":
            edits.append(AppendHeader(headername="X-Body-Chunks", headertext=str(seen.chunks)))
        if todo == "edits":
            edits += [
                InsertHeader(index=0, headername="X-Inserted", headertext="at the top"),
                ChangeHeader(headername="Subject", headertext="changed by the milter"),
                ChangeHeader(headername="X-Remove-Me", headertext=""),
                ChangeMailFrom(mail_from="<bounces@milter.test>"),
                AddRecipient(recipient="<added@local.test>"),
                RemoveRecipient(recipient="<removed@local.test>"),
                ReplaceBodyChunk(chunk=b"The milter wrote this body.\r\n"),
            ]
        return Continue(manipulations=edits)

    milter = PurePythonMilter(
        name="elemta-test-milter",
        hook_on_connect=on_connect,
        hook_on_helo=on_helo,
        hook_on_mail_from=on_mail_from,
        hook_on_rcpt_to=on_rcpt_to,
        hook_on_header=on_header,
        hook_on_body_chunk=on_body_chunk,
        hook_on_end_of_message=on_end_of_message,
        restrict_symbols=None,
        can_add_headers=True,
        can_change_headers=True,
        can_change_body=True,
        can_change_mail_from=True,
        can_add_recipients=True,
        can_remove_recipients=True,
        can_quarantine=True,
    )
    milter.run_server(host="127.0.0.1", port=port)


class TestMilter:
    """The milter above in its own process on a free port."""

    __test__ = False  # not a test class, whatever its name

    def __init__(self) -> None:
        from .dnsserver import free_port

        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"inet:127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> TestMilter:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise RuntimeError(f"test milter exited {self.proc.returncode}: {err}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("test milter did not start listening")

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stderr:
            self.proc.stderr.close()
        self.proc = None


if __name__ == "__main__":
    main(int(sys.argv[1]))
