"""The mesh configuration: one YAML file plus environment overrides, validated at start.

Every service loads the same file, so the router's endpoint table and the provider workers that
host those endpoints come from a single source. With no file at all, the embedded defaults run the
whole mesh on loopback with the simulated provider and an SQLite request log.

Precedence: environment (``HI__SECTION__KEY=value``, e.g. ``HI__GATEWAY__PORT=6000``) over the
YAML file (``--config`` or ``HI_CONFIG``) over the defaults below.
"""

from __future__ import annotations

import contextvars
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    Field,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from hybridinference.common.edge_settings import AuthSettings, QuotaSettings, TlsSettings
from hybridinference.common.settings_base import (
    ProviderKind,
    RoutingStrategyName,
    SettingsSection,
)
from hybridinference.common.telemetry_settings import (
    GATEWAY_METRICS_PORT,
    LOGGER_METRICS_PORT,
    ROUTER_METRICS_PORT,
    PrometheusSettings,
    TracingSettings,
    default_worker_metrics_port,
)

CONFIG_ENV = "HI_CONFIG"
ENV_PREFIX = "HI__"

Port = int


class ServerSettings(SettingsSection):
    host: str = "127.0.0.1"
    port: Port = Field(ge=0, le=65535)
    # Seconds in-flight calls get to finish after SIGTERM before they are cancelled.
    grace_period_s: float = Field(default=10.0, ge=0)
    # Optional TLS / mTLS for this server; peers dialing it use the same section's client side.
    tls: TlsSettings | None = None

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
    # Prometheus /metrics on this port (0 = off).
    metrics_port: Port = Field(default=GATEWAY_METRICS_PORT, ge=0, le=65535)
    # Peers; empty means "the router / logger of this same config" (their host and port).
    router_address: str = ""
    logger_address: str = ""
    # Largest gRPC message accepted on the gateway's port (native gRPC, direct or through
    # Envoy): gRPC refuses a bigger one with RESOURCE_EXHAUSTED before it is read into memory
    # or parsed. None: max_body_bytes plus 1 MiB (the same request as protobuf is no larger than
    # as JSON). The other services keep the mesh-internal limit (common/channels.py).
    max_message_bytes: int | None = Field(default=None, ge=64 * 1024)
    # Input limits: every rejection is a 400 / INVALID_ARGUMENT naming the field.
    # 16 MiB: a few base64 images fit (Envoy's limit follows this one, plus headroom).
    max_body_bytes: int = Field(default=16 << 20, gt=0)
    max_messages: int = Field(default=256, gt=0)
    max_message_chars: int = Field(default=200_000, gt=0)
    max_tokens_cap: int = Field(default=8192, gt=0)
    # Upper bound on a request's life when the client sets no deadline.
    request_timeout_s: float = Field(default=300.0, gt=0)
    # Request records go to the logger off the request path through a bounded queue.
    log_queue_size: int = Field(default=10_000, gt=0)
    log_batch_size: int = Field(default=256, gt=0)
    log_flush_interval_s: float = Field(default=0.05, gt=0)
    # Records the logger cannot take go to this local spool and are replayed later; "{port}"
    # is replaced by the gateway's port so gateways on one host never share a spool.
    log_spool_dir: str = "var/spool/gateway-{port}"
    log_spool_max_bytes: int = Field(default=256 << 20, gt=0)
    # Lower max_tokens caps for some models (model name → cap); others use max_tokens_cap.
    max_tokens_caps: dict[str, PositiveInt] = Field(default_factory=dict)
    # API keys (off by default) and per-key quotas; see hybridinference/common/edge_settings.py.
    auth: AuthSettings = Field(default_factory=AuthSettings)
    quota: QuotaSettings = Field(default_factory=QuotaSettings)

    @property
    def receive_limit_bytes(self) -> int:
        """The byte limit on one received gRPC message (max_message_bytes, resolved)."""
        if self.max_message_bytes is not None:
            return self.max_message_bytes
        return self.max_body_bytes + (1 << 20)


