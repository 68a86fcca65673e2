"""ConsoleService: the web console's static files as google.api.HttpBody, through Envoy.

Public on purpose: the files hold no data. The page keeps the admin key in the browser's
session storage and sends it with each AdminService call; nothing is stored server-side.
"""

from __future__ import annotations

import grpc
from google.api import httpbody_pb2

from hybridinference.common.errors import ServiceError, abort
from hybridinference.gateway.console import assets
from hybridinference.gateway.v1 import console_pb2, console_pb2_grpc

# Everything the page loads is its own; no inline scripts. uPlot sizes its elements through
# element.style, which CSP does not govern, but its legend markup sets style attributes.
HEADERS = (
    (
        "content-security-policy",
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    ),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    # Fetched again on every load (about 60 KB), so an upgraded gateway serves its own files.
    ("cache-control", "no-store"),
)


class ConsoleServicer(console_pb2_grpc.ConsoleServiceServicer):
    def __init__(self, table: dict[str, assets.Asset] | None = None) -> None:
        self._assets = assets.load() if table is None else table

    async def GetAsset(
        self, request: console_pb2.GetAssetRequest, context: grpc.aio.ServicerContext
    ) -> httpbody_pb2.HttpBody:
        asset = self._assets.get(request.path.strip("/"))
        if asset is None:
            await abort(
                context,
                ServiceError(
                    grpc.StatusCode.NOT_FOUND,
                    f"the console has no file {request.path[:200]!r}",
                    "console_file_not_found",
                ),
            )
        await context.send_initial_metadata(HEADERS)
        return httpbody_pb2.HttpBody(content_type=asset.content_type, data=asset.data)
