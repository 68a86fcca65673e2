"""What the gateway's servicers share: limits, the router client, the record shipper, deadlines."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import grpc

from hybridinference.common.edge_settings import TlsSettings
from hybridinference.common.errors import ServiceError, abort
from hybridinference.common.settings import GatewaySettings
from hybridinference.gateway import client_deadline
from hybridinference.gateway import metrics as gateway_metrics
from hybridinference.gateway.edge import Edge
from hybridinference.gateway.records import DEFAULT_CAPTURE_MAX_CHARS, build_record
from hybridinference.gateway.router_client import Execution, RouterClient
from hybridinference.gateway.shipper import RecordShipper
from hybridinference.gateway.validation import Limits

log = logging.getLogger(__name__)


class GatewayRuntime:
    def __init__(
        self,
        settings: GatewaySettings,
        edge: Edge | None = None,
        router_tls: TlsSettings | None = None,
        router: RouterClient | None = None,
        capture_content: bool = False,
        capture_max_chars: int = DEFAULT_CAPTURE_MAX_CHARS,
    ) -> None:
        self.settings = settings
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
        self.shipper = RecordShipper(
            settings.logger_address,
            queue_size=settings.log_queue_size,
            batch_size=settings.log_batch_size,
            flush_interval_s=settings.log_flush_interval_s,
            spool_dir=settings.log_spool_dir.format(port=settings.port),
            spool_max_bytes=settings.log_spool_max_bytes,
        )

    async def start(self) -> None:
        await self.shipper.start()
        await self.edge.start()

    async def close(self) -> None:
        await self.router.close()
        await self.edge.close()
        await self.shipper.close(timeout_s=5.0)

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
        # awaited (both run in the background).
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
        except asyncio.CancelledError:
            execution.fail(ServiceError(grpc.StatusCode.CANCELLED, "client cancelled"))
            raise
        except Exception:
            log.exception("unexpected error")
            internal = ServiceError(grpc.StatusCode.INTERNAL, "internal error", "internal")
            execution.fail(internal)
            await abort(context, internal)
        finally:
            self.record(execution)