class SimEndpointSettings(SettingsSection):
    """Behaviour of one simulated endpoint: deterministic text, timing and failure injection."""

    ttft_ms: float = Field(default=20.0, ge=0)
    itl_ms: float = Field(default=5.0, ge=0)
    output_tokens: int = Field(default=24, ge=1)
    # Probability in [0, 1] that a generation fails before its first token with UNAVAILABLE.
    fail_rate: float = Field(default=0.0, ge=0, le=1)
    # When set, every generation aborts with UNAVAILABLE after this many tokens.
    abort_after_tokens: int | None = Field(default=None, ge=0)
    # Generations served at once; the rest queue (reported as `waiting`), like a vLLM server's
    # max_num_seqs. None means unlimited.
    max_concurrency: int | None = Field(default=None, ge=1)
    # Extra time to first token, uniform in [0, ttft_jitter_ms].
    ttft_jitter_ms: float = Field(default=0.0, ge=0)
    # Latency tail: with probability tail_rate the first token takes tail_ms longer.
    tail_rate: float = Field(default=0.0, ge=0, le=1)
    tail_ms: float = Field(default=0.0, ge=0)
    # Seed of the endpoint's random draws (failures, jitter, tails); None draws a fresh one.
    # Tests and the routing study set it so a run's tails are the same every time.
    seed: int | None = None


class VllmEngineSettings(SettingsSection):
    """The in-process engine mode of a vllm endpoint (the worker imports vllm and hosts it)."""

    # Local model directory (weights and tokenizer); no hub downloads.
    model_path: str = Field(min_length=1)
    dtype: str = "auto"
    max_model_len: int | None = Field(default=None, gt=0)
    enforce_eager: bool = False
    # vLLM's tool-call parser for the model's format (e.g. "hermes", "llama3_json", "pythonic"):
    # turns on tools with tool_choice auto/required. Named tool_choice and structured output
    # use guided decoding, but vLLM still wants a parser configured for any tools.
    tool_call_parser: str | None = None
    # vLLM's reasoning parser (e.g. "deepseek_r1", "qwen3"): splits reasoning from content.
    reasoning_parser: str | None = None
    # Further `vllm serve` options by their engine-argument names (e.g.
    # {"structured_outputs_config": {"backend": "xgrammar"}}); dicts and lists as JSON.
    extra_args: dict[str, Any] = Field(default_factory=dict)


class ProviderEndpointSettings(SettingsSection):
    id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.\-]+$")
    # The upstream's name for the model.
    model: str = Field(min_length=1)
    # Prices in USD per million tokens.
    price_prompt_per_1m: float = Field(default=0.0, ge=0)
    price_completion_per_1m: float = Field(default=0.0, ge=0)
    sim: SimEndpointSettings = Field(default_factory=SimEndpointSettings)
    # Where the endpoint runs, for the local_first policy: "auto" is local for vLLM workers and
    # cloud for everything else.
    locality: Literal["auto", "local", "cloud"] = "auto"
    # Upstream of real providers (vllm, openai, gemini, openai_compatible). base_url is the
    # OpenAI-style root including /v1 (vllm, openai_compatible, openai) or Gemini's API root;
    # empty means the SDK's default (openai, gemini).
    base_url: str = ""
    # Names of environment variables holding API keys, never the keys themselves. Several names
    # make a key pool: a key answered with 429/401 cools down and the next one is used.
    api_key_env: str | list[str] = ""
    # Seconds to open a connection, to wait for the first token, and between two tokens.
    connect_timeout_s: float = Field(default=5.0, gt=0)
    first_token_timeout_s: float = Field(default=60.0, gt=0)
    idle_timeout_s: float = Field(default=30.0, gt=0)
    # Seconds a pooled key rests after 429/401 when the upstream sends no Retry-After.
    key_cooldown_s: float = Field(default=20.0, ge=0)
    # Pooled keep-alive connections to the upstream.
    max_connections: int = Field(default=256, gt=0)
    # vllm only: where vLLM's Prometheus metrics are; empty = base_url without /v1 + /metrics.
    metrics_url: str = ""
    # vllm only: host the engine in this process instead of calling a vLLM server over HTTP.
    vllm_engine: VllmEngineSettings | None = None
    # Generations the endpoint serves at once (vLLM's max_num_seqs); the hybrid policy predicts
    # queueing beyond it. None: a sim endpoint's sim.max_concurrency, otherwise learned from
    # status probes that report a queue (running then is the limit), else unlimited.
    max_concurrency: int | None = Field(default=None, ge=1)


