"""The PROXY protocol header parser: v1 and v2, partial input, refusals."""

from __future__ import annotations

import struct

import pytest

from elemta.ingress.proxyproto import V2_SIGNATURE, ProxyHeaderError, parse_header


def test_v1_headers_give_the_client_and_their_length() -> None:
    line = b"PROXY TCP4 198.51.100.22 203.0.113.7 35646 25\r\n"
    assert parse_header(line + b"EHLO x\r\n") == (("198.51.100.22", 35646), len(line))
    six = b"PROXY TCP6 2001:db8::1 2001:db8::2 4000 25\r\n"
    assert parse_header(six) == (("2001:db8::1", 4000), len(six))
    assert parse_header(b"PROXY UNKNOWN\r\n") == (None, 15)
    assert parse_header(b"PROXY TCP4 198.51") is None  # more to come


def test_v2_headers_give_the_client_or_none_for_local() -> None:
    body = bytes([192, 0, 2, 1, 192, 0, 2, 2]) + struct.pack("!HH", 5000, 25)
    header = V2_SIGNATURE + b"\x21\x11" + struct.pack("!H", len(body)) + body
    assert parse_header(header + b"\x16\x03") == (("192.0.2.1", 5000), len(header))
    assert parse_header(header[:20]) is None
    local = V2_SIGNATURE + b"\x20\x00\x00\x00"
    assert parse_header(local) == (None, 16)


@pytest.mark.parametrize(
    "bad",
    [
        b"EHLO client.test\r\n",
        b"PROXY TCP4 999.1.1.1 1.1.1.1 1 2\r\n",
        b"PROXY TCP4 2001:db8::1 1.1.1.1 1 2\r\n",
        b"PROXY TCP4 1.1.1.1 1.1.1.1 99999 2\r\n",
        b"PROXY " + b"x" * 120,
        V2_SIGNATURE + b"\x31\x11\x00\x00",
        V2_SIGNATURE + b"\x21\x31\x00\x00",
    ],
)
def test_malformed_headers_are_refused(bad: bytes) -> None:
    with pytest.raises(ProxyHeaderError):
        parse_header(bad)
