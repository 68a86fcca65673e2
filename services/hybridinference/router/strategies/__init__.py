"""Routing strategies: one interface (``Strategy.order``), one factory keyed by the model's
``strategy``. A strategy only orders candidates; filtering (health, circuit breakers) happens
before it and the relay walks the returned order, so strategies stay pure and easy to test.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from hybridinference.common.settings import ModelSettings
from hybridinference.common.settings_base import STRATEGY_NAMES
from hybridinference.router.strategies.affinity import PrefixAffinity
from hybridinference.router.strategies.base import Overloaded, Picker, Strategy
from hybridinference.router.strategies.hybrid import Hybrid
from hybridinference.router.strategies.latency import Cost, Latency
from hybridinference.router.strategies.load import LeastLoad, LocalFirst
from hybridinference.router.strategies.simple import RoundRobin, Weighted

PICKERS: dict[str, Callable[[ModelSettings, random.Random], Picker]] = {
    Weighted.name: Weighted,
    Cost.name: Cost,
    Latency.name: Latency,
    LeastLoad.name: LeastLoad,
    PrefixAffinity.name: PrefixAffinity,
    LocalFirst.name: LocalFirst,
    Hybrid.name: Hybrid,
}
# The strategy names the settings accept (common/settings_base.py); IMPLEMENTED must match them
# (a test checks it).
NAMES: tuple[str, ...] = STRATEGY_NAMES
IMPLEMENTED: tuple[str, ...] = (RoundRobin.name, *PICKERS)


def create_strategy(
    name: str, options: ModelSettings | None = None, rng: random.Random | None = None
) -> Strategy:
    """A fresh strategy instance for one model (its state belongs to that model alone).

    ``rng`` drives exploration and random choices; tests pass a seeded one.
    """
    if name == RoundRobin.name:
        return RoundRobin()
    factory = PICKERS.get(name)
    if factory is None:
        raise ValueError(f"unknown routing strategy {name!r}; known: {sorted(NAMES)}")
    return factory(options or ModelSettings(name="-", endpoints=["-"]), rng or random.Random())


__all__ = [
    "IMPLEMENTED",
    "NAMES",
    "Cost",
    "Hybrid",
    "Latency",
    "LeastLoad",
    "LocalFirst",
    "Overloaded",
    "PrefixAffinity",
    "RoundRobin",
    "Strategy",
    "Weighted",
    "create_strategy",
]