class ProviderWorkerSettings(ServerSettings):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.\-]+$")
    kind: ProviderKind = "sim"
    endpoints: list[ProviderEndpointSettings] = Field(min_length=1)
    # Prometheus /metrics on this port (0 = off); unset: 9103 for the first worker, then
    # 9105, 9106, ... (filled in by MeshSettings).
    metrics_port: Port | None = Field(default=None, ge=0, le=65535)
    # Host the worker's adapters inside the router process instead of a worker process of its
    # own: one Python gRPC hop fewer per request (same adapters, errors and metrics, which
    # then appear on the router's /metrics). The launcher starts no process for it, and its
    # port and metrics_port are unused.
    colocated: bool = False


class LocalFirstSettings(SettingsSection):
    """When the local_first policy overflows a local endpoint to the cloud, and comes back."""

    # Overflow when the endpoint reports at least this many queued generations...
    max_waiting: int = Field(default=2, ge=0)
    # ...or its time-to-first-token EWMA reaches this...
    max_ttft_ms: float = Field(default=1000.0, gt=0)
    # ...or the router has this many requests in flight on it (None: no limit).
    max_in_flight: int | None = Field(default=None, ge=1)
    # Come back only once every signal is below this fraction of its threshold (hysteresis).
    recover_ratio: float = Field(default=0.5, gt=0, le=1)


InputModality = Literal["text", "image", "audio", "file"]


def _text_only() -> list[InputModality]:
    return ["text"]


class CapabilitySettings(SettingsSection):
    """What a model can honour. A request using anything not declared here is refused with
    400 `unsupported_parameter` naming the field, never answered with the field ignored, and
    the router sends requests only to models (fallbacks included) that declare what they use.
    The defaults are what every provider kind does: text in, text out, one choice."""

    tools: bool = False
    # response_format json_schema / json_object.
    structured_output: bool = False
    json_mode: bool = False
    # Reasoning deltas, reasoning tokens, reasoning_effort.
    reasoning: bool = False
    logprobs: bool = False
    # n > 1.
    multiple_choices: bool = False
    input_modalities: list[InputModality] = Field(default_factory=_text_only)
    # Context window in tokens (0: not declared).
    context_length: int = Field(default=0, ge=0)
    # Most tokens one reply may generate: the max_tokens cap and the limit injected when a
    # request sets none (None: the gateway's max_tokens_cap).
    max_output_tokens: PositiveInt | None = None
    # Top-level request fields the gateway does not model that go to the upstream unchanged
    # (e.g. a vendor extension); any other unknown field is refused with 400.
    passthrough_fields: list[str] = Field(default_factory=list)

    @classmethod
    def everything(cls) -> CapabilitySettings:
        """All features: the simulated provider's, for tests and demos."""
        return cls(
            tools=True,
            structured_output=True,
            json_mode=True,
            reasoning=True,
            logprobs=True,
            multiple_choices=True,
            input_modalities=["text", "image", "audio", "file"],
        )


class HybridSettings(SettingsSection):
    """The hybrid policy (recommended for fleets of local and cloud endpoints): local endpoints
    while their predicted TTFT is useful, the cheapest cloud endpoint whose predicted tail meets
    the SLO beyond that, and admission control when nothing can meet it."""

    # Predicted TTFT quantile that must meet ttft_slo_ms (the endpoint's own observed tail).
    tail_quantile: float = Field(default=0.9, gt=0, lt=1)
    # A local endpoint takes a request while its predicted tail TTFT (queue included) is at
    # most this fraction of the SLO: queueing locally beyond it costs more latency than the
    # cloud costs money.
    local_queue_slo_fraction: float = Field(default=0.5, gt=0, le=1)
    # Cloud endpoints whose price is within this factor of the cheapest feasible one share the
    # overflow, the one with the lowest predicted tail first.
    price_tolerance: float = Field(default=1.25, ge=1)
    # Admission control: requests that no endpoint can serve within the SLO wait at the router
    # (at most this many per model, at most this long) for capacity, then get 429 with
    # Retry-After.
    admission_queue: int = Field(default=64, ge=0)
    admission_wait_ms: float = Field(default=500.0, ge=0)


