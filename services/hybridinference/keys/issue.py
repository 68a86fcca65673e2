"""Creating a key: the only moment its plain text exists outside the client."""

from __future__ import annotations

from hybridinference.common.edge_settings import KeyLimitSettings
from hybridinference.keys.model import ApiKey
from hybridinference.keys.store import KeyStore
from hybridinference.keys.tokens import hash_key, new_key, new_key_id, shown_prefix

# A key's name: what the operator calls it (the CLI and AdminService.CreateKey check it).
MAX_NAME_CHARS = 128


async def create_key(
    store: KeyStore,
    secret: bytes,
    name: str,
    admin: bool = False,
    models: tuple[str, ...] = (),
    limits: KeyLimitSettings | None = None,
) -> tuple[ApiKey, str]:
    """Stores a new key's HMAC and returns the record with the plain key (show it once)."""
    plain = new_key()
    key = ApiKey(
        id=new_key_id(),
        name=name,
        key_hash=hash_key(secret, plain),
        prefix=shown_prefix(plain),
        admin=admin,
        models=models,
        limits=limits or KeyLimitSettings(),
    )
    await store.insert(key)
    return key, plain
