"""Tokens/s of the vllm adapter's two modes on the tiny random Llama of the real-vLLM tests.

    py="$(bash tests/vllm/install_vllm.sh)"   # the vLLM virtualenv's python (installs it once)
    "$py" bench/vllm_modes.py [--max-tokens 128] [--concurrency 1 8] [--runs 9] [--rounds 2]

Builds the tiny model (``support/tiny_model.py``) in a temporary directory, starts vLLM's
OpenAI server on loopback (the same flags as ``tests/vllm``) and, in this process, the
in-process engine (``vllm_engine`` settings), both from the factory the provider worker uses
(``build_adapter("vllm", ...)``). Both modes then answer the same greedy chat request (fixed
prompt, temperature 0, ``max_tokens``) through ``adapter.generate`` — the streaming call the
worker makes — so the numbers include each adapter's own path (HTTP + SSE + JSON vs the engine's
deltas in this process), not raw vLLM.

A run at concurrency C is C streams, each sending ``--rounds`` requests one after the other;
tokens/s = completion tokens (the adapter's final usage) / wall time of the run, and CPU
ms/token = CPU time of this process and all its children (vLLM server, engine-core processes)
during the run / completion tokens (less sensitive than wall time to other load on the machine).
The modes are interleaved (one run each per concurrency and repetition, order alternating), after
a warm-up request per mode and concurrency; ``engine_over_http`` is the ratio of the medians,
``engine_over_http_paired`` the median of each repetition's adjacent pair. The adapter has no
``ignore_eos``, so equal lengths rest on greedy decoding: the script checks that every request
of both modes gave the same text and token count (``same_output``) and reports finish reasons.

Prints one JSON object on stdout (per mode and concurrency: every run's tokens/s, medians of
tokens/s, CPU ms/token and time to first token; the engine/http ratios; startup times) and a
small table on stderr. The vLLM server is stopped (SIGINT) and the engine shut down at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# This checkout first (the vLLM venv's editable install may point at another one).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "services"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hybridinference.common.settings import ProviderEndpointSettings, VllmEngineSettings
from hybridinference.common.v1 import chat_pb2
from hybridinference.provider.v1 import provider_pb2
from hybridinference.providers.adapter import ProviderAdapter, build_adapter
from hybridinference.providers.vllm_engine import VllmEngineAdapter
from support.procs import free_port, stop_process

SERVED = "tiny"
MAX_MODEL_LEN = 512
# With greedy decoding the tiny model does not pick EOS within the first 128 tokens of this prompt
# (tests/vllm's cancellation test uses it as a long-running request), so both modes stop at
# max_tokens; finish_reasons and same_output in the report show it.
PROMPT = "hello there, how are you today?"
MODES = ("http", "engine")
IDLE_PROBE_S = 3.0


@dataclass
class Outcome:
    prompt_tokens: int
    tokens: int
    ttft_s: float
    text: str
    finish: str


@dataclass
class ModeRuns:
    tokens_per_s: list[float] = field(default_factory=list)
    cpu_ms_per_token: list[float] = field(default_factory=list)
    ttft_s: list[float] = field(default_factory=list)
    outputs: set[tuple[str, int, int]] = field(default_factory=set)
    finishes: set[str] = field(default_factory=set)


def request(max_tokens: int, request_id: str) -> provider_pb2.GenerateRequest:
    return provider_pb2.GenerateRequest(
        request_id=request_id,
        endpoint="bench",
        messages=[chat_pb2.ChatMessage(role="user", content=PROMPT)],
        sampling=chat_pb2.SamplingParams(max_tokens=max_tokens, temperature=0.0),
    )


def tree_cpu_s() -> float:
    """CPU seconds (user + system) so far of this process and all its descendants: the vLLM
    server and its engine-core process, and the in-process engine's engine-core process."""
    ticks = os.sysconf("SC_CLK_TCK")
    parent: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        parent[int(entry)] = int(fields[1])
        cpu[int(entry)] = (int(fields[11]) + int(fields[12])) / ticks
    tree = {os.getpid()}
    grown = True
    while grown:
        found = {pid for pid, ppid in parent.items() if ppid in tree} - tree
        tree |= found
        grown = bool(found)
    return sum(cpu.get(pid, 0.0) for pid in tree)


async def one(adapter: ProviderAdapter, max_tokens: int, request_id: str) -> Outcome:
    start = time.perf_counter()
    ttft = 0.0
    parts: list[str] = []
    last = provider_pb2.GenerateResponse()
    async for event in adapter.generate(request(max_tokens, request_id)):
        if event.delta:
            if not parts:
                ttft = time.perf_counter() - start
            parts.append(event.delta)
        last = event
    finish = chat_pb2.FinishReason.Name(last.finish_reason)
    usage = last.usage
    return Outcome(usage.prompt_tokens, usage.completion_tokens, ttft, "".join(parts), finish)


