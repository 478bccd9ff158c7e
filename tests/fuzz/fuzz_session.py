"""One fuzzed SMTP session over a real socket, and the checks on every reply.

The client keeps a model of what the server has read so far, so that it knows
how many replies to wait for: in command mode every line ending in LF gets one
reply (aiosmtpd reads commands up to LF); after ``354`` the server reads data up
to ``<CRLF>.<CRLF>`` and answers once; after ``220`` to STARTTLS the plaintext
left over is dropped and TLS starts. Every reply is checked as it arrives:

* well formed: lines of ``code[ -]text`` in printable ASCII, at most 512 octets
  each, one code per reply (RFC 5321 section 4.2);
* an enhanced status code (RFC 2034) on every reply after the greeting, except
  the HELO/EHLO answer and ``354``;
* no ``2xx`` at the end of data that has a bare CR or LF;
* no ``2xx`` to a recipient outside our domains from an untrusted client;
* an answer within ``hang`` seconds, or a closed connection: never silence.
"""

from __future__ import annotations

import re
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field

from fuzz_dialogues import OURS, Dialogue

__all__ = ["Finding", "MODES", "Outcome", "SPECIAL", "run_session"]

REPLY_LINE = re.compile(rb"^([2-5]\d\d)([ -])([\x20-\x7e]*)$")
ENHANCED = re.compile(rb"^[245]\.\d{1,3}\.\d{1,3}( |$)")
MARK = b"\r\n.\r\n"
QUEUED = re.compile(rb"queued as (\w+)")


@dataclass
class Finding:
    seed: int
    kind: str
    detail: str


@dataclass
class Outcome:
    seed: int
    replies: int = 0
    findings: list[Finding] = field(default_factory=list)
    queued: list[str] = field(default_factory=list)  # queue ids of accepted messages
    closed_by_server: bool = False


class Closed(Exception):
    """The server closed the connection."""


class Hang(Exception):
    """No reply within the allowed time, and the connection still open."""


def _client_context() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


_CONTEXT = _client_context()


class _Wire:
    """The socket, plain or (after STARTTLS) through a MemoryBIO TLS client."""

    def __init__(self, sock: socket.socket, hang: float) -> None:
        self.sock = sock
        self.hang = hang
        self.tls: ssl.SSLObject | None = None
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.buffer = b""

    def _recv(self) -> bytes:
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            raise Hang() from None
        except OSError:
            raise Closed() from None
        if not data:
            raise Closed()
        return data

    def _fill(self) -> None:
        if self.tls is None:
            self.buffer += self._recv()
            return
        while True:
            try:
                data = self.tls.read(65536)
                if not data:  # close_notify: the server ended TLS
                    raise Closed()
                self.buffer += data
                return
            except ssl.SSLWantReadError:
                self.incoming.write(self._recv())
            except (ssl.SSLError, ssl.SSLEOFError):
                raise Closed() from None

    def send(self, data: bytes) -> None:
        try:
            if self.tls is None:
                self.sock.sendall(data)
            else:
                self.tls.write(data)
                self.sock.sendall(self.outgoing.read())
        except (OSError, ssl.SSLError):
            raise Closed() from None

    def reply(self) -> list[bytes]:
        """The lines of one reply (without CRLF)."""
        lines: list[bytes] = []
        while True:
            while b"\n" not in self.buffer:
                self._fill()
            line, self.buffer = self.buffer.split(b"\n", 1)
            lines.append(line)
            if line[3:4] != b"-":
                return lines

    def starttls(self, then: bytes, garbage: bool) -> None:
        """Handshake; with ``then``, send it in the same write as ``Finished``."""
        if garbage:
            self.send(b"\x16\x03\x01\x00\x05hello" + then)
            return
        self.tls = _CONTEXT.wrap_bio(self.incoming, self.outgoing, server_hostname="mx.elemta.test")
        while True:
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                pending = self.outgoing.read()
                try:
                    if pending:
                        self.sock.sendall(pending)
                except OSError:
                    raise Closed() from None
                self.incoming.write(self._recv())
            except ssl.SSLError:
                raise Closed() from None
        if then:
            self.tls.write(then)
        try:
            self.sock.sendall(self.outgoing.read())
        except OSError:
            raise Closed() from None


def _bare_line_end(data: bytes) -> bool:
    return not (data.count(b"\r") == data.count(b"\n") == data.count(b"\r\n"))


def _rcpt_domain(line: bytes) -> str | None:
    """The domain of the recipient in a RCPT line, as plainly as it can be read."""
    text = line.decode("utf-8", "replace").strip()
    if not text[:8].upper() == "RCPT TO:":
        return None
    path = text[8:].strip().split(" ")[0] if not text[8:].strip().startswith("<") else text[8:]
    path = path.strip().lstrip("<")
    path = path.split(">", 1)[0].strip()
    if ":" in path and path.startswith("@"):
        path = path.split(":", 1)[1].strip()
    if "@" not in path:
        return ""  # postmaster
    return path.rsplit("@", 1)[1].lower().rstrip(".")


