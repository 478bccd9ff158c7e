"""Envelope addresses and ESMTP parameters as MAIL FROM and RCPT TO carry them.

The grammar is RFC 5321 section 4.1.2, with RFC 6531 UTF-8 in local parts and
domains. It is read here, by hand and in one pass, rather than with an RFC 5322
header parser: a mail header allows comments, folding and obsolete forms that an
SMTP path does not, and an address that cannot be read must always be a clean
syntax error (``501``), never an exception.

What is taken, and what is not:

* ``<mailbox>``, and ``<>`` as a reverse path. A path without angle brackets
  (``MAIL FROM:a@b``) is taken as old clients send it, as Postfix does by default.
  A missing ``>`` (``<a@b``) is a syntax error: it is a truncated or broken
  command, and guessing the rest could accept an address nobody meant.
* A source route (``<@relay.example,@other.example:user@domain>``) is read and
  dropped, as RFC 5321 section 4.1.2 and appendix C ask; the route is checked for
  syntax but never used, so relaying is decided on the mailbox alone.
* Local parts: dot-strings of ``atext`` (dots anywhere, as some providers'
  addresses have them, e.g. ``name.@example.jp``) or quoted strings. Domains:
  letters, digits, ``-`` and ``_`` in labels (or U-labels), an optional trailing
  dot, or an address literal ``[192.0.2.1]``, ``[IPv6:2001:db8::1]``,
  ``[tag:content]``.
* Nothing the grammar leaves out: control characters, spaces outside quotes,
  octets that are not UTF-8 (which aiosmtpd hands over as surrogate escapes).
"""

from __future__ import annotations

import functools
import ipaddress
import re

__all__ = [
    "AddressError",
    "ParameterError",
    "parse_parameters",
    "parse_path",
    "split_mailbox",
    "valid_domain",
]

MAX_ADDRESS = 512
_ATEXT = frozenset("!#$%&'*+-/=?^_`{|}~.")
_LABEL = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)")
_GENERAL_TAG = re.compile(r"[A-Za-z0-9-]*[A-Za-z0-9]")
_DCONTENT = re.compile(r"[\x21-\x5a\x5e-\x7e]+")
_KEYWORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")


class AddressError(ValueError):
    """The text is not a path this grammar accepts."""


class ParameterError(ValueError):
    """The text is not a list of ESMTP parameters."""


def _utf8_printable(c: str) -> bool:
    """A non-ASCII character that RFC 6531 lets into an address (UTF8-non-ascii).

    Surrogate escapes (octets that were not UTF-8) are not printable, nor are
    Unicode controls, separators and format characters.
    """
    return not c.isascii() and c.isprintable()


def _atext(c: str) -> bool:
    return c.isascii() and (c.isalnum() or c in _ATEXT) or _utf8_printable(c)


# A local part of ASCII atext and dots only, the usual case, read in one match.
_ASCII_DOT_STRING = re.compile(r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~.]+")


def _local_part(text: str) -> bool:
    if not text:
        return False
    if text[0] != '"':
        return bool(_ASCII_DOT_STRING.fullmatch(text)) or all(_atext(c) for c in text)
    # Quoted-string: qtextSMTP (printable ASCII except " and \) or quoted pairs.
    if len(text) < 2 or text[-1] != '"':
        return False
    i, end = 1, len(text) - 1
    while i < end:
        c = text[i]
        if c == "\\":
            if i + 1 >= end or not ("\x20" <= text[i + 1] <= "\x7e"):
                return False
            i += 2
            continue
        if c == '"' or not ("\x20" <= c <= "\x7e" or _utf8_printable(c)):
            return False
        i += 1
    return True


def _address_literal(text: str) -> bool:
    inner = text[1:-1]
    if inner.upper().startswith("IPV6:"):
        try:
            ipaddress.IPv6Address(inner[5:])
        except ValueError:
            return False
        return True
    tag, colon, content = inner.partition(":")
    if colon:
        return bool(_GENERAL_TAG.fullmatch(tag) and _DCONTENT.fullmatch(content))
    try:
        ipaddress.IPv4Address(inner)
    except ValueError:
        return False
    return True


