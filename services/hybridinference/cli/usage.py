"""``hybridinference usage``: requests, tokens and cost per API key, model and UTC day."""

from __future__ import annotations

import argparse

import grpc
from google.protobuf import json_format

from hybridinference.cli import rpc
from hybridinference.cli.table import format_table
from hybridinference.cli.times import parse_time, to_timestamp
from hybridinference.common.settings import MeshSettings
from hybridinference.logger.v1 import logger_pb2, logger_pb2_grpc


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser("usage", help="usage per API key, model and day")
    parser.add_argument(
        "--since", default="7d", help="first day: a date, or an age like 24h or 30d (default 7d)"
    )
    parser.add_argument("--until", default="", help="end (exclusive): a date or an age")
    parser.add_argument("--key", default="", help="only this API key id")
    parser.add_argument("--model", default="", help="only this requested model")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.set_defaults(run=run)


def build_request(args: argparse.Namespace) -> logger_pb2.GetUsageRequest:
    """Raises rpc.CliError for a time it cannot read, or an empty range."""
    try:
        start = parse_time(args.since)
        end = parse_time(args.until) if args.until else None
    except ValueError as error:
        raise rpc.CliError(str(error)) from None
    if end is not None and start >= end:
        raise rpc.CliError("--since must be before --until")
    request = logger_pb2.GetUsageRequest(api_key_id=args.key, model=args.model)
    request.start_time.CopyFrom(to_timestamp(start))
    if end is not None:
        request.end_time.CopyFrom(to_timestamp(end))
    return request


def usage_table(buckets: list[logger_pb2.UsageBucket]) -> str:
    rows: list[tuple[object, ...]] = [
        (
            b.day.ToDatetime().strftime("%Y-%m-%d"),
            b.api_key_id or "-",
            b.model,
            b.requests,
            b.errors,
            b.prompt_tokens,
            b.completion_tokens,
            b.total_tokens,
            f"{b.cost_usd:.6f}",
        )
        for b in buckets
    ]
    if buckets:
        rows.append(
            (
                "total",
                "",
                "",
                sum(b.requests for b in buckets),
                sum(b.errors for b in buckets),
                sum(b.prompt_tokens for b in buckets),
                sum(b.completion_tokens for b in buckets),
                sum(b.total_tokens for b in buckets),
                f"{sum(b.cost_usd for b in buckets):.6f}",
            )
        )
    headers = ["day (UTC)", "key", "model", "requests", "errors", "prompt", "completion"]
    return format_table([*headers, "tokens", "cost_usd"], rows)


def run(args: argparse.Namespace, settings: MeshSettings) -> int:
    request = build_request(args)
    target = settings.logger.dial_address
    with rpc.channel(target, settings.logger.tls) as channel:
        stub = logger_pb2_grpc.LoggerServiceStub(channel)
        try:
            reply = stub.GetUsage(request, timeout=10)
        except grpc.RpcError as error:
            raise rpc.CliError(rpc.describe(error, target)) from None
    buckets = list(reply.buckets)
    if args.json:
        for bucket in buckets:
            print(json_format.MessageToJson(bucket, preserving_proto_field_name=True, indent=None))
    else:
        print(usage_table(buckets) if buckets else "no usage in that range")
    return 0
