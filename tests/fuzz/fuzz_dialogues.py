"""Generated SMTP dialogues: valid ones, then mutated.

A dialogue is a list of :class:`Step`: bytes the client writes (one TCP write
each), a STARTTLS handshake, or a disconnect. :func:`dialogue` builds one from a
seed, so any finding is reproduced by its seed alone.

To fuzz a new verb, add a generator of its arguments to :data:`VERBS` (valid and
broken forms) and, if real clients use it in a shape of their own, a step to
:func:`_valid`. If the verb changes how the server reads what follows (like DATA
or STARTTLS, or BDAT with its octet count), teach :mod:`fuzz_session` what its
reply means (``SPECIAL``) and how the server then reads (``MODES``).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["Dialogue", "Step", "VERBS", "dialogue"]

OURS = ("sink.test", "local.test")  # relay domain (to the sink) and local domain
FOREIGN = ("foreign.test", "other.example")
SENDERS = ("alice@client.test", "bob@sender.test", "")

# Bytes a client should never send, and bytes that are not UTF-8.
NASTY = [
    b"\x00",
    b"\r",
    b"\n",
    b"\x1b[31m",
    b"\x1b]0;x\x07",
    b"\x7f",
    b"\x08",
    b"\t",
    b"\x0b",
    b"\x0c",
    b"\x85",
    b"\xc3\x28",
    b"\xed\xa0\x80",
    b"\xff\xfe",
    b"\xe2\x80\xa8",
    b"\xe2\x80\xae",
    "\u00e9".encode(),
    b"%",
    b"<",
    b">",
    b"@",
    b"[",
    b"]",
    b'"',
    b"\\",
    b":",
    b",",
    b" ",
]
# Other protocols spoken to an SMTP port.
FOREIGN_PROTOCOLS = [
    b"GET / HTTP/1.1\r\nHost: mx.elemta.test\r\nUser-Agent: fuzz\r\n\r\n",
    b"POST /x HTTP/1.0\r\nContent-Length: 4\r\n\r\nabcd",
    b"CONNECT mx.elemta.test:25 HTTP/1.1\r\n\r\n",
    b"PROXY TCP4 192.0.2.1 198.51.100.2 12345 25\r\n",
    b"PROXY UNKNOWN\r\n",
    b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c\xc0\x00\x02\x01\xc6\x33\x64\x02\x30\x39\x00\x19",
    # a TLS 1.2 ClientHello record header and the start of its body
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(32)) + b"\x00\x02\x13\x01",
    b"\x80\x2e\x01\x00\x02\x00\x15\x00\x00\x00\x10",  # SSLv2 hello
    b"SSH-2.0-OpenSSH_9.6\r\n",
    b"\x05\x01\x00",  # SOCKS5
]


@dataclass
class Step:
    """One thing the client does. ``kind``: "send", "tls" or "close"."""

    kind: str
    data: bytes = b""
    coalesce: bool = False  # tls: send the next step together with Finished
    garbage: bool = False  # tls: send junk instead of a ClientHello


@dataclass
class Dialogue:
    seed: int
    trusted: bool
    steps: list[Step] = field(default_factory=list)
    mutations: list[str] = field(default_factory=list)


def _word(r: random.Random, n: int = 8) -> str:
    return "".join(
        r.choice("abcdefghijklmnopqrstuvwxyz0123456789-._") for _ in range(r.randint(1, n))
    )


def _mailbox(r: random.Random, domains: tuple[str, ...]) -> str:
    local = r.choice(["bob", "alice", "postmaster", _word(r), "a.b+tag", '"john smith"'])
    return f"{local}@{r.choice(domains)}"


def _broken_path(r: random.Random) -> str:
    """Paths that are wrong in the ways clients and attackers get them wrong."""
    box = _mailbox(r, OURS + FOREIGN)
    return r.choice(
        [
            f"<{box}",
            f"{box}>",
            "<x@[>",
            "<x@[127.0.0.1>",
            "<x@[IPv6:::1>",
            "<x@[999.0.0.1]>",
            f"<@{r.choice(OURS)}:{_mailbox(r, FOREIGN)}>",
            f"<@{r.choice(FOREIGN)},@x.test:{box}>",
            f"<@:{box}>",
            f'<"{box}>',
            f"<{box.replace('@', '%')}@{r.choice(OURS)}>",
            f"<{box}@{r.choice(OURS)}>",
            f"<{r.choice(FOREIGN)}!{box}>",
            "<>",
            "<@>",
            "<<>>",
            f"<{'a' * r.choice([64, 65, 300])}@{r.choice(OURS)}>",
            f"<x@{'a' * 64}.test>",
            f"<x@{'.'.join(['a'] * 140)}>",
            f"<j\u00f6rg@m\u00fcnchen.{r.choice(OURS)}>",
            f"< {box} >",
            box,
            f"<{box}> <{box}>",
        ]
    )


def _params(r: random.Random, verb: str) -> str:
    good = ["SIZE=100", "BODY=8BITMIME", "BODY=7BIT", "SMTPUTF8"] if verb == "MAIL" else []
    bad = [
        "SIZE=",
        "SIZE=-1",
        "SIZE=99999999999999999999999",
        "SIZE=1e3",
        "BODY=BINARYMIME",
        "SMTPUTF8=yes",
        "NOTIFY=NEVER",
        "ORCPT=rfc822;x@y",
        "AUTH=<>",
        "RET=HDRS",
        "X-" + _word(r) + "=" + _word(r),
        "=" + _word(r),
        _word(r) + "==",
        "SIZE=1 SIZE=2",
    ]
    picks = r.sample(good, k=min(len(good), r.randint(0, 2))) if good else []
    if r.random() < 0.5:
        picks.append(r.choice(bad))
    return " ".join(picks)


def _mail(r: random.Random) -> str:
    if r.random() < 0.15:
        return f"FROM:{_broken_path(r)}"
    sender = r.choice(SENDERS)
    params = _params(r, "MAIL") if r.random() < 0.4 else ""
    return f"FROM:<{sender}>" + (f" {params}" if params else "")


def _rcpt(r: random.Random) -> str:
    if r.random() < 0.2:
        return f"TO:{_broken_path(r)}"
    domains = FOREIGN if r.random() < 0.3 else OURS
    params = _params(r, "RCPT") if r.random() < 0.1 else ""
    return f"TO:<{_mailbox(r, domains)}>" + (f" {params}" if params else "")


# Verb -> a generator of its argument ("" for none). Extend here for new verbs.
VERBS: dict[str, Callable[[random.Random], str]] = {
    "EHLO": lambda r: r.choice(["client.test", "[127.0.0.1]", _word(r), ""]),
    "HELO": lambda r: r.choice(["client.test", _word(r), ""]),
    "MAIL": _mail,
    "RCPT": _rcpt,
    "DATA": lambda r: "" if r.random() < 0.95 else "now",
    "RSET": lambda r: "" if r.random() < 0.9 else "x",
    "NOOP": lambda r: r.choice(["", "hello"]),
    "VRFY": lambda r: r.choice(["postmaster", "<bob@local.test>", ""]),
    "EXPN": lambda r: r.choice(["staff", ""]),
    "HELP": lambda r: r.choice(["", "MAIL", "BOGUS"]),
    "STARTTLS": lambda r: "" if r.random() < 0.9 else "now",
    "AUTH": lambda r: r.choice(["PLAIN AGFhAGI=", "LOGIN", "CRAM-MD5", ""]),
    "QUIT": lambda r: "" if r.random() < 0.95 else "now",
}


def command(r: random.Random, verb: str) -> bytes:
    arg = VERBS[verb](r)
    name = verb if r.random() < 0.9 else verb.lower()
    return (f"{name} {arg}" if arg else name).encode("utf-8", "surrogateescape") + b"\r\n"


def body(r: random.Random) -> bytes:
    """Message data after 354, ending with the end mark (or not, when cut)."""
    lines = [b"From: <alice@client.test>", b"Subject: fuzz", b""]
    for _ in range(r.randint(0, 12)):
        lines.append(
            r.choice(
                [
                    b"Hello.",
                    b".leading dot",
                    b"..two dots",
                    b".",
                    b"",
                    "caf\u00e9 8bit".encode(),
                    b"x" * r.choice([70, 998, 999, 5000]),
                    bytes(r.randrange(256) for _ in range(r.randint(1, 40))),
                ]
            )
        )
    data = b"\r\n".join(lines) + b"\r\n"
    if r.random() < 0.15:
        data += b"x" * r.choice([70 * 1000, 100 * 1024])  # near or over the size limit
    if r.random() < 0.3:  # smuggling and bare line ends
        cut = r.randrange(len(data) + 1)
        smuggle = r.choice(
            [b"\n.\n", b"\r.\r", b"\r\n.\n", b"\n.\r\n", b"\r.\r\n", b"\n", b"\r", b"\r\r\n"]
        )
        tail = b"MAIL FROM:<x@evil.test>\r\nRCPT TO:<victim@sink.test>\r\nDATA\r\n"
        data = data[:cut] + smuggle + (tail if r.random() < 0.5 else b"") + data[cut:]
    # never an early end mark: the dialogue keeps its own count of what was sent
    while b"\r\n.\r\n" in b"\r\n" + data:
        data = (b"\r\n" + data).replace(b"\r\n.\r\n", b"\r\n..\r\n")[2:]
    return data + b".\r\n"


def _valid(r: random.Random) -> list[Step]:
    """A well-formed session, in one of the shapes real clients use."""
    steps: list[Step] = []

    def send(*lines: bytes) -> None:
        steps.append(Step("send", b"".join(lines)))

    helo = "EHLO" if r.random() < 0.85 else "HELO"
    send(f"{helo} client.test\r\n".encode())
    if helo == "EHLO" and r.random() < 0.25:
        send(b"STARTTLS\r\n")
        steps.append(Step("tls", coalesce=r.random() < 0.5))
        send(b"EHLO client.test\r\n")
    for _ in range(r.choice([1, 1, 1, 2, 3])):
        mail = command(r, "MAIL") if r.random() < 0.5 else b"MAIL FROM:<alice@client.test>\r\n"
        rcpts = [command(r, "RCPT") for _ in range(r.randint(1, 4))]
        if helo == "EHLO" and r.random() < 0.5:  # PIPELINING
            send(mail, *rcpts, b"DATA\r\n")
        else:
            send(mail)
            for rc in rcpts:
                send(rc)
            send(b"DATA\r\n")
        send(body(r))
        if r.random() < 0.3:
            send(command(r, r.choice(["RSET", "NOOP", "VRFY", "HELP", "EXPN"])))
    send(b"QUIT\r\n")
    return steps


def _mutate_bytes(r: random.Random, data: bytes) -> bytes:
    ops = [
        lambda d: d[: (i := r.randrange(len(d) + 1))] + r.choice(NASTY) + d[i:],
        lambda d: d.replace(b"\r\n", r.choice([b"\n", b"\r", b"\r\r\n", b"\n\r"]), 1),
        lambda d: d[: r.randrange(len(d) + 1)],
        lambda d: bytes(r.randrange(256) for _ in range(r.randint(1, 64))) + b"\r\n",
        lambda d: d.rstrip(b"\r\n") + b"A" * r.choice([500, 1001, 5000, 70000]) + b"\r\n",
        lambda d: d.rstrip(b"\r\n") + b" " + _params(r, "MAIL").encode() + b"\r\n",
        lambda d: d.upper() if r.random() < 0.5 else d.lower(),
        lambda d: d.replace(b":", b": ", 1),
        lambda d: d.replace(b" ", b"\t", 1),
    ]
    return r.choice(ops)(data) if data else data


def _mutate(r: random.Random, d: Dialogue) -> None:
    steps = d.steps
    for _ in range(r.choice([0, 1, 1, 2, 3, 5])):
        i = r.randrange(len(steps))
        what = r.choice(
            [
                "bytes",
                "bytes",
                "bytes",
                "swap",
                "drop",
                "duplicate",
                "burst",
                "split",
                "command",
                "foreign",
                "path",
                "disconnect",
                "tls",
            ]
        )
        step = steps[i]
        if what == "bytes" and step.kind == "send":
            step.data = _mutate_bytes(r, step.data)
        elif what == "swap" and i + 1 < len(steps):
            steps[i], steps[i + 1] = steps[i + 1], steps[i]
        elif what == "drop" and len(steps) > 1:
            steps.pop(i)
        elif what == "duplicate":
            steps.insert(i, Step(step.kind, step.data, step.coalesce, step.garbage))
        elif what == "burst" and i + 1 < len(steps):
            nxt = steps[i + 1]
            if step.kind == nxt.kind == "send":
                step.data += nxt.data
                steps.pop(i + 1)
        elif what == "split" and step.kind == "send" and len(step.data) > 1:
            cuts = sorted(r.sample(range(1, len(step.data)), k=min(3, len(step.data) - 1)))
            pieces = [
                step.data[a:b] for a, b in zip([0, *cuts], [*cuts, len(step.data)], strict=True)
            ]
            steps[i : i + 1] = [Step("send", p) for p in pieces]
        elif what == "command":
            steps.insert(i, Step("send", command(r, r.choice(list(VERBS)))))
        elif what == "foreign":
            steps.insert(i, Step("send", r.choice(FOREIGN_PROTOCOLS)))
        elif what == "path":
            verb = r.choice(["MAIL FROM:", "RCPT TO:"])
            steps.insert(i, Step("send", f"{verb}{_broken_path(r)}\r\n".encode()))
        elif what == "disconnect":
            del steps[i:]
            steps.append(Step("close"))
        elif what == "tls":
            steps.insert(
                i, Step("send", b"STARTTLS\r\n" + (b"NOOP\r\n" if r.random() < 0.3 else b""))
            )
            steps.insert(i + 1, Step("tls", coalesce=r.random() < 0.5, garbage=r.random() < 0.15))
        else:
            continue
        d.mutations.append(what)


def dialogue(seed: int) -> Dialogue:
    """The dialogue of ``seed``: about one in eight left valid, the rest mutated."""
    r = random.Random(seed)
    d = Dialogue(seed, trusted=r.random() < 0.3, steps=_valid(r))
    if r.random() < 0.875:
        _mutate(r, d)
    if not d.steps:
        d.steps.append(Step("close"))
    return d
