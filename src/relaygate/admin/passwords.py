"""Account passwords: scrypt with a random salt, never stored plain, hashed off the loop."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets


async def hash_password(password: str) -> str:
    """scrypt with a random salt; passwords are optional (no login route yet) but never plain.

    scrypt costs ~60 ms of CPU by design, and the management API is served by the relay's
    own event loop: run inline it would stall every request in flight, so it runs in a
    thread (hashlib releases the GIL while it works).
    """
    return await asyncio.to_thread(_scrypt_hash, password)


async def verify_password(password: str, stored: str) -> bool:
    """Does ``password`` match a ``hash_password`` value? Off the event loop, as hashing."""
    return await asyncio.to_thread(_scrypt_verify, password, stored)


def _scrypt(password: str, salt: bytes) -> bytes:
    return hashlib.scrypt(password.encode(), salt=salt, n=2**14, r=8, p=1)


def _scrypt_hash(password: str) -> str:
    salt = secrets.token_bytes(16)
    return f"scrypt${salt.hex()}${_scrypt(password, salt).hex()}"


def _scrypt_verify(password: str, stored: str) -> bool:
    scheme, _, rest = stored.partition("$")
    salt_hex, _, digest_hex = rest.partition("$")
    if scheme != "scrypt" or not salt_hex or not digest_hex:
        return False
    try:
        salt, digest = bytes.fromhex(salt_hex), bytes.fromhex(digest_hex)
    except ValueError:
        return False
    return hmac.compare_digest(_scrypt(password, salt), digest)
