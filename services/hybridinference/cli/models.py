"""``hybridinference models``: the model names clients can ask for (GatewayService.ListModels)."""

from __future__ import annotations

import argparse

import grpc

from hybridinference.cli import rpc
from hybridinference.cli.table import format_table
from hybridinference.common.settings import MeshSettings
from hybridinference.gateway.v1 import gateway_pb2, gateway_pb2_grpc


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser("models", help="list the models clients can ask for")
    parser.add_argument("--url", help="Envoy's URL (default: from the config)")
    parser.add_argument("--direct", action="store_true", help="call the gateway's port directly")
    parser.set_defaults(run=run)


def models_table(models: list[gateway_pb2.Model]) -> str:
    rows = [(m.id, m.owned_by, ", ".join(m.providers) or "-") for m in models]
    return format_table(["model", "owned_by", "providers"], rows)


def run(args: argparse.Namespace, settings: MeshSettings) -> int:
    target = rpc.gateway_target(settings, args.url, args.direct)
    with rpc.channel(target) as channel:
        stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        try:
            reply = stub.ListModels(gateway_pb2.ListModelsRequest(), timeout=10)
        except grpc.RpcError as error:
            raise rpc.CliError(rpc.describe(error, target)) from None
    print(models_table(list(reply.models)))
    return 0
