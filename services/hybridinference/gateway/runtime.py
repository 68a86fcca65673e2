"""What the gateway's servicers share: limits, the router client, the record shipper, deadlines."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence

import grpc

from hybridinference.common.edge_settings import TlsSettings
from hybridinference.common.errors import ServiceError, abort
from hybridinference.common.settings import GatewaySettings
from hybridinference.gateway import client_deadline
from hybridinference.gateway import metrics as gateway_metrics
from hybridinference.gateway.admission import prepare
from hybridinference.gateway.chat_call import ChatCall
from hybridinference.gateway.edge import Edge, visible_models
from hybridinference.gateway.execution import Execution
from hybridinference.gateway.model_catalog import ModelCatalog
from hybridinference.gateway.partial_usage import complete_partial
from hybridinference.gateway.records import DEFAULT_CAPTURE_MAX_CHARS, build_record
from hybridinference.gateway.request_ids import check_request_id
from hybridinference.gateway.router_client import RouterClient
from hybridinference.gateway.shipper import RecordShipper
from hybridinference.gateway.validation import Limits
from hybridinference.router.v1 import router_pb2

log = logging.getLogger(__name__)

# A call's invocation metadata.
Metadata = Sequence[tuple[str, str | bytes]] | None


class GatewayRuntime:
    def __init__(
        self,
        settings: GatewaySettings,
        edge: Edge | None = None,
        router_tls: TlsSettings | None = None,
        logger_tls: TlsSettings | None = None,
        router: RouterClient | None = None,
        capture_content: bool = False,
        capture_max_chars: int = DEFAULT_CAPTURE_MAX_CHARS,
        output_prices: Mapping[str, float] | None = None,
    ) -> None:
        self.settings = settings
        # USD per million output tokens by endpoint: what a stream that ended early is charged.
        self.output_prices = dict(output_prices or {})
        # logger.capture_content: records carry the prompt and the response text.
        self.capture_content = capture_content
        self.capture_max_chars = capture_max_chars
        self.limits = Limits(
            max_messages=settings.max_messages,
            max_message_chars=settings.max_message_chars,
            max_tokens_cap=settings.max_tokens_cap,
            max_tokens_caps=dict(settings.max_tokens_caps),
        )
        # Authentication, model access and quotas (all off unless gateway.auth.enabled).
        self.edge = edge or Edge.disabled()
        # ``router``: a client of the router hosted in this process; else the router service.
        self.router = router or RouterClient.dial(settings.router_address, router_tls)
        # Models and their capabilities, for the admission checks and the model lists.
        self.catalog = ModelCatalog(self.router)
        self.shipper = RecordShipper(
            settings.logger_address,
            queue_size=settings.log_queue_size,
            batch_size=settings.log_batch_size,
            flush_interval_s=settings.log_flush_interval_s,
            spool_dir=settings.log_spool_dir.format(port=settings.port),
            spool_max_bytes=settings.log_spool_max_bytes,
            tls=logger_tls,
        )

    async def start(self) -> None:
        await self.shipper.start()
        await self.edge.start()

    async def close(self) -> None:
        await self.router.close()
        await self.edge.close()
        await self.shipper.close(timeout_s=5.0)

    async def admit(
        self,
        execution: Execution,
        metadata: Metadata,
        parse: Callable[[], ChatCall],
    ) -> None:
        """Both surfaces' admission, in order: request id and key (400, 401), the request
        against its model (400), then model access (403) and quotas (429)."""
        check_request_id(metadata)
        self.edge.authenticate(execution, metadata)
        execution.call = call = parse()
        caps = await self.catalog.capabilities(call.model) if call.model else None
        prepare(call, caps, self.limits)
        await self.edge.admit(execution)

    async def visible_routes(self, metadata: Metadata) -> list[router_pb2.ModelRoute]:
        """The models the caller may use, with the output limit the gateway enforces."""
        key = self.edge.authenticate_caller(metadata)
        routes = []
        for cached in visible_models(key, await self.catalog.routes()):
            # A copy: the catalog's routes are shared by every caller.
            route = router_pb2.ModelRoute()
            route.CopyFrom(cached)
            caps = route.capabilities
            caps.max_output_tokens = self.limits.tokens_cap(
                route.name, caps.max_output_tokens or None
            )
            routes.append(route)
        return routes

    def timeout(self, context: grpc.aio.ServicerContext) -> float:
        """The client's remaining deadline (gRPC's, or an HTTP client's header), capped by the
        configured request timeout."""
        limits = [self.settings.request_timeout_s]
        remaining = context.time_remaining()
        if remaining is not None:
            limits.append(remaining)
        wanted = client_deadline.deadline_s(context.invocation_metadata())
        if wanted is not None:
            limits.append(wanted)
        return min(limits)

    def record(self, execution: Execution) -> None:
        # Releases the quota slot and charges tokens/cost, then ships the record; neither is
        # awaited (both run in the background). A stream that ended before its completion is
        # charged and recorded for the output it streamed.
        complete_partial(execution, self.output_prices)
        self.edge.settle(execution)
        self.shipper.submit(build_record(execution, self.capture_max_chars))
        gateway_metrics.observe_request(execution)

    @contextlib.asynccontextmanager
    async def guarded(
        self, execution: Execution, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[None]:
        """Turns errors into rich gRPC statuses and sends the request record, whatever happens."""
        try:
            yield
        except ServiceError as error:
            execution.fail(error)
            await abort(context, error)
        except (asyncio.CancelledError, GeneratorExit):
            # The client went away: cancelled, or the stream closed by its consumer (gRPC
            # closes a server stream's generator). Either way the request is a cancel.
            execution.fail(ServiceError(grpc.StatusCode.CANCELLED, "client cancelled"))
            raise
        except Exception:
            log.exception("unexpected error")
            internal = ServiceError(grpc.StatusCode.INTERNAL, "internal error", "internal")
            execution.fail(internal)
            await abort(context, internal)
        finally:
            self.record(execution)
