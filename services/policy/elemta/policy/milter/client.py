"""One message through one milter: connect, negotiate, replay the SMTP dialogue.

Elemta asks its milters at end of DATA, in one conversation per message
(as Postfix does for ``non_smtpd_milters``, and Stalwart for its milters): the
policy service may run as several replicas, so no SMTP session can be tied to
one of them. The milter sees the whole dialogue all the same — connect, HELO,
MAIL FROM, each RCPT TO, DATA, each header, end of headers, the body in
chunks, end of message — with the macros Postfix would send, and answers at
any step. A refusal at any step refuses the message.

Timeouts, as Postfix's: ``connect_timeout`` to reach the milter,
``command_timeout`` for each step up to DATA, ``content_timeout`` for headers,
body and end of message. ``SMFIR_PROGRESS`` restarts the wait.
"""

from __future__ import annotations

import asyncio
import logging
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .message import MessageState
from .protocol import (
    CHUNK,
    STAGE_COMMAND,
    Action,
    Cmd,
    MacroStage,
    MilterProtocolError,
    Negotiated,
    Proto,
    Reply,
    offer,
    pack_strings,
    parse_negotiation,
    read_packet,
    split_strings,
    write_packet,
)

__all__ = ["MilterAddress", "MilterError", "MilterResult", "MilterSettings", "converse"]

log = logging.getLogger(__name__)


class MilterError(Exception):
    """The milter could not be asked: unreachable, too slow, or it broke the protocol."""


@dataclass(frozen=True)
class MilterAddress:
    """``inet:host:port``, ``inet:[v6]:port`` or ``unix:/path`` (``local:`` too)."""

    kind: str  # "inet" | "unix"
    host: str
    port: int = 0

    @classmethod
    def parse(cls, text: str) -> MilterAddress:
        kind, sep, rest = text.strip().partition(":")
        if sep and kind in ("unix", "local") and rest:
            return cls("unix", rest)
        if sep and kind in ("inet", "inet6") and rest:
            m = re.match(r"^(?:\[(?P<v6>[^\]]+)\]|(?P<host>[^:\[\]]+)):(?P<port>\d{1,5})$", rest)
            if m and 0 < int(m.group("port")) < 65536:
                return cls("inet", m.group("v6") or m.group("host"), int(m.group("port")))
        raise ValueError(f"milter address must be inet:host:port or unix:/path, not {text!r}")

    def __str__(self) -> str:
        if self.kind == "unix":
            return f"unix:{self.host}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"inet:{host}:{self.port}"


@dataclass(frozen=True)
class MilterSettings:
    """One milter and how it is asked (Postfix's ``milter_*`` parameters)."""

    address: MilterAddress
    name: str = ""
    default_action: str = "tempfail"  # accept | reject | tempfail | quarantine
    protocol: int = 6
    connect_timeout: float = 5.0
    command_timeout: float = 5.0
    content_timeout: float = 8.0
    hostname: str = "localhost"  # our name: the j macro

    def __post_init__(self) -> None:
        offer(self.protocol)  # raises on a version no one speaks
        if self.default_action not in ("accept", "reject", "tempfail", "quarantine"):
            raise ValueError(f"milter default action {self.default_action!r}")

    @property
    def label(self) -> str:
        return self.name or str(self.address)


@dataclass
class MilterResult:
    """How the milter answered: ``accept`` (or ``continue`` through to the end),
    ``reject``/``tempfail`` with the reply, ``discard``, and whether it asked
    for quarantine. Its edits are already applied to the message state."""

    action: str  # "accept" | "reject" | "tempfail" | "discard"
    reply: str = ""  # "550 5.7.1 text" for reject/tempfail
    quarantine: str | None = None  # the reason, when quarantined
    stage: str = ""  # where the milter decided
    edits: list[str] = field(default_factory=list)  # the modification actions taken


