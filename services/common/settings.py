"""The mesh configuration: one YAML file plus environment overrides, validated at start.

Every service loads the same file, so the router's endpoint table and the provider workers that
host those endpoints come from a single source. With no file at all, the embedded defaults run the
whole mesh on loopback with the simulated provider and an SQLite request log.

Precedence: environment (``HI__SECTION__KEY=value``, e.g. ``HI__GATEWAY__PORT=6000``) over the
YAML file (``--config`` or ``HI_CONFIG``) over the defaults below.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

CONFIG_ENV = "HI_CONFIG"
ENV_PREFIX = "HI__"

Port = int


class _Strict(BaseModel):
    # Unknown keys are mistakes (a typo would silently keep a default), so reject them.
    model_config = ConfigDict(extra="forbid")


class ServerSettings(_Strict):
    host: str = "127.0.0.1"
    port: Port = Field(ge=0, le=65535)
    # Seconds in-flight calls get to finish after SIGTERM before they are cancelled.
    grace_period_s: float = Field(default=10.0, ge=0)

    @property
    def address(self) -> str:
        """The bind address."""
        return f"{self.host}:{self.port}"

    @property
    def dial_address(self) -> str:
        """Where peers connect to this server."""
        return dial_address(self.host, self.port)


class GatewaySettings(ServerSettings):
    port: Port = Field(default=50051, ge=0, le=65535)
    # Peers; empty means "the router / logger of this same config" (their host and port).
    router_address: str = ""
    logger_address: str = ""
    # Input limits: every rejection is a 400 / INVALID_ARGUMENT naming the field.
    max_body_bytes: int = Field(default=1_048_576, gt=0)
    max_messages: int = Field(default=256, gt=0)
    max_message_chars: int = Field(default=200_000, gt=0)
    max_tokens_cap: int = Field(default=8192, gt=0)
    # Upper bound on a request's life when the client sets no deadline.
    request_timeout_s: float = Field(default=300.0, gt=0)
    # Request records go to the logger off the request path through a bounded queue.
    log_queue_size: int = Field(default=10_000, gt=0)
    log_batch_size: int = Field(default=256, gt=0)
    log_flush_interval_s: float = Field(default=0.05, gt=0)


class SimEndpointSettings(_Strict):
    """Behaviour of one simulated endpoint: deterministic text, timing and failure injection."""

    ttft_ms: float = Field(default=20.0, ge=0)
    itl_ms: float = Field(default=5.0, ge=0)
    output_tokens: int = Field(default=24, ge=1)
    # Probability in [0, 1] that a generation fails before its first token with UNAVAILABLE.
    fail_rate: float = Field(default=0.0, ge=0, le=1)
    # When set, every generation aborts with UNAVAILABLE after this many tokens.
    abort_after_tokens: int | None = Field(default=None, ge=0)


class ProviderEndpointSettings(_Strict):
    id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.\-]+$")
    # The upstream's name for the model.
    model: str = Field(min_length=1)
    # Prices in USD per million tokens.
    price_prompt_per_1m: float = Field(default=0.0, ge=0)
    price_completion_per_1m: float = Field(default=0.0, ge=0)
    sim: SimEndpointSettings = Field(default_factory=SimEndpointSettings)


class ProviderWorkerSettings(ServerSettings):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.\-]+$")
    kind: Literal["sim"] = "sim"
    endpoints: list[ProviderEndpointSettings] = Field(min_length=1)


class ModelSettings(_Strict):
    name: str = Field(min_length=1)
    # Endpoint ids, in fallback order.
    endpoints: list[str] = Field(min_length=1)
    strategy: Literal["round_robin"] = "round_robin"
    owned_by: str = "hybridinference"


class RouterSettings(ServerSettings):
    port: Port = Field(default=50052, ge=0, le=65535)
    # Seconds between active health probes of every endpoint.
    health_interval_s: float = Field(default=2.0, gt=0)
    # Seconds a probe or a connection attempt may take.
    connect_timeout_s: float = Field(default=1.0, gt=0)


class LoggerSettings(ServerSettings):
    port: Port = Field(default=50054, ge=0, le=65535)
    # PostgreSQL DSN; when empty the logger writes to the embedded SQLite file.
    database_url: str = ""
    sqlite_path: str = "var/requests.db"
    batch_size: int = Field(default=500, gt=0)
    flush_interval_s: float = Field(default=0.05, gt=0)


class EnvoySettings(_Strict):
    host: str = "127.0.0.1"
    port: Port = Field(default=8080, ge=0, le=65535)
    admin_port: Port = Field(default=9901, ge=0, le=65535)
    base_id: int = Field(default=0, ge=0)


def dial_host(host: str) -> str:
    """The host to connect to for a listener bound to ``host`` (a wildcard is reached on loopback)."""
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)


def dial_address(host: str, port: int) -> str:
    """host:port to connect to, with IPv6 hosts bracketed as gRPC targets need."""
    target = dial_host(host)
    return f"[{target}]:{port}" if ":" in target else f"{target}:{port}"


def _default_providers() -> list[ProviderWorkerSettings]:
    return [
        ProviderWorkerSettings(
            name="sim",
            port=50053,
            endpoints=[
                ProviderEndpointSettings(id="sim-a", model="hi-sim-1"),
                ProviderEndpointSettings(id="sim-b", model="hi-sim-1"),
            ],
        )
    ]


def _default_models() -> list[ModelSettings]:
    return [ModelSettings(name="hi-sim", endpoints=["sim-a", "sim-b"])]


class MeshSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid"
    )

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    gateway: GatewaySettings = Field(default_factory=GatewaySettings)
    router: RouterSettings = Field(default_factory=RouterSettings)
    logger: LoggerSettings = Field(default_factory=LoggerSettings)
    envoy: EnvoySettings = Field(default_factory=EnvoySettings)
    providers: list[ProviderWorkerSettings] = Field(default_factory=_default_providers)
    models: list[ModelSettings] = Field(default_factory=_default_models)

    @model_validator(mode="after")
    def _fill_peer_addresses(self) -> MeshSettings:
        if not self.gateway.router_address:
            self.gateway.router_address = self.router.dial_address
        if not self.gateway.logger_address:
            self.gateway.logger_address = self.logger.dial_address
        return self

    @model_validator(mode="after")
    def _check_references(self) -> MeshSettings:
        seen: dict[str, str] = {}
        for worker in self.providers:
            for endpoint in worker.endpoints:
                if endpoint.id in seen:
                    raise ValueError(
                        f"providers: endpoint id {endpoint.id!r} is defined by both "
                        f"{seen[endpoint.id]!r} and {worker.name!r}"
                    )
                seen[endpoint.id] = worker.name
        names = [w.name for w in self.providers]
        if len(names) != len(set(names)):
            raise ValueError("providers: worker names must be unique")
        model_names = [m.name for m in self.models]
        if len(model_names) != len(set(model_names)):
            raise ValueError("models: model names must be unique")
        for model in self.models:
            for endpoint_id in model.endpoints:
                if endpoint_id not in seen:
                    raise ValueError(
                        f"models: model {model.name!r} names unknown endpoint {endpoint_id!r}"
                    )
        return self

    def worker(self, name: str) -> ProviderWorkerSettings:
        for worker in self.providers:
            if worker.name == name:
                return worker
        raise KeyError(name)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = os.environ.get(CONFIG_ENV)
        if path:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=path))
        return tuple(sources)


class ConfigError(Exception):
    """The configuration is invalid; the message names each key and the problem."""


def _format_errors(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"]) or "(root)"
        lines.append(f"  {key}: {item['msg']}")
    return "invalid configuration:\n" + "\n".join(lines)


def load_settings(config_path: str | None = None, **overrides: Any) -> MeshSettings:
    """Loads and validates the mesh configuration, raising ConfigError with readable reasons."""
    if config_path is not None:
        if not Path(config_path).is_file():
            raise ConfigError(f"config file not found: {config_path}")
        os.environ[CONFIG_ENV] = config_path
    elif (env_path := os.environ.get(CONFIG_ENV)) and not Path(env_path).is_file():
        raise ConfigError(f"config file not found: {env_path} (from {CONFIG_ENV})")
    try:
        return MeshSettings(**overrides)
    except ValidationError as error:
        raise ConfigError(_format_errors(error)) from None
