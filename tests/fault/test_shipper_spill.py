"""The gateway's record queue, far too small for a burst, spills to its spool instead of dropping:
every one of a burst of concurrent requests leaves exactly one row (real processes via `make up`'s
launcher, Envoy in front)."""

from __future__ import annotations

import json
import sqlite3
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from support.launched import Mesh, launched
from support.polling import poll

N = 60


def _chat(mesh: Mesh, i: int) -> int:
    request = urllib.request.Request(
        f"http://127.0.0.1:{mesh.envoy_port}/v1/chat/completions",
        data=json.dumps(
            {"model": "hi-sim", "messages": [{"role": "user", "content": f"hi {i}"}]}
        ).encode(),
        headers={"content-type": "application/json", "x-request-id": f"burst-{i}"},
    )
    with urllib.request.urlopen(request, timeout=20) as reply:
        reply.read()
        return int(reply.status)


def _rows(db: Path) -> int | None:
    if not db.exists():
        return None
    with sqlite3.connect(db) as conn:
        (count,) = conn.execute(
            "SELECT count(*) FROM request_log WHERE client_request_id LIKE 'burst-%'"
        ).fetchone()
    return int(count)


def test_a_burst_past_a_tiny_queue_leaves_every_row(tmp_path: Path) -> None:
    # A queue of one record and batches of one: nearly every record of the burst finds it full.
    gateway = {"log_queue_size": 1, "log_batch_size": 1}
    with launched(tmp_path, gateway=gateway) as mesh:
        with ThreadPoolExecutor(max_workers=16) as pool:
            statuses = list(pool.map(lambda i: _chat(mesh, i), range(N)))
        assert statuses == [200] * N
        poll(lambda: True if _rows(mesh.db_path) == N else None, 30, f"{N} rows")
        with urllib.request.urlopen(
            f"http://127.0.0.1:{mesh.gateway_metrics_port}/metrics", timeout=5
        ) as reply:
            metrics = reply.read().decode()
        dropped = [
            line
            for line in metrics.splitlines()
            if line.startswith("hi_gateway_log_records_dropped_total")
        ]
        assert dropped == ["hi_gateway_log_records_dropped_total 0.0"], dropped
