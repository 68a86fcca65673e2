"""Key material: new keys, their ids, and the HMAC under which they are stored and looked up.

An HMAC with a server secret (not a bare hash) means a stolen key table cannot be checked
against guessed keys without the secret as well.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets

KEY_PREFIX = "hi-"
# Characters of the key shown in listings; the random part is 43 characters, so this reveals
# 7 of them (about 42 of 256 bits).
SHOWN_CHARS = 10
MIN_SECRET_CHARS = 16


class SecretMissing(Exception):
    """The server secret is not set (or too short); the message names the variable."""


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def new_key_id() -> str:
    return "key_" + secrets.token_hex(6)


def shown_prefix(key: str) -> str:
    return key[:SHOWN_CHARS]


def hash_key(secret: bytes, key: str) -> str:
    return hmac.new(secret, key.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()


def server_secret(env_name: str) -> bytes:
    """The server secret from the environment variable ``env_name``."""
    value = os.environ.get(env_name, "")
    if len(value) < MIN_SECRET_CHARS:
        state = "is not set" if not value else f"is shorter than {MIN_SECRET_CHARS} characters"
        raise SecretMissing(
            f"the API key secret ${env_name} {state}; set it to a long random value "
            f"(e.g. `export {env_name}=$(openssl rand -hex 32)`) for every gateway and the CLI"
        )
    return value.encode()