REJECTED = "550 5.7.1 Command rejected"
TEMPFAILED = "451 4.7.1 Service unavailable - try again later"
CLOSING = "451 4.7.0 Service unavailable - milter closing connection"
_REPLY = re.compile(r"^([45])(\d\d)(?:[ -]+([45]\.\d{1,3}\.\d{1,3}))?\s*(.*)$", re.S)


def parse_replycode(data: bytes) -> tuple[str, str]:
    """``SMFIR_REPLYCODE`` text as ``(action, "code x.y.z text")``; multi-line
    replies are joined on one line. A code outside 4xx/5xx breaks the protocol."""
    text = data.rstrip(b"\0").decode("utf-8", "replace")
    lines = [ln for ln in re.split(r"\r?\n", text) if ln.strip()]
    m = _REPLY.match(lines[0].strip()) if lines else None
    if not m:
        raise MilterProtocolError(f"bad reply code {text[:80]!r}")
    code = m.group(1) + m.group(2)
    enhanced = m.group(3) or f"{m.group(1)}.7.1"
    words = [m.group(4).strip()]
    for line in lines[1:]:
        more = _REPLY.match(line.strip())
        words.append(more.group(4).strip() if more else line.strip())
    refused = code[0] == "5"
    default = "Command rejected" if refused else "Service unavailable - try again later"
    reason = " ".join(w for w in words if w).replace("%%", "%") or default
    return ("reject" if refused else "tempfail"), f"{code} {enhanced} {reason}"


class _Decided(Exception):
    """The milter answered with something other than ``continue``: the conversation ends."""

    def __init__(self, result: MilterResult) -> None:
        self.result = result


