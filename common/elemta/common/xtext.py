"""xtext (RFC 3461 section 4): how DSN's ENVID and ORCPT travel in SMTP commands.

Printable ASCII except ``+`` and ``=``, which with every other octet are written
``+XX`` (two upper-case hex digits). Ingress checks and keeps the encoded form,
delivery relays it unchanged, and the queue decodes it for the notices.
"""

from __future__ import annotations

import re

__all__ = ["XTEXT", "xtext_decode", "xtext_encode"]

# A whole xtext value: plain characters, or "+" followed by two upper-case hex digits.
XTEXT = re.compile(r"^(?:[!-*,-<>-~]|\+[0-9A-F]{2})*$")
_ESCAPE = re.compile(r"\+([0-9A-Fa-f]{2})")


def xtext_decode(text: str) -> str:
    """``+XX`` escapes back to text (the octets read as UTF-8, invalid ones replaced)."""
    out = bytearray()
    pos = 0
    for m in _ESCAPE.finditer(text):
        out += text[pos : m.start()].encode("utf-8")
        out.append(int(m.group(1), 16))
        pos = m.end()
    out += text[pos:].encode("utf-8")
    return out.decode("utf-8", errors="replace")


def xtext_encode(text: str) -> str:
    """Characters outside ``!``..``~``, and ``+`` and ``=``, as ``+XX`` escapes of their UTF-8."""
    out = []
    for ch in text:
        if "!" <= ch <= "~" and ch not in "+=":
            out.append(ch)
        else:
            out.extend(f"+{b:02X}" for b in ch.encode("utf-8"))
    return "".join(out)