class _Model:
    """What the server has been sent and not yet answered, and in which mode."""

    def __init__(self, dialogue: Dialogue, wire: _Wire, outcome: Outcome) -> None:
        self.d = dialogue
        self.wire = wire
        self.out = outcome
        self.pending = b""
        self.mode = "command"  # command, data, tls, closed
        self.greeted = False
        self.last = b""

    def finding(self, kind: str, detail: str) -> None:
        self.out.findings.append(Finding(self.d.seed, kind, detail))

    def check(self, lines: list[bytes], command: bytes) -> bytes:
        """Check one reply; its code."""
        self.out.replies += 1
        codes = set()
        for line in lines:
            m = REPLY_LINE.match(line[:-1] if line.endswith(b"\r") else b"\x00")
            if not m or len(line) + 1 > 512:
                self.finding("malformed reply", f"{line!r} to {command[:120]!r}")
                return b"500"
            codes.add(m.group(1))
        if len(codes) != 1:
            self.finding("mixed codes", f"{lines!r}")
        code = lines[-1][:3]
        text = lines[-1][4:-1]
        exempt = not self.greeted or code == b"354" or command[:4].upper() in (b"EHLO", b"HELO")
        if not exempt and not (ENHANCED.match(text) and text[:1] == code[:1]):
            self.finding("no enhanced code", f"{lines[-1]!r} to {command[:120]!r}")
        self.greeted = True
        return code

    def answer(self, command: bytes) -> bytes:
        lines = self.wire.reply()
        code = self.check(lines, command)
        if code == b"421" and b" 4.4.2 " in lines[-1] and command != b"<greeting>":
            # the server waited for a command it had been sent in full
            self.finding("timeout instead of a reply", f"to {command[:120]!r}")
        self.last = lines[-1]
        return code

    def run_pending(self) -> None:
        """Read every reply the bytes sent so far are owed."""
        while self.mode in MODES and MODES[self.mode](self):
            pass

    def after(self, line: bytes, code: bytes) -> None:
        if code in (b"421", b"221"):
            self.mode = "closed"
            self.out.closed_by_server = True
            return
        verb = line.split(b" ", 1)[0].rstrip(b"\r").upper()
        special = SPECIAL.get(verb.decode("ascii", "replace"))
        if special is not None:
            special(self, line, code)

    def rcpt(self, line: bytes, code: bytes) -> None:
        if code[:1] != b"2" or self.d.trusted:
            return
        domain = _rcpt_domain(line)
        if domain is not None and domain != "" and domain not in OURS:
            self.finding("relay to a foreign domain", f"{line!r} got {code!r}")


def _command_mode(model: _Model) -> bool:
    """One command line, one reply. False until a whole line was sent."""
    if b"\n" not in model.pending:
        return False
    line, model.pending = model.pending.split(b"\n", 1)
    code = model.answer(line)
    model.after(line, code)
    return True


def _data_mode(model: _Model) -> bool:
    """DATA up to the end mark, one reply. False until the end mark was sent."""
    data = b"\r\n" + model.pending
    end = data.find(MARK)
    if end < 0:
        return False
    content, model.pending = data[2 : end + 2], data[end + len(MARK) :]
    code = model.answer(b"<end of data>")
    if code[:1] == b"2" and _bare_line_end(content):
        model.finding("bare CR/LF accepted", f"{content[:200]!r}")
    queued = QUEUED.search(model.last) if code == b"250" else None
    if queued:
        model.out.queued.append(queued.group(1).decode())
    model.mode = "command"
    model.after(b"<end of data>", code)
    return True


def _data(model: _Model, line: bytes, code: bytes) -> None:
    if code == b"354":
        model.mode = "data"


def _starttls(model: _Model, line: bytes, code: bytes) -> None:
    if code == b"220":
        model.pending = b""  # the server drops what was pipelined in plaintext
        model.mode = "tls"


# How the server reads in each mode (BDAT, for one, would add its own).
MODES: dict[str, Callable[[_Model], bool]] = {"command": _command_mode, "data": _data_mode}
# Verbs that change how the server reads what follows, or what the checks expect.
SPECIAL: dict[str, Callable[[_Model, bytes, bytes], None]] = {
    "DATA": _data,
    "STARTTLS": _starttls,
    "RCPT": _Model.rcpt,
}


def run_session(dialogue: Dialogue, port: int, source: str, hang: float = 20.0) -> Outcome:
    """Play ``dialogue`` against ``127.0.0.1:port`` from ``source``; the outcome."""
    out = Outcome(dialogue.seed)
    try:
        sock = socket.create_connection(
            ("127.0.0.1", port), timeout=hang, source_address=(source, 0)
        )
    except OSError as exc:
        out.findings.append(Finding(dialogue.seed, "connect failed", repr(exc)))
        return out
    wire = _Wire(sock, hang)
    model = _Model(dialogue, wire, out)
    steps = list(dialogue.steps)
    try:
        model.answer(b"<greeting>")
        i = 0
        while i < len(steps) and model.mode != "closed":
            step = steps[i]
            i += 1
            if step.kind == "close":
                break
            if step.kind == "tls":
                if model.mode != "tls":
                    continue  # STARTTLS was refused: carry on in plaintext
                then = b""
                if step.coalesce and i < len(steps) and steps[i].kind == "send":
                    then = steps[i].data
                    i += 1
                wire.starttls(then, step.garbage)
                if step.garbage:
                    model.mode = "closed"
                    _expect_close(wire)
                    break
                model.mode = "command"
                model.greeted = True
                model.pending = then
                model.run_pending()
                continue
            if model.mode == "tls":
                # the client did not start TLS but goes on: the server reads it as a handshake
                wire.send(step.data)
                model.mode = "closed"
                _expect_close(wire)
                break
            wire.send(step.data)
            model.pending += step.data
            model.run_pending()
    except Closed:
        out.closed_by_server = True
    except Hang:
        out.findings.append(
            Finding(dialogue.seed, "hang", f"no reply in {hang}s (mode {model.mode})")
        )
    finally:
        sock.close()
    return out


def _expect_close(wire: _Wire) -> None:
    """After a broken handshake the server may say something, then must close."""
    try:
        while True:
            wire._fill()
            wire.buffer = b""
    except Closed:
        return
