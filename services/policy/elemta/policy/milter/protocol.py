"""The milter wire protocol (Sendmail milter version 6, as Postfix speaks it).

Every packet is a 4-byte big-endian length (counting the command byte), one
command byte, then its data; strings are NUL-terminated. The MTA sends
commands (``SMFIC_*``), the milter answers with replies (``SMFIR_*``).

A session opens with option negotiation: the MTA offers a protocol version,
the actions it allows (``SMFIF_*``: which modifications) and the protocol
steps it can leave out or leave unanswered (``SMFIP_*``); the milter answers
with the subset it wants and, optionally, the macros it wants at each stage.
What an MTA offers depends on its ``milter_protocol`` version (Postfix's
``milter_protocol``: 2, 3, 4 or 6).
"""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass, field
from enum import IntEnum, IntFlag

__all__ = [
    "Action",
    "Cmd",
    "MacroStage",
    "MilterProtocolError",
    "Negotiated",
    "Packet",
    "Proto",
    "Reply",
    "offer",
    "pack_strings",
    "parse_negotiation",
    "read_packet",
    "split_strings",
    "write_packet",
]

# The largest reply accepted: a body chunk is at most 64 KiB unless the MTA
# offers bigger ones (SMFIP_MDS_*), which Elemta does not.
MAX_PACKET = 1024 * 1024
CHUNK = 65535  # MILTER_CHUNK_SIZE: body chunks sent to the milter


class MilterProtocolError(Exception):
    """The milter broke the protocol: a malformed or unexpected packet."""


class Cmd:
    """Commands, MTA to milter (``SMFIC_*``)."""

    ABORT = b"A"
    BODY = b"B"
    CONNECT = b"C"
    MACRO = b"D"
    BODYEOB = b"E"
    HELO = b"H"
    QUIT_NC = b"K"
    HEADER = b"L"
    MAIL = b"M"
    EOH = b"N"
    OPTNEG = b"O"
    QUIT = b"Q"
    RCPT = b"R"
    DATA = b"T"
    UNKNOWN = b"U"


class Reply:
    """Replies, milter to MTA (``SMFIR_*``)."""

    ADDRCPT = b"+"
    DELRCPT = b"-"
    ADDRCPT_PAR = b"2"
    SHUTDOWN = b"4"
    ACCEPT = b"a"
    REPLBODY = b"b"
    CONTINUE = b"c"
    DISCARD = b"d"
    CHGFROM = b"e"
    CONN_FAIL = b"f"
    ADDHEADER = b"h"
    INSHEADER = b"i"
    SETSYMLIST = b"l"
    CHGHEADER = b"m"
    PROGRESS = b"p"
    QUARANTINE = b"q"
    REJECT = b"r"
    SKIP = b"s"
    TEMPFAIL = b"t"
    REPLYCODE = b"y"
    OPTNEG = b"O"


class Action(IntFlag):
    """What the milter may change (``SMFIF_*``)."""

    ADDHDRS = 0x01
    CHGBODY = 0x02
    ADDRCPT = 0x04
    DELRCPT = 0x08
    CHGHDRS = 0x10
    QUARANTINE = 0x20
    CHGFROM = 0x40
    ADDRCPT_PAR = 0x80
    SETSYMLIST = 0x100


class Proto(IntFlag):
    """Steps the milter does not want (``SMFIP_NO*``), does not answer
    (``SMFIP_NR_*``), and protocol options."""

    NOCONNECT = 0x01
    NOHELO = 0x02
    NOMAIL = 0x04
    NORCPT = 0x08
    NOBODY = 0x10
    NOHDRS = 0x20
    NOEOH = 0x40
    NR_HDR = 0x80
    NOUNKNOWN = 0x100
    NODATA = 0x200
    SKIP = 0x400
    RCPT_REJ = 0x800
    NR_CONN = 0x1000
    NR_HELO = 0x2000
    NR_MAIL = 0x4000
    NR_RCPT = 0x8000
    NR_DATA = 0x10000
    NR_UNKN = 0x20000
    NR_EOH = 0x40000
    NR_BODY = 0x80000
    HDR_LEADSPC = 0x100000


class MacroStage(IntEnum):
    """Stages of the macro lists a milter may ask for (``SMFIM_*``)."""

    CONNECT = 0
    HELO = 1
    ENVFROM = 2
    ENVRCPT = 3
    DATA = 4
    EOM = 5
    EOH = 6


