"""Token keys and access tokens: generation, hashing, masking, and reading them off a request.

Keys are random (48 characters of ``[0-9A-Za-z]`` from ``secrets``), so a plain SHA-256 is a
safe lookup hash: there is nothing to brute-force. Only the hash and a masked form are stored.
"""

from __future__ import annotations

import hashlib
import secrets
import string

KEY_ALPHABET = string.digits + string.ascii_letters
KEY_LENGTH = 48
KEY_PREFIX = "sk-"


def new_token_key() -> str:
    """A New API token key, without the ``sk-`` prefix."""
    return "".join(secrets.choice(KEY_ALPHABET) for _ in range(KEY_LENGTH))


def new_access_token() -> str:
    """A system access token for the management API (32 URL-safe characters)."""
    return secrets.token_urlsafe(24)


def hash_secret(secret: str) -> bytes:
    """Header values that are not UTF-8 reach us with surrogate escapes (aiohttp decodes
    them so); they hash to something no key has, and the caller gets "invalid", not a 500."""
    return hashlib.sha256(secret.encode("utf-8", "surrogateescape")).digest()


def mask_key(key: str) -> str:
    """New API's mask: first 4 + 10 asterisks + last 4 (shorter keys mostly hidden)."""
    if len(key) <= 4:
        return "*" * len(key)
    if len(key) <= 8:
        return f"{key[:2]}****{key[-2:]}"
    return f"{key[:4]}{'*' * 10}{key[-4:]}"


def strip_key(raw: str) -> str:
    """The key part of a presented credential: drop ``Bearer`` and ``sk-``.

    New API's ``sk-<key>-<channel>`` pinning is not supported: such a value simply matches no
    key (401), which is safer than silently ignoring the suffix.
    """
    value = raw.strip()
    if value[:7].lower() == "bearer ":
        value = value[7:].strip()
    if value.startswith(KEY_PREFIX):
        value = value[len(KEY_PREFIX) :]
    return value
