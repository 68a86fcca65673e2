"""``hybridinference``: talk to a running HybridInference mesh from the terminal."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from hybridinference.cli import chat, keys, logs, models, rpc, status, usage
from hybridinference.common.settings import CONFIG_ENV, ConfigError, MeshSettings, load_settings

Run = Callable[[argparse.Namespace, MeshSettings], int]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hybridinference",
        description="Chat with, inspect and query a running HybridInference mesh.",
    )
    parser.add_argument(
        "--config",
        help=f"mesh YAML file (default: ${CONFIG_ENV} or built-in); "
        "tells the CLI where each service listens",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (chat, status, logs, models, keys, usage):
        module.add_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings(args.config)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    run: Run = args.run
    try:
        return run(args, settings)
    except rpc.CliError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
