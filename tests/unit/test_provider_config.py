"""The example config for real providers loads, and every endpoint in it builds its adapter."""

from __future__ import annotations

import pytest

from hybridinference.common.settings import ConfigError, load_settings
from hybridinference.common.settings_base import PROVIDER_KINDS
from hybridinference.providers.adapter import BUILDERS, build_adapter
from support.procs import REPO

EXAMPLE = REPO / "deploy/config/providers.example.yaml"


async def test_example_config_builds_every_adapter(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENAI_API_KEY_1", "OPENAI_API_KEY_2", "GEMINI_API_KEY"):
        monkeypatch.setenv(name, f"secret-{name}")
    settings = load_settings(str(EXAMPLE))
    kinds = {}
    for worker in settings.providers:
        for endpoint in worker.endpoints:
            adapter = build_adapter(worker.kind, endpoint)
            kinds[endpoint.id] = adapter.kind
            await adapter.close()
    assert kinds == {
        "vllm-local": "vllm",
        "openai-mini": "openai",
        "gemini-flash": "gemini",
        "ollama-qwen": "openai_compatible",
    }


def test_unset_key_variable_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    settings = load_settings(str(EXAMPLE))
    gemini = settings.worker("gemini")
    with pytest.raises(ConfigError, match="GEMINI_API_KEY"):
        build_adapter(gemini.kind, gemini.endpoints[0])


def test_unknown_kind_is_rejected_by_the_config() -> None:
    with pytest.raises(ConfigError, match="kind"):
        load_settings(
            None,
            providers=[
                {"name": "x", "port": 1, "kind": "nope", "endpoints": [{"id": "e", "model": "m"}]}
            ],
            models=[{"name": "m", "endpoints": ["e"]}],
        )


def test_the_adapter_factory_covers_exactly_the_configurable_kinds() -> None:
    # Both come from one list (common/settings_base.py); the example config uses every real one.
    assert sorted(BUILDERS) == sorted(PROVIDER_KINDS)
    with pytest.raises(ConfigError, match="unknown provider kind 'nope'; known kinds: sim, vllm"):
        build_adapter("nope", load_settings(None).providers[0].endpoints[0])
