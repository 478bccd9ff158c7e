"""Password hashes: new ones in the configured scheme, imported ones as they come.

libpass (the maintained fork of passlib) verifies every scheme a Dovecot or Postfix
setup leaves behind; Dovecot's ``{SCHEME}`` prefixes are stripped first, since the
hash after them is the plain crypt(3)-style string.
"""

from __future__ import annotations

import re

from passlib.context import CryptContext

__all__ = ["SCHEMES", "hash_password", "verify_password"]

SCHEMES = ("argon2", "bcrypt", "sha512_crypt", "sha256_crypt")

_CONTEXT = CryptContext(schemes=list(SCHEMES), default="argon2", argon2__type="ID")

# Dovecot's scheme prefixes whose hash is a crypt(3) string libpass knows.
_PREFIX = re.compile(
    r"^\{(BLF-CRYPT|SHA512-CRYPT|SHA256-CRYPT|ARGON2ID|ARGON2I|CRYPT)\}", re.IGNORECASE
)


def _bare(stored: str) -> str:
    return _PREFIX.sub("", stored.strip(), count=1)


def hash_password(password: str, scheme: str = "argon2") -> str:
    """A new hash of ``password`` (``argon2`` is Argon2id)."""
    if scheme not in SCHEMES:
        raise ValueError(f"unknown password scheme {scheme!r}")
    return str(_CONTEXT.handler(scheme).hash(password))


def verify_password(password: str, stored: str) -> bool:
    """True when ``password`` matches ``stored``; False for a wrong password and for a
    hash no scheme recognises (a disabled account may hold ``!`` or ``*``)."""
    bare = _bare(stored)
    if not bare or _CONTEXT.identify(bare, required=False) is None:
        return False
    try:
        return bool(_CONTEXT.verify(password, bare))
    except ValueError:  # malformed hash, or a password bcrypt cannot take
        return False
