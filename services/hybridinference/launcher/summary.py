"""The text printed once the mesh is up: where to send requests and where things are."""

from __future__ import annotations

from pathlib import Path

from hybridinference.common.settings import MeshSettings, dial_address


def request_log(settings: MeshSettings, cwd: Path) -> str:
    if settings.logger.database_url:
        # Never print a password from the DSN.
        dsn = settings.logger.database_url
        scheme, _, rest = dsn.partition("://")
        if "@" in rest:
            rest = "***@" + rest.split("@", 1)[1]
        return f"PostgreSQL {scheme}://{rest}" if rest else "PostgreSQL"
    return f"SQLite {(cwd / settings.logger.sqlite_path).resolve()}"


def auth_line(settings: MeshSettings) -> str:
    auth = settings.gateway.auth
    if not auth.enabled:
        return "off (no API key needed; turn on with gateway.auth.enabled: true)"
    return f"on (API keys required, hashed with ${auth.secret_env}; `hybridinference keys create`)"


def console_line(settings: MeshSettings, base: str) -> str:
    url = f"{base}/console/"
    if not settings.gateway.auth.enabled:
        return f"{url} (needs auth on: sign in with an admin key, `keys create NAME --admin`)"
    return f"{url} (sign in with an admin key: `hybridinference keys create NAME --admin`)"


def render(settings: MeshSettings, config: Path | None, cwd: Path, log_dir: Path) -> str:
    grpc_target = dial_address(settings.envoy.host, settings.envoy.port)
    base = f"http://{grpc_target}"
    cli = "hybridinference" + (f" --config {config}" if config is not None else "")
    model = settings.models[0].name if settings.models else "MODEL"
    rows = [
        ("envoy (HTTP + gRPC)", f"{settings.envoy.host}:{settings.envoy.port}"),
        ("envoy admin", f"127.0.0.1:{settings.envoy.admin_port}"),
        ("gateway", settings.gateway.address),
        ("router", "in the gateway" if settings.router.colocated else settings.router.address),
        *(
            (f"provider {w.name}", "in the router" if w.colocated else w.address)
            for w in settings.providers
        ),
        ("logger", settings.logger.address),
    ]
    width = max(len(name) for name, _ in rows)
    ports = "\n".join(f"    {name.ljust(width)}  {address}" for name, address in rows)
    body = (
        f'{{"model": "{model}", "stream": true, '
        f'"messages": [{{"role": "user", "content": "Hello"}}]}}'
    )
    return f"""
HybridInference is up at {base}

  console:      {console_line(settings, base)}

  OpenAI-compatible, streaming:
    curl -N {base}/v1/chat/completions -H 'content-type: application/json' \\
      -d '{body}'
  openai SDK:
    OpenAI(base_url="{base}/v1", api_key="unused")
  gRPC (reflection is on):
    grpcurl -plaintext {grpc_target} list
  CLI:
    {cli} chat "Hello"
    {cli} status

  services:
{ports}
  config:       {config if config is not None else "built-in defaults (no --config / HI_CONFIG)"}
  auth:         {auth_line(settings)}
  request log:  {request_log(settings, cwd)}
  process logs: {log_dir}/

Press Ctrl-C to stop (in-flight streams drain first).
"""