async def run(
    adapter: ProviderAdapter, concurrency: int, rounds: int, max_tokens: int
) -> tuple[float, list[Outcome]]:
    """(wall seconds, outcomes) of ``concurrency`` streams of ``rounds`` sequential requests."""

    async def stream(index: int) -> list[Outcome]:
        return [
            await one(adapter, max_tokens, f"bench-{concurrency}-{index}-{round_}")
            for round_ in range(rounds)
        ]

    start = time.perf_counter()
    per_stream = await asyncio.gather(*(stream(index) for index in range(concurrency)))
    wall = time.perf_counter() - start
    return wall, [outcome for outcomes in per_stream for outcome in outcomes]


def server_healthy(url: str, proc: subprocess.Popen[bytes], log: Path) -> bool:
    if proc.poll() is not None:
        raise RuntimeError(f"vLLM server exited:\n{log.read_text(errors='replace')[-5000:]}")
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as reply:
            return bool(reply.status == 200)
    except OSError:
        return False


def start_server(
    model_dir: Path, log: Path, env: dict[str, str], timeout_s: float
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable, "-m", "vllm.entrypoints.openai.api_server",
                "--model", str(model_dir), "--served-model-name", SERVED,
                "--dtype", "float32", "--enforce-eager", "--max-model-len", str(MAX_MODEL_LEN),
                "--host", "127.0.0.1", "--port", str(port),
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    deadline = time.monotonic() + timeout_s
    try:
        while not server_healthy(url, proc, log):
            if time.monotonic() > deadline:
                raise TimeoutError(f"vLLM server not healthy after {timeout_s}s")
            time.sleep(0.5)
    except BaseException:
        stop_process(proc, signal.SIGINT, timeout_s=30)
        raise
    return proc, url


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else 0.0


async def measure(args: argparse.Namespace, model_dir: Path, url: str) -> dict[str, Any]:
    adapters: dict[str, ProviderAdapter] = {
        "http": build_adapter(
            "vllm",
            ProviderEndpointSettings(
                id="bench-http", model=SERVED, base_url=f"{url}/v1", first_token_timeout_s=600
            ),
        ),
        "engine": build_adapter(
            "vllm",
            ProviderEndpointSettings(
                id="bench-engine",
                model=SERVED,
                first_token_timeout_s=600,
                vllm_engine=VllmEngineSettings(
                    model_path=str(model_dir),
                    dtype="float32",
                    enforce_eager=True,
                    max_model_len=MAX_MODEL_LEN,
                ),
            ),
        ),
    }
    results: dict[str, dict[int, ModeRuns]] = {
        mode: {c: ModeRuns() for c in args.concurrency} for mode in MODES
    }
    try:
        engine = adapters["engine"]
        assert isinstance(engine, VllmEngineAdapter)
        started = time.perf_counter()
        await engine.engine()
        engine_startup_s = time.perf_counter() - started
        for concurrency in args.concurrency:
            for mode in MODES:
                await run(adapters[mode], concurrency, 1, args.max_tokens)
        # What the idle processes (server, both engine cores) burn: part of every run's CPU.
        cpu_before = tree_cpu_s()
        await asyncio.sleep(IDLE_PROBE_S)
        idle_cpu_cores = (tree_cpu_s() - cpu_before) / IDLE_PROBE_S
        for repetition in range(args.runs):
            for concurrency in args.concurrency:
                order = MODES if (repetition + concurrency) % 2 == 0 else MODES[::-1]
                for mode in order:
                    cpu_before = tree_cpu_s()
                    wall, outcomes = await run(
                        adapters[mode], concurrency, args.rounds, args.max_tokens
                    )
                    cpu_s = tree_cpu_s() - cpu_before
                    tokens = sum(o.tokens for o in outcomes)
                    runs = results[mode][concurrency]
                    runs.tokens_per_s.append(tokens / wall)
                    runs.cpu_ms_per_token.append(cpu_s * 1000 / tokens)
                    runs.ttft_s.extend(o.ttft_s for o in outcomes)
                    runs.outputs.update((o.text, o.prompt_tokens, o.tokens) for o in outcomes)
                    runs.finishes.update(o.finish for o in outcomes)
                    print(
                        f"run {repetition + 1}/{args.runs} c={concurrency} {mode}: "
                        f"{runs.tokens_per_s[-1]:.1f} tok/s, "
                        f"{runs.cpu_ms_per_token[-1]:.2f} CPU ms/token",
                        file=sys.stderr,
                        flush=True,
                    )
    finally:
        for adapter in adapters.values():
            await adapter.close()
    outputs = {out for mode in MODES for runs in results[mode].values() for out in runs.outputs}
    report: dict[str, Any] = {
        "engine_startup_s": round(engine_startup_s, 1),
        "idle_cpu_cores": round(idle_cpu_cores, 3),
        "same_output": len(outputs) == 1,
        "prompt_tokens": sorted({prompt for _, prompt, _ in outputs}),
        "completion_tokens": sorted({tokens for _, _, tokens in outputs}),
        "modes": {},
        "engine_over_http": {},
        "engine_over_http_paired": {},
    }
    for mode in MODES:
        report["modes"][mode] = {
            str(c): {
                "tokens_per_s": [round(x, 1) for x in runs.tokens_per_s],
                "median_tokens_per_s": round(median(runs.tokens_per_s), 1),
                "max_tokens_per_s": round(max(runs.tokens_per_s, default=0.0), 1),
                "median_ttft_ms": round(median(runs.ttft_s) * 1000, 1),
                "median_cpu_ms_per_token": round(median(runs.cpu_ms_per_token), 3),
                "finish_reasons": sorted(runs.finishes),
                "distinct_outputs": len(runs.outputs),
            }
            for c, runs in results[mode].items()
        }
    for c in args.concurrency:
        http = median(results["http"][c].tokens_per_s)
        inproc = median(results["engine"][c].tokens_per_s)
        report["engine_over_http"][str(c)] = round(inproc / http, 2) if http else None
        # Each repetition's two runs are adjacent in time: their ratio cancels slow drift.
        pairs = zip(results["engine"][c].tokens_per_s, results["http"][c].tokens_per_s, strict=True)
        report["engine_over_http_paired"][str(c)] = round(median([e / h for e, h in pairs]), 2)
    return report


def table(report: dict[str, Any]) -> str:
    lines = [
        "| concurrency | http tok/s | engine tok/s | engine/http (paired) "
        "| CPU ms/token http | engine | TTFT ms http | engine |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c, ratio in report["engine_over_http"].items():
        http = report["modes"]["http"][c]
        engine = report["modes"]["engine"][c]
        lines.append(
            f"| {c} | {http['median_tokens_per_s']} | {engine['median_tokens_per_s']} | "
            f"{ratio} ({report['engine_over_http_paired'][c]}) | "
            f"{http['median_cpu_ms_per_token']} | {engine['median_cpu_ms_per_token']} | "
            f"{http['median_ttft_ms']} | {engine['median_ttft_ms']} |"
        )
    return "\n".join(lines)


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """File descriptor 1 goes to stderr meanwhile (vLLM logs to stdout, in this process and in
    the processes it starts), so stdout carries only the JSON object."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--runs", type=int, default=9, help="repetitions per mode and concurrency")
    parser.add_argument("--rounds", type=int, default=2, help="sequential requests per stream")
    parser.add_argument("--startup-timeout-s", type=float, default=600)
    args = parser.parse_args()

    load_before = round(os.getloadavg()[0], 2)
    # Imported here: tiny_model's torch/transformers imports are untyped (as in tests/vllm).
    tiny_model = importlib.import_module("support.tiny_model")
    vllm_env: dict[str, str] = tiny_model.VLLM_ENV  # the settings the real-vLLM tests use
    server_env = {**os.environ, **vllm_env}
    os.environ.update(vllm_env)
    # The in-process engine's logs would interleave with the progress lines.
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    with stdout_to_stderr(), tempfile.TemporaryDirectory(prefix="hi-vllm-bench-") as tmp:
        # Imported up front: importing it first inside the adapter's engine() leaves that frame,
        # and with it the AsyncLLM, referenced until interpreter exit, where its __del__ fails.
        importlib.import_module("vllm.v1.engine.async_llm")
        model_dir: Path = tiny_model.build(Path(tmp) / "tiny-llama")
        log = Path(tmp) / "vllm-server.log"
        started = time.perf_counter()
        proc, url = start_server(model_dir, log, server_env, args.startup_timeout_s)
        server_startup_s = time.perf_counter() - started
        try:
            report = asyncio.run(measure(args, model_dir, url))
        finally:
            stop_process(proc, signal.SIGINT, timeout_s=30)
    report = {
        "benchmark": "vllm_modes",
        "model": "tiny random Llama (support/tiny_model.py: 2 layers, hidden 64, float32)",
        "prompt": PROMPT,
        "max_tokens": args.max_tokens,
        "temperature": 0.0,
        "concurrency": args.concurrency,
        "runs": args.runs,
        "rounds_per_stream": args.rounds,
        "server_startup_s": round(server_startup_s, 1),
        **report,
        "cpus": os.cpu_count(),
        "load_avg_1m_before": load_before,
        "load_avg_1m_after": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "vllm": importlib.import_module("vllm").__version__,
    }
    print(json.dumps(report))
    print(table(report), file=sys.stderr)


if __name__ == "__main__":
    main()