class ModelSettings(SettingsSection):
    name: str = Field(min_length=1)
    # What the model supports (see CapabilitySettings).
    capabilities: CapabilitySettings = Field(default_factory=CapabilitySettings)
    # Endpoint ids, in fallback order.
    endpoints: list[str] = Field(min_length=1)
    strategy: RoutingStrategyName = "round_robin"
    owned_by: str = "hybridinference"
    # weighted: relative share per endpoint id (missing ids weigh 1).
    weights: dict[str, PositiveFloat] = Field(default_factory=dict)
    # cost: the p95 time to first token an endpoint must show to be picked for its price.
    ttft_slo_ms: float = Field(default=1000.0, gt=0)
    # latency: output tokens assumed when the request sets no max_tokens.
    expected_output_tokens: int = Field(default=64, ge=1)
    # latency / cost / local_first: share of requests sent off-policy so a recovered endpoint
    # gets measured again.
    exploration: float = Field(default=0.02, ge=0, le=0.5)
    # prefix_affinity: characters of the prompt that pick the replica, and the load bound
    # (an endpoint takes at most this factor times the mean in-flight load).
    affinity_prefix_chars: int = Field(default=256, ge=1)
    affinity_load_factor: float = Field(default=1.25, ge=1)
    local_first: LocalFirstSettings = Field(default_factory=LocalFirstSettings)
    hybrid: HybridSettings = Field(default_factory=HybridSettings)
    # Other models tried, in order, when every endpoint of this one failed before a token.
    fallbacks: list[str] = Field(default_factory=list)
    # Retries and hedges may add at most this fraction of extra load (plus a small burst).
    retry_budget_ratio: float = Field(default=0.2, ge=0, le=1)
    retry_budget_burst: float = Field(default=10.0, ge=0)
    # Attempts per request, first one included (hedges count as attempts).
    max_attempts: int = Field(default=3, ge=1)
    # Hedging: with no first token by the endpoint's observed p90 TTFT (or by ttft_slo_ms, if
    # sooner), start a backup on another endpoint.
    hedging: bool = False
    # Never hedge earlier than this, and only once the endpoint has this many TTFT samples.
    hedge_min_delay_ms: float = Field(default=10.0, ge=0)
    hedge_min_samples: int = Field(default=20, ge=1)


class RouterSettings(ServerSettings):
    port: Port = Field(default=50052, ge=0, le=65535)
    # Prometheus /metrics on this port (0 = off).
    metrics_port: Port = Field(default=ROUTER_METRICS_PORT, ge=0, le=65535)
    # Seconds between active health probes of every endpoint.
    health_interval_s: float = Field(default=2.0, gt=0)
    # Seconds a probe or a connection attempt may take.
    connect_timeout_s: float = Field(default=1.0, gt=0)
    # Circuit breaker per endpoint: opens after this many consecutive failures (429, 5xx,
    # timeouts), lets one probe request through after the cool-down, closes on its success.
    breaker_failure_threshold: int = Field(default=3, ge=1)
    breaker_cooldown_s: float = Field(default=30.0, gt=0)
    # Backoff between attempts: full jitter up to base * 2^(attempt-1), capped.
    backoff_base_ms: float = Field(default=10.0, ge=0)
    backoff_max_ms: float = Field(default=200.0, ge=0)
    # Weight of the newest sample in the per-endpoint TTFT / time-per-token EWMAs.
    ewma_alpha: float = Field(default=0.2, gt=0, le=1)
    # Half-life of the time-decayed statistics the hybrid policy predicts from: a sample this
    # old weighs half as much, and an endpoint without a fresh sample is probed with traffic.
    stats_half_life_s: float = Field(default=10.0, gt=0)
    # Hot reload: re-read the config file on SIGHUP, and when it changes (polled; 0 = off).
    reload_poll_interval_s: float = Field(default=2.0, ge=0)
    # Run the router inside the gateway process instead of a process of its own: one Python
    # gRPC hop fewer per request; routing state is then per gateway. The launcher starts no
    # router process, and port / metrics_port are unused (its metrics are the gateway's).
    colocated: bool = False


class LoggerSettings(ServerSettings):
    port: Port = Field(default=50054, ge=0, le=65535)
    # Prometheus /metrics on this port (0 = off).
    metrics_port: Port = Field(default=LOGGER_METRICS_PORT, ge=0, le=65535)
    # PostgreSQL DSN; when empty the logger writes to the embedded SQLite file.
    database_url: str = ""
    sqlite_path: str = "var/requests.db"
    # Rows per database transaction (one COPY batch) when draining the spool.
    batch_size: int = Field(default=2000, gt=0)
    # Write-ahead spool: a batch is acknowledged once fsync'd here, then drained into the
    # database. Empty: "<sqlite_path>.spool" for SQLite, "var/logger-spool" for PostgreSQL.
    spool_dir: str = ""
    # When the spool holds this much (the database is down), new batches are refused with
    # UNAVAILABLE and the gateways keep them in their own spools.
    spool_max_bytes: int = Field(default=1 << 30, gt=0)
    # Longest wait between attempts to write to an unreachable database.
    store_retry_max_s: float = Field(default=2.0, gt=0)
    # Prompt and response capture: off by default (privacy); when on, each is cut to the cap.
    capture_content: bool = False
    capture_max_chars: int = Field(default=16_384, ge=0)

    @property
    def resolved_spool_dir(self) -> str:
        if self.spool_dir:
            return self.spool_dir
        return "var/logger-spool" if self.database_url else f"{self.sqlite_path}.spool"


