"""What the SMTP and LMTP clients share: how an address goes on the wire."""

from __future__ import annotations

import pytest

from elemta.delivery.transport import path_bytes


def test_an_address_goes_in_angle_brackets_as_utf8() -> None:
    assert path_bytes("bob@example.test") == b"<bob@example.test>"
    assert path_bytes("jos\u00e9@b\u00fccher.example") == "<jos\u00e9@b\u00fccher.example>".encode()
    assert path_bytes("") == b"<>"  # the null sender


@pytest.mark.parametrize(
    "addr",
    [
        "bob@example.test>\r\nRCPT TO:<eve@evil.test",
        "bob\n@example.test",
        "b\x00b@x.test",
        "b\x7fb@x.test",
    ],
)
def test_an_address_with_a_control_character_is_never_sent(addr: str) -> None:
    # a line break would let a stored address add its own SMTP command
    with pytest.raises(ValueError, match="control character"):
        path_bytes(addr)


def test_a_non_ascii_space_is_not_taken_for_a_control_character() -> None:
    assert path_bytes('"a\u00a0b"@example.test') == '<"a\u00a0b"@example.test>'.encode()
