"""``prefix_affinity``: consistent hashing on the prompt prefix with bounded load.

The same prefix (a shared system prompt, a conversation's history) lands on the same vLLM replica,
which can then reuse its KV cache. No endpoint takes more than ``affinity_load_factor`` times the
mean in-flight load: an overloaded one spills to the next replica on the ring (Mirrokni et al.,
"Consistent Hashing with Bounded Loads"). Adding or removing a replica moves only its share.
"""

from __future__ import annotations

import bisect
import hashlib
import math
import random
from collections.abc import Sequence

from hybridinference.common.settings import ModelSettings
from hybridinference.router.endpoints import Endpoint
from hybridinference.router.strategies.base import Picker
from hybridinference.router.v1 import router_pb2

# Points per endpoint on the ring: enough for an even split across a few replicas.
VIRTUAL_NODES = 40


def _hash(data: bytes) -> int:
    # blake2b, not hash(): Python salts str hashes per process, and every router replica (and
    # every restart) must map a prefix to the same endpoint.
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


def prompt_prefix(request: router_pb2.RouteRequest, chars: int) -> bytes:
    """The first ``chars`` characters of the conversation (roles included)."""
    parts: list[str] = []
    remaining = chars
    for message in request.messages:
        piece = f"{message.role}\x00{message.content}\x01"
        parts.append(piece[:remaining])
        remaining -= len(piece)
        if remaining <= 0:
            break
    return "".join(parts).encode()


class Ring:
    def __init__(self, ids: Sequence[str]) -> None:
        points = sorted(
            (_hash(f"{endpoint_id}#{replica}".encode()), index)
            for index, endpoint_id in enumerate(ids)
            for replica in range(VIRTUAL_NODES)
        )
        self.keys = [key for key, _ in points]
        self.owners = [index for _, index in points]

    def walk(self, key: int) -> list[int]:
        """Candidate indexes in ring order from ``key``, each once."""
        start = bisect.bisect(self.keys, key)
        seen: list[int] = []
        size = len(self.keys)
        for offset in range(size):
            owner = self.owners[(start + offset) % size]
            if owner not in seen:
                seen.append(owner)
        return seen


class PrefixAffinity(Picker):
    name = "prefix_affinity"

    def __init__(self, options: ModelSettings, rng: random.Random) -> None:
        super().__init__(options, rng)
        # Rings per candidate set (health changes the set); only a handful ever exist.
        self._rings: dict[tuple[str, ...], Ring] = {}

    def _ring(self, candidates: Sequence[Endpoint]) -> Ring:
        ids = tuple(c.id for c in candidates)
        ring = self._rings.get(ids)
        if ring is None:
            if len(self._rings) > 64:
                self._rings.clear()
            ring = self._rings[ids] = Ring(ids)
        return ring

    def pick(self, candidates: Sequence[Endpoint], request: router_pb2.RouteRequest) -> Endpoint:
        key = _hash(prompt_prefix(request, self.options.affinity_prefix_chars))
        ring = self._ring(candidates)
        total = sum(c.in_flight for c in candidates)
        # Capacity per endpoint counting this request; the total capacity always exceeds the
        # load, so some endpoint on the walk fits.
        bound = math.ceil(self.options.affinity_load_factor * (total + 1) / len(candidates))
        start = bisect.bisect(ring.keys, key)
        size = len(ring.keys)
        for offset in range(size):
            endpoint = candidates[ring.owners[(start + offset) % size]]
            if endpoint.in_flight + 1 <= bound:
                return endpoint
        return candidates[ring.owners[start % size]]  # pragma: no cover - bound guarantees a fit
