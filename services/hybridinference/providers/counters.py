"""Per-endpoint call counters kept by the worker, reported through GetStatus."""

from __future__ import annotations

from dataclasses import dataclass

from hybridinference.provider.v1 import provider_pb2


@dataclass
class EndpointCounters:
    running: int = 0
    completed_total: int = 0
    cancelled_total: int = 0
    failed_total: int = 0

    def fill(self, status: provider_pb2.EndpointStatus) -> provider_pb2.EndpointStatus:
        """Writes the worker-side counters into an adapter's status and returns it."""
        status.running = self.running
        status.completed_total = self.completed_total
        status.cancelled_total = self.cancelled_total
        status.failed_total = self.failed_total
        return status
