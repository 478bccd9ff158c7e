"""The envelope and message a milter looks at, and the changes it makes to them.

Milters edit by position: ``SMFIR_CHGHEADER`` names the n-th field of a name
(an empty value deletes it), ``SMFIR_INSHEADER`` an index in the whole header
section, ``SMFIR_ADDHEADER`` appends. So the header section is kept as a list
of fields with their raw values (folding included) and written out again only
when something changed. Each milter sees the message as the milters before it
left it, as Sendmail passes it on, so that a signing milter (OpenDKIM) signs
what will be stored.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from elemta.common.message import join_message, split_message

from ..checks import Changes

__all__ = ["Field", "MessageState", "bare_address"]


def bare_address(text: str) -> str:
    """An address without its angle brackets: ``<a@b>`` -> ``a@b``."""
    text = text.strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1]
    return text


def _crlf(value: bytes) -> bytes:
    """Line breaks in a milter's header value as CRLF, continuation lines indented."""
    lines = value.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
    out = [lines[0]]
    for line in lines[1:]:
        out.append(line if line[:1] in (b" ", b"\t") else b"\t" + line)
    return b"\r\n".join(out)


@dataclass
class Field:
    """One header field: its name and everything after the colon (folding included)."""

    name: bytes  # b"" for a line that is not a field (kept, never shown to milters)
    raw: bytes

    def line(self) -> bytes:
        return (self.name + b":" + self.raw if self.name else self.raw) + b"\r\n"

    def value(self, leading_space: bool) -> bytes:
        """The value as milters get it: LF line breaks, leading blanks dropped
        unless the milter asked for them (``SMFIP_HDR_LEADSPC``)."""
        raw = self.raw.replace(b"\r\n", b"\n")
        return raw if leading_space else raw.lstrip(b" \t")


def _parse(header: bytes) -> list[Field]:
    fields: list[Field] = []
    for line in header.split(b"\r\n")[:-1] if header.endswith(b"\r\n") else header.split(b"\r\n"):
        if line[:1] in (b" ", b"\t") and fields and fields[-1].name:
            fields[-1].raw += b"\r\n" + line
            continue
        name, sep, raw = line.partition(b":")
        if sep and name and not any(c <= 32 or c == 127 for c in name):
            fields.append(Field(name, raw))
        else:
            fields.append(Field(b"", line))
    return fields


@dataclass
class MessageState:
    sender: str
    recipients: list[str]
    fields: list[Field]
    body: bytes
    header_changed: bool = False
    body_changed: bool = False
    new_sender: str | None = None
    added: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)

    @classmethod
    def parse(cls, sender: str, recipients: list[str], message: bytes) -> MessageState:
        header, body = split_message(message)
        return cls(sender, list(recipients), _parse(header), body)

    # What milters are shown.

    def headers(self, leading_space: bool) -> list[tuple[bytes, bytes]]:
        return [(f.name, f.value(leading_space)) for f in self.fields if f.name]

    def header_bytes(self) -> bytes:
        return b"".join(f.line() for f in self.fields)

    def message(self) -> bytes:
        return join_message(self.header_bytes(), self.body)

    # The edits.

    def _new(self, name: bytes, value: bytes, leading_space: bool) -> Field:
        value = _crlf(value)
        if not (leading_space and value[:1] in (b" ", b"\t")):
            value = b" " + value.lstrip(b" \t")
        return Field(name, value)

    def add_header(self, name: bytes, value: bytes, leading_space: bool = False) -> None:
        """``SMFIR_ADDHEADER``: append to the header section."""
        self.fields.append(self._new(name, value, leading_space))
        self.header_changed = True

    def insert_header(
        self, index: int, name: bytes, value: bytes, leading_space: bool = False
    ) -> None:
        """``SMFIR_INSHEADER``: insert before the ``index``-th field (0: first)."""
        position, seen = len(self.fields), 0
        for i, f in enumerate(self.fields):
            if f.name:
                if seen == index:
                    position = i
                    break
                seen += 1
        self.fields.insert(position, self._new(name, value, leading_space))
        self.header_changed = True

    def change_header(
        self, index: int, name: bytes, value: bytes, leading_space: bool = False
    ) -> None:
        """``SMFIR_CHGHEADER``: replace the ``index``-th field called ``name``
        (1-based; 0 counts as 1); an empty value deletes it. Past the last such
        field the header is added, as Sendmail does."""
        index = max(index, 1)
        wanted, seen = name.lower(), 0
        for i, f in enumerate(self.fields):
            if f.name.lower() == wanted:
                seen += 1
                if seen == index:
                    if value.strip():
                        self.fields[i] = self._new(f.name, value, leading_space)
                    else:
                        del self.fields[i]
                    self.header_changed = True
                    return
        if value.strip():
            self.add_header(name, value, leading_space)

    def replace_body(self, body: bytes) -> None:
        """``SMFIR_REPLBODY`` (all chunks joined): line breaks made CRLF."""
        self.body = body.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        self.body_changed = True

    def change_sender(self, sender: str) -> None:
        self.sender = self.new_sender = bare_address(sender)

    def add_recipient(self, rcpt: str) -> None:
        rcpt = bare_address(rcpt)
        if rcpt.lower() in (r.lower() for r in self.recipients):
            return
        self.recipients.append(rcpt)
        if rcpt.lower() in (d.lower() for d in self.deleted):
            self.deleted = [d for d in self.deleted if d.lower() != rcpt.lower()]
        else:
            self.added.append(rcpt)

    def delete_recipient(self, rcpt: str) -> None:
        rcpt = bare_address(rcpt).lower()
        kept = [r for r in self.recipients if r.lower() != rcpt]
        if len(kept) == len(self.recipients):
            return
        removed = next(r for r in self.recipients if r.lower() == rcpt)
        self.recipients = kept
        if rcpt in (a.lower() for a in self.added):
            self.added = [a for a in self.added if a.lower() != rcpt]
        else:
            self.deleted.append(removed)

    def changes(self) -> Changes | None:
        """What changed since :meth:`parse`, for ingress to apply; None if nothing."""
        if not (self.header_changed or self.body_changed or self.new_sender is not None) and not (
            self.added or self.deleted
        ):
            return None
        return Changes(
            sender=self.new_sender,
            add_recipients=list(self.added),
            delete_recipients=list(self.deleted),
            header=self.header_bytes() if self.header_changed else None,
            body=self.body if self.body_changed else None,
        )
