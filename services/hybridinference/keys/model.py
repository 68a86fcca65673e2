"""An API key as stored: never the key itself, only its HMAC and what it may do."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from hybridinference.common.edge_settings import KeyLimitSettings


@dataclass(frozen=True)
class ApiKey:
    # Public identifier, safe to log and to put in request records (e.g. "key_3f9a0c1d2e4b").
    id: str
    name: str
    # HMAC-SHA256 of the key with the server secret, hex.
    key_hash: str
    # The key's first characters, so an operator can tell keys apart in a listing.
    prefix: str
    admin: bool = False
    # Model names this key may use; empty means every model.
    models: tuple[str, ...] = ()
    # This key's own limits; unset fields fall back to gateway.auth.default_limits.
    limits: KeyLimitSettings = field(default_factory=KeyLimitSettings)
    created_at: datetime | None = None
    revoked_at: datetime | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def may_use(self, model: str) -> bool:
        return not self.models or model in self.models