class EnvoySettings(SettingsSection):
    host: str = "127.0.0.1"
    port: Port = Field(default=8080, ge=0, le=65535)
    admin_port: Port = Field(default=9901, ge=0, le=65535)
    base_id: int = Field(default=0, ge=0)
    # A slow client is answered 408 and its connection closed: request headers must arrive
    # within request_headers_timeout_s, the whole request within request_timeout_s (a response
    # that streams for minutes is not affected: the timer stops once the request is in).
    request_headers_timeout_s: float = Field(default=10.0, gt=0, le=300)
    request_timeout_s: float = Field(default=30.0, gt=0, le=3600)
    # Envoy's overload manager: above 95% of this heap it answers new requests 503 with
    # Retry-After (above 90% it stops keep-alive and returns memory) instead of growing until the
    # kernel kills it; beyond max_connections open connections, a new one is closed at once.
    max_heap_mb: int = Field(default=1024, ge=1, le=1024 * 1024)
    max_connections: int = Field(default=10000, ge=1, le=10_000_000)
    # grpc.health.v1 and server reflection through the public listener; None: on while
    # gateway.auth is off, off (404 / UNIMPLEMENTED at the edge) once it is on.
    public_introspection: bool | None = None


def dial_host(host: str) -> str:
    """The host to connect to for a listener bound to ``host`` (wildcards: loopback)."""
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
    return [
        ModelSettings(
            name="hi-sim",
            endpoints=["sim-a", "sim-b"],
            capabilities=CapabilitySettings.everything(),
        )
    ]


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
    # OpenTelemetry traces (off by default) and the Prometheus `make up` starts.
    tracing: TracingSettings = Field(default_factory=TracingSettings)
    prometheus: PrometheusSettings = Field(default_factory=PrometheusSettings)

    @model_validator(mode="after")
    def _fill_worker_metrics_ports(self) -> MeshSettings:
        for index, worker in enumerate(self.providers):
            if worker.metrics_port is None:
                worker.metrics_port = default_worker_metrics_port(index)
        return self

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
            for weighted_id in model.weights:
                if weighted_id not in model.endpoints:
                    raise ValueError(
                        f"models: model {model.name!r} weighs {weighted_id!r}, "
                        "which is not one of its endpoints"
                    )
            for fallback in model.fallbacks:
                if fallback not in model_names or fallback == model.name:
                    raise ValueError(
                        f"models: model {model.name!r} falls back to {fallback!r}, "
                        "which is not another configured model"
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
        path = _yaml_path.get()
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


# The YAML file of the load in progress; passed this way because pydantic-settings builds its
# sources in a classmethod. (The environment is not used for this: a loader that set HI_CONFIG
# would leak one caller's file into every later load in the process.)
_yaml_path: contextvars.ContextVar[str | None] = contextvars.ContextVar("yaml_path", default=None)


def config_path_from(explicit: str | None) -> str | None:
    """The config file in use: the explicit one (``--config``), else ``$HI_CONFIG``, else none."""
    return explicit if explicit is not None else (os.environ.get(CONFIG_ENV) or None)


def load_settings(config_path: str | None = None, **overrides: Any) -> MeshSettings:
    """Loads and validates the mesh configuration, raising ConfigError with readable reasons.

    ``config_path`` defaults to ``$HI_CONFIG``; without either, the built-in defaults apply.
    """
    path = config_path_from(config_path)
    if path is not None and not Path(path).is_file():
        origin = "" if config_path is not None else f" (from {CONFIG_ENV})"
        raise ConfigError(f"config file not found: {path}{origin}")
    token = _yaml_path.set(path)
    try:
        return MeshSettings(**overrides)
    except ValidationError as error:
        raise ConfigError(_format_errors(error)) from None
    finally:
        _yaml_path.reset(token)
