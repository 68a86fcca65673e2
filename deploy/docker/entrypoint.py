#!/usr/bin/env python3
"""The image's entry point: the first argument names the service, the rest are its arguments.

    IMAGE gateway  [--config F] [--host H] [--port P]     python -m hybridinference.gateway
    IMAGE router   [...]                                   python -m hybridinference.router
    IMAGE logger   [...]                                   python -m hybridinference.logger
    IMAGE provider --worker NAME [...]                     python -m hybridinference.providers
    IMAGE cli ARGS                                         the `hybridinference` command
    IMAGE healthcheck HOST:PORT                            exit 0 iff grpc.health.v1 says SERVING

The service replaces this process (exec), so it is the one that gets SIGTERM from `docker stop`
and drains its in-flight calls.
"""

from __future__ import annotations

import os
import sys

# Service name → the module that runs it. Compose commands are checked against this table.
SERVICES: dict[str, str] = {
    "gateway": "hybridinference.gateway",
    "router": "hybridinference.router",
    "logger": "hybridinference.logger",
    "provider": "hybridinference.providers",
    "cli": "hybridinference.cli",
}

USAGE = (
    "usage: ENTRYPOINT {" + "|".join([*SERVICES, "healthcheck"]) + "} [ARGS...]\n"
    "  e.g. gateway --host 0.0.0.0, provider --worker sim, healthcheck 127.0.0.1:50051"
)


def healthcheck(address: str, timeout_s: float = 3.0) -> int:
    """grpc.health.v1 Check of the whole server (service ""), as Envoy's health check does."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(address) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=timeout_s
            )
        except grpc.RpcError as error:
            print(f"{address}: {error.code().name}", file=sys.stderr)
            return 1
    if reply.status != health_pb2.HealthCheckResponse.SERVING:
        print(f"{address}: {health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)}")
        return 1
    return 0


def main(argv: list[str]) -> int:
    if not argv or argv[0] in {"-h", "--help"}:
        print(USAGE)
        return 0 if argv else 2
    command, args = argv[0], argv[1:]
    if command == "healthcheck":
        if len(args) != 1:
            print("usage: healthcheck HOST:PORT", file=sys.stderr)
            return 2
        return healthcheck(args[0])
    module = SERVICES.get(command)
    if module is None:
        print(f"unknown service {command!r}\n{USAGE}", file=sys.stderr)
        return 2
    os.execv(sys.executable, [sys.executable, "-m", module, *args])
    return 0  # not reached: execv replaces this process


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