class _Conversation:
    def __init__(
        self,
        settings: MilterSettings,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.s = settings
        self.reader = reader
        self.writer = writer
        self.neg = Negotiated(settings.protocol, Action(0), Proto(0))
        self.stage = "negotiation"

    async def send(self, cmd: bytes, data: bytes = b"", wait: float | None = None) -> None:
        """Send a command; a milter that stops reading counts as not answering."""
        wait = self.s.command_timeout if wait is None else wait
        try:
            await asyncio.wait_for(write_packet(self.writer, cmd, data), wait)
        except TimeoutError:
            raise MilterError(f"milter stopped reading at {self.stage}") from None

    async def reply(self, wait: float) -> tuple[bytes, bytes]:
        """The next reply that is not ``SMFIR_PROGRESS`` (which restarts the clock)."""
        while True:
            try:
                packet = await asyncio.wait_for(read_packet(self.reader), wait)
            except TimeoutError:
                raise MilterError(f"no answer within {wait:g}s at {self.stage}") from None
            if packet.cmd != Reply.PROGRESS:
                return packet.cmd, packet.data

    async def negotiate(self) -> None:
        actions, proto = offer(self.s.protocol)
        await self.send(Cmd.OPTNEG, struct.pack("!III", self.s.protocol, actions, proto))
        cmd, data = await self.reply(self.s.command_timeout)
        if cmd != Reply.OPTNEG:
            raise MilterProtocolError(f"expected option negotiation, got {cmd!r}")
        self.neg = parse_negotiation(data, self.s.protocol)

    def wants(self, flag: Proto) -> bool:
        return not self.neg.proto & flag

    async def macros(self, stage: MacroStage, values: Mapping[str, str]) -> None:
        names = self.neg.macros.get(stage)
        chosen = values if names is None else {n: values[n] for n in names if n in values}
        if not chosen:
            return
        pairs = [p for name, value in chosen.items() for p in (name.encode(), value.encode())]
        await self.send(Cmd.MACRO, STAGE_COMMAND[stage] + pack_strings(*pairs))

    async def step(
        self, stage: str, cmd: bytes, data: bytes, no_reply: Proto, wait: float
    ) -> bytes:
        """Send one command; the milter's answer (``c`` when it gives none)."""
        self.stage = stage
        await self.send(cmd, data, wait)
        if self.neg.proto & no_reply:
            return Reply.CONTINUE
        answer, payload = await self.reply(wait)
        return self.verdict(answer, payload, skippable=cmd in (Cmd.RCPT, Cmd.HEADER, Cmd.BODY))

    def verdict(self, answer: bytes, payload: bytes, skippable: bool = False) -> bytes:
        """``c`` (or ``s``) to go on; raise :class:`_Decided` for a verdict."""
        if answer == Reply.CONTINUE or (answer == Reply.SKIP and skippable):
            return answer
        if answer == Reply.ACCEPT:
            raise _Decided(MilterResult("accept", stage=self.stage))
        if answer == Reply.REJECT:
            raise _Decided(MilterResult("reject", REJECTED, stage=self.stage))
        if answer == Reply.TEMPFAIL:
            raise _Decided(MilterResult("tempfail", TEMPFAILED, stage=self.stage))
        if answer == Reply.DISCARD:
            raise _Decided(MilterResult("discard", stage=self.stage))
        if answer == Reply.REPLYCODE:
            action, reply = parse_replycode(payload)
            raise _Decided(MilterResult(action, reply, stage=self.stage))
        if answer in (Reply.CONN_FAIL, Reply.SHUTDOWN):
            raise _Decided(MilterResult("tempfail", CLOSING, stage=self.stage))
        raise MilterProtocolError(f"unexpected reply {answer!r} at {self.stage}")


def _macros(session: Mapping[str, Any], settings: MilterSettings) -> dict[str, str]:
    ip = str(session.get("client_ip") or "")
    name = str(session.get("client_hostname") or "") or (f"[{ip}]" if ip else "unknown")
    values = {
        "j": settings.hostname,
        "{daemon_name}": "elemta",
        "v": "Elemta",
        "_": f"{name} [{ip}]" if ip else name,
        "{client_addr}": ip,
        "{client_name}": name,
        "{client_port}": str(session.get("client_port") or 0),
        "i": str(session.get("queue_id") or ""),
    }
    user = str(session.get("user") or "")
    if user:
        values["{auth_type}"] = str(session.get("auth_type") or "PLAIN")
        values["{auth_authen}"] = user
    if session.get("tls"):
        values["{tls_version}"] = str(session.get("tls_version") or "TLS")
    return values


def _connect_data(session: Mapping[str, Any], hostname: str) -> bytes:
    ip = str(session.get("client_ip") or "")
    port = int(session.get("client_port") or 0)
    if not ip:
        return pack_strings(hostname.encode()) + b"U"
    family = b"6" if ":" in ip else b"4"
    return hostname.encode() + b"\0" + family + struct.pack("!H", port) + ip.encode() + b"\0"


async def _open(settings: MilterSettings) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    address = settings.address
    try:
        if address.kind == "unix":
            opening = asyncio.open_unix_connection(address.host)
        else:
            opening = asyncio.open_connection(address.host, address.port)
        return await asyncio.wait_for(opening, settings.connect_timeout)
    except TimeoutError:
        raise MilterError(f"cannot connect within {settings.connect_timeout:g}s") from None
    except OSError as exc:
        raise MilterError(f"cannot connect: {exc.strerror or exc}") from None


async def converse(
    settings: MilterSettings, session: Mapping[str, Any], state: MessageState
) -> MilterResult:
    """Run one message through one milter; its edits are applied to ``state``.

    Raises :class:`MilterError` when the milter cannot give an answer; the
    caller applies the default action.
    """
    reader, writer = await _open(settings)
    talk = _Conversation(settings, reader, writer)
    try:
        return await _dialogue(talk, session, state)
    except MilterProtocolError as exc:
        raise MilterError(f"protocol error at {talk.stage}: {exc}") from None
    except OSError as exc:
        raise MilterError(f"connection failed at {talk.stage}: {exc}") from None
    finally:
        if not writer.is_closing():
            writer.write(struct.pack("!I", 1) + Cmd.QUIT)
        writer.close()
        try:
            await asyncio.wait_for(writer.wait_closed(), 1.0)
        except (OSError, TimeoutError):
            pass


async def _dialogue(
    talk: _Conversation, session: Mapping[str, Any], state: MessageState
) -> MilterResult:
    s = talk.s
    await talk.negotiate()
    macros = _macros(session, s)
    command, content = s.command_timeout, s.content_timeout
    try:
        if talk.wants(Proto.NOCONNECT):
            await talk.macros(MacroStage.CONNECT, macros)
            hostname = macros["{client_name}"]
            data = _connect_data(session, hostname)
            await talk.step("connect", Cmd.CONNECT, data, Proto.NR_CONN, command)
        helo = str(session.get("helo") or "")
        if helo and talk.wants(Proto.NOHELO):
            await talk.macros(MacroStage.HELO, macros)
            await talk.step("helo", Cmd.HELO, pack_strings(helo.encode()), Proto.NR_HELO, command)
        if talk.wants(Proto.NOMAIL):
            await talk.macros(MacroStage.ENVFROM, {**macros, "{mail_addr}": state.sender})
            data = pack_strings(f"<{state.sender}>".encode())
            await talk.step("mail", Cmd.MAIL, data, Proto.NR_MAIL, command)
        if talk.wants(Proto.NORCPT):
            for rcpt in list(state.recipients):
                domain = rcpt.rpartition("@")[2]
                rcpt_macros = {"{rcpt_addr}": rcpt, "{rcpt_host}": domain, "{rcpt_mailer}": "smtp"}
                await talk.macros(MacroStage.ENVRCPT, {**macros, **rcpt_macros})
                data = pack_strings(f"<{rcpt}>".encode())
                if await talk.step("rcpt", Cmd.RCPT, data, Proto.NR_RCPT, command) == Reply.SKIP:
                    break
        if talk.neg.version >= 4 and talk.wants(Proto.NODATA):
            await talk.macros(MacroStage.DATA, macros)
            await talk.step("data", Cmd.DATA, b"", Proto.NR_DATA, command)
        if talk.wants(Proto.NOHDRS):
            leading = bool(talk.neg.proto & Proto.HDR_LEADSPC)
            for name, value in state.headers(leading):
                data = pack_strings(name, value)
                if await talk.step("header", Cmd.HEADER, data, Proto.NR_HDR, content) == Reply.SKIP:
                    break
        if talk.wants(Proto.NOEOH):
            await talk.macros(MacroStage.EOH, macros)
            await talk.step("end of headers", Cmd.EOH, b"", Proto.NR_EOH, content)
        if talk.wants(Proto.NOBODY):
            for i in range(0, len(state.body), CHUNK):
                chunk = state.body[i : i + CHUNK]
                if await talk.step("body", Cmd.BODY, chunk, Proto.NR_BODY, content) == Reply.SKIP:
                    break
        await talk.macros(MacroStage.EOM, macros)
        return await _end_of_message(talk, state)
    except _Decided as decided:
        return decided.result


async def _end_of_message(talk: _Conversation, state: MessageState) -> MilterResult:
    """Read edits until the final reply; apply them only if the message is accepted."""
    talk.stage = "end of message"
    await talk.send(Cmd.BODYEOB)
    allowed = talk.neg.actions
    leading = bool(talk.neg.proto & Proto.HDR_LEADSPC)
    edits: list[tuple[bytes, bytes]] = []
    quarantine: str | None = None
    while True:
        answer, payload = await talk.reply(talk.s.content_timeout)
        needed = _EDIT_ACTIONS.get(answer)
        if needed is not None:
            if not allowed & needed:
                raise MilterProtocolError(f"edit {answer!r} was not negotiated")
            edits.append((answer, payload))
            continue
        if answer == Reply.QUARANTINE:
            if not allowed & Action.QUARANTINE:
                raise MilterProtocolError("quarantine was not negotiated")
            quarantine = payload.rstrip(b"\0").decode("utf-8", "replace") or "milter"
            continue
        if answer == Reply.SKIP:
            raise MilterProtocolError("skip at end of message")
        try:
            talk.verdict(answer, payload)
        except _Decided as decided:
            result = decided.result
            if result.action != "accept":
                return result
        else:  # continue at end of message: accepted
            pass
        ops = [_parse_edit(answer_, data) for answer_, data in _bodies_joined(edits)]
        names = [_apply(state, op, leading) for op in ops]
        return MilterResult("accept", quarantine=quarantine, stage=talk.stage, edits=names)


_EDIT_ACTIONS = {
    Reply.ADDHEADER: Action.ADDHDRS,
    Reply.INSHEADER: Action.ADDHDRS,
    Reply.CHGHEADER: Action.CHGHDRS,
    Reply.REPLBODY: Action.CHGBODY,
    Reply.CHGFROM: Action.CHGFROM,
    Reply.ADDRCPT: Action.ADDRCPT,
    Reply.ADDRCPT_PAR: Action.ADDRCPT_PAR,
    Reply.DELRCPT: Action.DELRCPT,
}


def _bodies_joined(edits: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The edits in order, the ``SMFIR_REPLBODY`` chunks joined into one at the first."""
    chunks = [data for answer, data in edits if answer == Reply.REPLBODY]
    out: list[tuple[bytes, bytes]] = []
    body_done = False
    for answer, data in edits:
        if answer == Reply.REPLBODY:
            if not body_done:
                out.append((answer, b"".join(chunks)))
                body_done = True
            continue
        out.append((answer, data))
    return out


@dataclass
class _Edit:
    kind: str
    index: int = 0
    name: bytes = b""
    value: bytes = b""
    address: str = ""


_FIELD_NAME = re.compile(rb"^[!-9;-~]{1,200}$")


def _header(data: bytes) -> tuple[bytes, bytes]:
    name, value = split_strings(data, 2)
    if not _FIELD_NAME.match(name):
        raise MilterProtocolError(f"bad header name {name[:80]!r}")
    return name, value


def _parse_edit(answer: bytes, data: bytes) -> _Edit:
    """One edit, checked before any is applied: a malformed one breaks the protocol."""
    if answer == Reply.ADDHEADER:
        name, value = _header(data)
        return _Edit("add header", name=name, value=value)
    if answer in (Reply.INSHEADER, Reply.CHGHEADER):
        if len(data) < 4:
            raise MilterProtocolError("header edit without an index")
        (index,) = struct.unpack("!I", data[:4])
        name, value = _header(data[4:])
        if answer == Reply.INSHEADER:
            return _Edit("insert header", index, name, value)
        return _Edit("change header" if value.strip() else "delete header", index, name, value)
    if answer == Reply.REPLBODY:
        return _Edit("replace body", value=data)
    (first,) = split_strings(data, 1)
    address = first.decode("utf-8", "replace").strip()
    if not address and answer != Reply.CHGFROM:
        raise MilterProtocolError(f"edit {answer!r} without an address")
    if any(c in address for c in "\r\n\0"):
        raise MilterProtocolError(f"edit {answer!r} with a broken address")
    kind = {
        Reply.CHGFROM: "change sender",
        Reply.ADDRCPT: "add recipient",
        Reply.ADDRCPT_PAR: "add recipient",
        Reply.DELRCPT: "delete recipient",
    }[answer]
    return _Edit(kind, address=address)


def _apply(state: MessageState, edit: _Edit, leading: bool) -> str:
    """Apply one checked edit; its name, for the record."""
    if edit.kind == "add header":
        state.add_header(edit.name, edit.value, leading)
    elif edit.kind == "insert header":
        state.insert_header(edit.index, edit.name, edit.value, leading)
    elif edit.kind in ("change header", "delete header"):
        state.change_header(edit.index, edit.name, edit.value, leading)
    elif edit.kind == "replace body":
        state.replace_body(edit.value)
    elif edit.kind == "change sender":
        state.change_sender(edit.address)
    elif edit.kind == "add recipient":
        state.add_recipient(edit.address)
    else:
        state.delete_recipient(edit.address)
    return edit.kind
