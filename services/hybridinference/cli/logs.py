"""``hybridinference logs``: one request's record, or the latest records, from the logger."""

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
    parser = commands.add_parser("logs", help="request records from the logger")
    parser.add_argument(
        "request_id",
        nargs="?",
        help="show the records with this id as JSON: the caller's x-request-id (every request "
        "sent with it) or a record's own key",
    )
    parser.add_argument("--list", action="store_true", help="list the latest records")
    parser.add_argument("--model", default="", help="with --list: only this requested model")
    parser.add_argument("--provider", default="", help="with --list: only this provider")
    parser.add_argument("--status", default="", help="with --list: only this status, e.g. OK")
    parser.add_argument("--key", default="", help="with --list: only this API key id")
    parser.add_argument("--since", default="", help="with --list: from a date or an age (24h)")
    parser.add_argument("--until", default="", help="with --list: before a date or an age")
    parser.add_argument("--limit", type=int, default=20, help="with --list: how many (1..1000)")
    parser.add_argument(
        "--json",
        action="store_true",
        help="with --list: one JSON object per line instead of a table",
    )
    parser.set_defaults(run=run)


def validate(args: argparse.Namespace) -> str | None:
    """A usage error for an inconsistent combination of arguments, else None."""
    if args.list and args.request_id:
        return "give a REQUEST_ID or --list, not both"
    if not args.list and not args.request_id:
        return "give a REQUEST_ID, or --list for the latest records"
    filters = (args.model, args.provider, args.status, args.key, args.since, args.until)
    if not args.list and (any(filters) or args.json):
        return (
            "--model, --provider, --status, --key, --since, --until and --json only apply "
            "with --list"
        )
    for name in ("since", "until"):
        value = getattr(args, name)
        if value:
            try:
                parse_time(value)
            except ValueError as error:
                return f"--{name}: {error}"
    if not 1 <= args.limit <= 1000:
        return "--limit must be between 1 and 1000"
    return None


def list_request(args: argparse.Namespace) -> logger_pb2.ListRecordsRequest:
    request = logger_pb2.ListRecordsRequest(
        model=args.model,
        provider=args.provider,
        status=args.status,
        api_key_id=args.key,
        page_size=args.limit,
    )
    if args.since:
        request.start_time.CopyFrom(to_timestamp(parse_time(args.since)))
    if args.until:
        request.end_time.CopyFrom(to_timestamp(parse_time(args.until)))
    return request


def record_json(record: logger_pb2.RequestRecord, indent: int | None = 2) -> str:
    return json_format.MessageToJson(
        record, preserving_proto_field_name=True, indent=indent, sort_keys=False
    )


def records_table(records: list[logger_pb2.RequestRecord]) -> str:
    rows = [
        (
            r.request_id,
            r.started_at.ToDatetime().strftime("%Y-%m-%d %H:%M:%S")
            if r.HasField("started_at")
            else "-",
            r.requested_model,
            r.endpoint or "-",
            r.status,
            r.ttft_ms,
            r.latency_ms,
            r.usage.total_tokens,
        )
        for r in records
    ]
    headers = [
        "request_id",
        "started (UTC)",
        "model",
        "endpoint",
        "status",
        "ttft_ms",
        "latency_ms",
        "tokens",
    ]
    return format_table(headers, rows)


def records_for(
    stub: logger_pb2_grpc.LoggerServiceStub, request_id: str
) -> list[logger_pb2.RequestRecord]:
    """Every record the id names, oldest first: those sent with it as x-request-id (several when
    a caller reused it), else the one whose key it is (also how records stored before the caller's
    id had a column of its own are found)."""
    found: list[logger_pb2.RequestRecord] = []
    token = ""
    while True:
        page = stub.ListRecords(
            logger_pb2.ListRecordsRequest(
                client_request_id=request_id, page_size=1000, page_token=token
            ),
            timeout=10,
        )
        found.extend(page.records)
        token = page.next_page_token
        if not token:
            break
    if not found:
        try:
            reply = stub.GetRecord(logger_pb2.GetRecordRequest(request_id=request_id), timeout=10)
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.NOT_FOUND:
                raise
        else:
            found.append(reply.record)
    return found[::-1]


def run(args: argparse.Namespace, settings: MeshSettings) -> int:
    problem = validate(args)
    if problem:
        raise rpc.CliError(problem)
    target = settings.logger.dial_address
    with rpc.channel(target, settings.logger.tls) as channel:
        stub = logger_pb2_grpc.LoggerServiceStub(channel)
        try:
            if args.request_id:
                found = records_for(stub, args.request_id)
                if not found:
                    raise rpc.CliError(f"no record with request id {args.request_id!r}")
                for record in found:
                    print(record_json(record))
                return 0
            listing = stub.ListRecords(list_request(args), timeout=10)
        except grpc.RpcError as error:
            raise rpc.CliError(rpc.describe(error, target)) from None
    records = list(listing.records)
    if args.json:
        for record in records:
            print(record_json(record, indent=None))
    else:
        print(records_table(records) if records else "no records")
    return 0
