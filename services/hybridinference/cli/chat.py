"""``hybridinference chat``: streams a reply through the typed gRPC API (ChatStream)."""

from __future__ import annotations

import argparse
import sys

import grpc

from hybridinference.cli import rpc
from hybridinference.common.settings import MeshSettings
from hybridinference.common.v1 import chat_pb2
from hybridinference.gateway.v1 import gateway_pb2, gateway_pb2_grpc


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser("chat", help="stream a reply to a prompt")
    parser.add_argument("prompt", help='the user message ("-" reads it from stdin)')
    parser.add_argument("--model", help="model name (default: the first configured model)")
    parser.add_argument("--system", help="a system message to send before the prompt")
    parser.add_argument("--max-tokens", type=_positive, help="upper bound on generated tokens")
    parser.add_argument(
        "--url", help="Envoy's URL (default: from the config, e.g. http://127.0.0.1:8080)"
    )
    parser.add_argument(
        "--direct",
        action="store_true",
        help="call the gateway's port instead of going through Envoy",
    )
    parser.add_argument("--timeout", type=float, default=300.0, help="deadline in seconds")
    parser.set_defaults(run=run)


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be a positive integer")
    return value


def default_model(settings: MeshSettings) -> str:
    if not settings.models:
        raise rpc.CliError("no models are configured; pass --model")
    return settings.models[0].name


def build_request(
    model: str, prompt: str, system: str | None, max_tokens: int | None
) -> gateway_pb2.ChatStreamRequest:
    messages = []
    if system:
        messages.append(chat_pb2.ChatMessage(role="system", content=system))
    messages.append(chat_pb2.ChatMessage(role="user", content=prompt))
    sampling = chat_pb2.SamplingParams()
    if max_tokens is not None:
        sampling.max_tokens = max_tokens
    return gateway_pb2.ChatStreamRequest(model=model, messages=messages, sampling=sampling)


def footer(request_id: str, last: gateway_pb2.ChatStreamResponse | None) -> str:
    """One line for stderr after the reply: what served it and what it cost in tokens."""
    parts = []
    if request_id:
        parts.append(f"request {request_id}")
    if last is not None:
        if last.model:
            parts.append(f"model {last.model}")
        if last.endpoint:
            parts.append(f"endpoint {last.endpoint}")
        if last.HasField("usage"):
            usage = last.usage
            parts.append(f"tokens {usage.prompt_tokens} in / {usage.completion_tokens} out")
        if last.finish_reason:
            name = chat_pb2.FinishReason.Name(last.finish_reason)
            parts.append(f"finish {name.removeprefix('FINISH_REASON_').lower()}")
    return "[" + " · ".join(parts) + "]"


def run(args: argparse.Namespace, settings: MeshSettings) -> int:
    target = rpc.gateway_target(settings, args.url, args.direct)
    prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
    request = build_request(
        args.model or default_model(settings), prompt, args.system, args.max_tokens
    )
    with rpc.channel(target) as channel:
        stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        call = stub.ChatStream(request, timeout=args.timeout)
        last: gateway_pb2.ChatStreamResponse | None = None
        try:
            for response in call:
                # Each delta as it arrives; the last event carries usage and the finish reason.
                if response.delta:
                    sys.stdout.write(response.delta)
                    sys.stdout.flush()
                last = response
        except grpc.RpcError as error:
            if last is not None:
                sys.stdout.write("\n")
            raise rpc.CliError(rpc.describe(error, target)) from None
        except KeyboardInterrupt:
            # Cancelling the call cancels the whole chain down to the provider.
            call.cancel()
            sys.stdout.write("\n")
            raise
        metadata = dict(call.initial_metadata() or ())
    sys.stdout.write("\n")
    sys.stdout.flush()
    request_id = str(metadata.get("x-request-id", "") or (last.id if last else ""))
    print(footer(request_id, last), file=sys.stderr)
    return 0