# The command each macro stage's macros are sent before.
STAGE_COMMAND = {
    MacroStage.CONNECT: Cmd.CONNECT,
    MacroStage.HELO: Cmd.HELO,
    MacroStage.ENVFROM: Cmd.MAIL,
    MacroStage.ENVRCPT: Cmd.RCPT,
    MacroStage.DATA: Cmd.DATA,
    MacroStage.EOM: Cmd.BODYEOB,
    MacroStage.EOH: Cmd.EOH,
}

# What each protocol version lets a milter change and leave out, as Postfix
# offers it (milter8.c): version 2 knows the basic steps and edits, 3 adds
# leaving out end-of-headers, 4 quarantine, DATA, unknown commands and
# unanswered headers, 6 everything else (sender change, macro lists, skip,
# unanswered steps, leading spaces in header values).
_V2_PROTO = (
    Proto.NOCONNECT | Proto.NOHELO | Proto.NOMAIL | Proto.NORCPT | Proto.NOBODY | Proto.NOHDRS
)
_V2_ACTIONS = Action.ADDHDRS | Action.CHGBODY | Action.ADDRCPT | Action.DELRCPT | Action.CHGHDRS
VERSIONS = {
    2: (_V2_ACTIONS, _V2_PROTO),
    3: (_V2_ACTIONS, _V2_PROTO | Proto.NOEOH),
    4: (
        _V2_ACTIONS | Action.QUARANTINE,
        _V2_PROTO | Proto.NOEOH | Proto.NR_HDR | Proto.NOUNKNOWN | Proto.NODATA,
    ),
    6: (Action(0x1FF), Proto(0x1FFFFF)),
}


def offer(version: int) -> tuple[Action, Proto]:
    """The actions and protocol steps offered at ``milter_protocol = version``."""
    try:
        return VERSIONS[version]
    except KeyError:
        raise ValueError(f"milter protocol version must be one of {sorted(VERSIONS)}") from None


@dataclass
class Negotiated:
    """What the milter asked for in its option negotiation reply."""

    version: int
    actions: Action
    proto: Proto
    macros: dict[MacroStage, list[str]] = field(default_factory=dict)


def parse_negotiation(data: bytes, version: int) -> Negotiated:
    """The milter's ``SMFIC_OPTNEG`` reply; it must ask no more than was offered."""
    if len(data) < 12:
        raise MilterProtocolError(f"option negotiation reply too short ({len(data)} bytes)")
    their_version, actions, proto = struct.unpack("!III", data[:12])
    if their_version < 2:
        raise MilterProtocolError(f"milter speaks protocol version {their_version}")
    offered_actions, offered_proto = offer(version)
    if actions & ~offered_actions:
        raise MilterProtocolError(
            f"milter wants actions {actions:#x}, only {int(offered_actions):#x} offered"
        )
    if proto & ~offered_proto:
        raise MilterProtocolError(
            f"milter wants protocol steps {proto:#x}, only {int(offered_proto):#x} offered"
        )
    macros: dict[MacroStage, list[str]] = {}
    rest = data[12:]
    while len(rest) >= 4:
        (stage,) = struct.unpack("!I", rest[:4])
        names, sep, rest = rest[4:].partition(b"\0")
        if not sep:
            raise MilterProtocolError("unterminated macro list in option negotiation")
        if stage in MacroStage._value2member_map_:
            macros[MacroStage(stage)] = names.decode("ascii", "replace").split()
    return Negotiated(min(their_version, version), Action(actions), Proto(proto), macros)


@dataclass
class Packet:
    cmd: bytes
    data: bytes


def pack_strings(*parts: bytes) -> bytes:
    """NUL-terminated strings, one after another."""
    return b"".join(p + b"\0" for p in parts)


def split_strings(data: bytes, count: int) -> list[bytes]:
    """The first ``count`` NUL-terminated strings of ``data`` (the last NUL may be missing)."""
    parts = data.split(b"\0", count)
    if len(parts) < count:
        raise MilterProtocolError(f"expected {count} NUL-terminated strings in {data[:80]!r}")
    return parts[:count]


async def write_packet(writer: asyncio.StreamWriter, cmd: bytes, data: bytes = b"") -> None:
    writer.write(struct.pack("!I", len(data) + 1) + cmd + data)
    await writer.drain()


async def read_packet(reader: asyncio.StreamReader) -> Packet:
    """One packet; :class:`MilterProtocolError` on a bad length or early EOF."""
    try:
        head = await reader.readexactly(4)
        (length,) = struct.unpack("!I", head)
        if not 1 <= length <= MAX_PACKET:
            raise MilterProtocolError(f"bad packet length {length}")
        body = await reader.readexactly(length)
    except asyncio.IncompleteReadError:
        raise MilterProtocolError("milter closed the connection") from None
    return Packet(body[:1], body[1:])
