"""Whether grpc.health.v1 and server reflection answer through Envoy's public listener.

They let anyone who reaches the port list every service and method and watch the gateway's
health; handy for grpcurl on a developer's machine, not something to hand the internet. So the
rendered config answers them at the edge with 404 (gRPC clients see UNIMPLEMENTED) unless
``envoy.public_introspection`` is on, which it is by default only while ``gateway.auth`` is off.
The committed envoy.yaml (auth off) keeps them open; nothing here touches its HTTP routes: the
refusing routes are put in front of them when rendering. Health checks of the services on their
own ports (compose, systemd, the launcher) are unaffected.
"""

from __future__ import annotations

from typing import Any

from hybridinference.common.settings import MeshSettings

# Path prefixes of the introspection services (both reflection versions grpcurl may try).
INTROSPECTION_PREFIXES = (
    "/grpc.reflection.v1.ServerReflection/",
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.health.v1.Health/",
)


def public_introspection(settings: MeshSettings) -> bool:
    chosen = settings.envoy.public_introspection
    return chosen if chosen is not None else not settings.gateway.auth.enabled


def refusing_routes() -> list[dict[str, Any]]:
    return [
        {
            "name": f"introspection-off:{prefix.strip('/')}",
            "match": {"prefix": prefix},
            "direct_response": {"status": 404, "body": {"inline_string": "not found"}},
        }
        for prefix in INTROSPECTION_PREFIXES
    ]


def restrict_introspection(hcms: list[dict[str, Any]], settings: MeshSettings) -> None:
    """Puts the refusing routes first in every virtual host of the public listener's HCMs."""
    if public_introspection(settings):
        return
    for hcm in hcms:
        for host in hcm["route_config"]["virtual_hosts"]:
            host["routes"] = [*refusing_routes(), *host["routes"]]