def valid_domain(domain: str) -> bool:
    """A domain name (A-labels or U-labels, one trailing dot allowed) or an address literal."""
    if domain.startswith("["):
        return domain.endswith("]") and _address_literal(domain)
    name = domain[:-1] if domain.endswith(".") else domain
    if not name or len(name) > 253:
        return False
    for label in name.split("."):
        if label.isascii():
            if not _LABEL.fullmatch(label):
                return False
        elif not (
            0 < len(label) <= 63
            and all(_utf8_printable(c) or c.isalnum() or c in "-_" for c in label)
            and label[0] != "-"
            and label[-1] != "-"
        ):
            return False
    return True


@functools.lru_cache(maxsize=1024)  # read at MAIL or RCPT, and again by relay control
def split_mailbox(mailbox: str) -> tuple[str, str] | None:
    """``(local part, domain)`` of a well-formed mailbox, or None.

    The local part ends at the last ``@`` outside quotes, so a quoted ``@``
    stays in the local part (where relay control sees it).
    """
    local, at, domain = mailbox.rpartition("@")
    if not at or len(mailbox) > MAX_ADDRESS:
        return None
    if not _local_part(local) or not valid_domain(domain):
        return None
    return local, domain


def _closing_bracket(text: str) -> int:
    """Index of the ``>`` that closes the path opened at ``text[0]``, or -1."""
    if '"' not in text:  # no quoted local part: the first ">" closes
        return text.find(">", 1)
    quoted = False
    i = 1
    while i < len(text):
        c = text[i]
        if quoted and c == "\\":
            i += 2
            continue
        if c == '"':
            quoted = not quoted
        elif c == ">" and not quoted:
            return i
        i += 1
    return -1


def _drop_route(path: str) -> str:
    """The mailbox of ``path``, its source route (``@a,@b:``) checked and removed."""
    if not path.startswith("@"):
        return path
    # The route ends at the first colon outside an address literal ([IPv6:...]).
    depth, end = 0, -1
    for i, c in enumerate(path):
        if c == "[":
            depth += 1
        elif c == "]":
            depth -= 1
        elif c == ":" and depth == 0:
            end = i
            break
    if end < 0:
        raise AddressError("source route without a mailbox")
    route, mailbox = path[:end], path[end + 1 :]
    for hop in route.split(","):
        if not hop.startswith("@") or not valid_domain(hop[1:]):
            raise AddressError("bad source route")
    return mailbox


def parse_path(arg: str, *, null: bool = False, bare: tuple[str, ...] = ()) -> tuple[str, str]:
    """``(mailbox, parameters)`` from what follows ``FROM:`` or ``TO:``.

    ``null``: ``<>`` is allowed and returns ``("", parameters)``. ``bare``: words
    allowed without a domain (``postmaster`` at RCPT TO, RFC 5321 section 4.5.1),
    compared without case. Raises :class:`AddressError` when the path is malformed.
    """
    text = arg.lstrip(" ")
    if text.startswith("<"):
        end = _closing_bracket(text)
        if end < 0:
            raise AddressError("missing closing bracket")
        path, rest = text[1:end].strip(" "), text[end + 1 :]
        if rest and rest[0] != " ":
            raise AddressError("text after the closing bracket")
        if not path:
            if null:
                return "", rest.strip(" ")
            raise AddressError("empty path")
    else:
        path, _, rest = text.partition(" ")
        if not path:
            raise AddressError("no address")
    mailbox = _drop_route(path)
    if mailbox.lower() in bare:
        return mailbox, rest.strip(" ")
    if split_mailbox(mailbox) is None:
        raise AddressError("bad mailbox")
    return mailbox, rest.strip(" ")


def parse_parameters(text: str) -> dict[str, str | None]:
    """ESMTP parameters (``KEY`` or ``KEY=value``, space-separated), keys upper-cased.

    RFC 5321 section 4.1.2: keywords are letters, digits and hyphens; values are
    printable ASCII without ``=`` or space (RFC 6531 adds UTF-8). A keyword given
    twice is an error, as RFC 1869 says. Raises :class:`ParameterError`.
    """
    params: dict[str, str | None] = {}
    for word in text.split(" "):
        if not word:
            continue
        key, eq, value = word.partition("=")
        if not _KEYWORD.fullmatch(key) or (eq and not value):
            raise ParameterError("bad parameter")
        if eq and not all(
            ("\x21" <= c <= "\x7e" and c != "=") or _utf8_printable(c) for c in value
        ):
            raise ParameterError("bad parameter value")
        key = key.upper()
        if key in params:
            raise ParameterError("parameter given twice")
        params[key] = value if eq else None
    return params
