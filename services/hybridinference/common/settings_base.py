"""What every section of the mesh settings shares, and the names other modules derive from.

Each settings module (settings.py, edge_settings.py, telemetry_settings.py) builds its sections on
``SettingsSection``. The provider kinds and routing strategy names are defined here once: the
settings schema validates against them, the adapter and strategy factories are keyed by them (a
test checks each factory covers exactly these), and tests parametrize over them.
"""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict


class SettingsSection(BaseModel):
    # Unknown keys are mistakes (a typo would silently keep a default), so reject them.
    model_config = ConfigDict(extra="forbid")


ProviderKind = Literal["sim", "vllm", "openai", "gemini", "openai_compatible"]
PROVIDER_KINDS: tuple[ProviderKind, ...] = get_args(ProviderKind)

RoutingStrategyName = Literal[
    "round_robin",
    "weighted",
    "cost",
    "latency",
    "least_load",
    "prefix_affinity",
    "local_first",
    "hybrid",
]
STRATEGY_NAMES: tuple[RoutingStrategyName, ...] = get_args(RoutingStrategyName)
