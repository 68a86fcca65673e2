"""``hybridinference keys create|list|set-limits|revoke``: API keys.

Through a running gateway's admin API when an admin key is given (``--admin-key`` or
``$HI_ADMIN_KEY``), else straight to the key store, so the first admin key can be made before
anything runs (cli/key_backends.py says how the two are chosen). From the store, ``create`` needs
the server secret (``$HI_AUTH_SECRET`` by default) that the gateways hash keys with.
"""

from __future__ import annotations

import argparse
import sys
from typing import TypeVar

import orjson
from pydantic import ValidationError

from hybridinference.cli import rpc
from hybridinference.cli.key_backends import ADMIN_KEY_ENV, KeyBackend, KeyView, choose
from hybridinference.cli.table import format_table
from hybridinference.common.edge_settings import KeyLimitSettings
from hybridinference.common.settings import MeshSettings
from hybridinference.keys.issue import MAX_NAME_CHARS

T = TypeVar("T")


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser("keys", help="create, list, limit and revoke API keys")
    parser.add_argument(
        "--admin-key",
        help=f"an admin key: manage keys through the gateway's admin API (${ADMIN_KEY_ENV})",
    )
    parser.add_argument("--url", help="the admin API at http://HOST:PORT (default: Envoy's port)")
    parser.add_argument("--direct", action="store_true", help="the gateway's own port, not Envoy")
    actions = parser.add_subparsers(dest="keys_action", required=True, metavar="ACTION")

    create = actions.add_parser("create", help="create a key and print it (shown only once)")
    create.add_argument("name", help="who or what the key is for")
    create.add_argument("--admin", action="store_true", help="may call admin operations")
    create.add_argument(
        "--model",
        action="append",
        default=[],
        dest="models",
        help="a model the key may use (repeat; default: every model)",
    )
    add_limit_options(create)
    create.add_argument("--json", action="store_true", help="print the new key as JSON")
    create.set_defaults(run=run_create)

    listing = actions.add_parser("list", help="list keys (never the keys themselves)")
    listing.add_argument("--all", action="store_true", help="include revoked keys")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    listing.set_defaults(run=run_list)

    limits = actions.add_parser(
        "set-limits", help="replace a key's limits (unset ones fall back to the defaults)"
    )
    limits.add_argument("key_id")
    add_limit_options(limits)
    limits.set_defaults(run=run_set_limits)

    revoke = actions.add_parser("revoke", help="revoke a key by its id (key_…)")
    revoke.add_argument("key_id")
    revoke.set_defaults(run=run_revoke)


def add_limit_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rpm", type=int, help="requests per minute")
    parser.add_argument("--tpm", type=int, help="tokens per minute")
    parser.add_argument("--max-concurrent", type=int, help="requests in flight at once")
    parser.add_argument("--daily-usd", type=float, help="spend per UTC day, USD")
    parser.add_argument("--monthly-usd", type=float, help="spend per UTC month, USD")


def backend(args: argparse.Namespace, settings: MeshSettings) -> KeyBackend:
    return choose(settings, args.admin_key, args.url, args.direct)


def limits_from(args: argparse.Namespace) -> KeyLimitSettings:
    try:
        return KeyLimitSettings(
            requests_per_minute=args.rpm,
            tokens_per_minute=args.tpm,
            max_concurrent=args.max_concurrent,
            daily_budget_usd=args.daily_usd,
            monthly_budget_usd=args.monthly_usd,
        )
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in item['loc'])}: {item['msg']}" for item in error.errors()
        )
        raise rpc.CliError(f"invalid limits: {problems}") from None


def key_json(key: KeyView) -> dict[str, object]:
    return {
        "id": key.id,
        "name": key.name,
        "prefix": key.prefix,
        "admin": key.admin,
        "models": list(key.models),
        "limits": key.limits.model_dump(exclude_none=True),
        "created_at": key.created_at.isoformat() if key.created_at else None,
        "revoked_at": key.revoked_at.isoformat() if key.revoked_at else None,
    }


def run_create(args: argparse.Namespace, settings: MeshSettings) -> int:
    name = args.name.strip()
    if not name or len(name) > MAX_NAME_CHARS:
        raise rpc.CliError(f"the name must be 1..{MAX_NAME_CHARS} characters")
    limits = limits_from(args)
    models = tuple(dict.fromkeys(args.models))
    key, plain = backend(args, settings).create(name, args.admin, models, limits)
    if args.json:
        print(orjson.dumps({**key_json(key), "key": plain}).decode())
    else:
        print(plain)
        print(
            f"created {key.id} ({name}); the key above is shown only once",
            file=sys.stderr,
        )
    if not settings.gateway.auth.enabled:
        print(
            "note: gateway.auth.enabled is off in this config, so keys are not checked yet",
            file=sys.stderr,
        )
    return 0


def keys_table(keys: list[KeyView]) -> str:
    rows = [
        (
            key.id,
            key.name,
            key.prefix + "…",
            "yes" if key.admin else "",
            ",".join(key.models) or "*",
            " ".join(f"{k}={v}" for k, v in key.limits.model_dump(exclude_none=True).items())
            or "-",
            key.created_at.strftime("%Y-%m-%d %H:%M") if key.created_at else "-",
            key.revoked_at.strftime("%Y-%m-%d %H:%M") if key.revoked_at else "",
        )
        for key in keys
    ]
    headers = ["id", "name", "prefix", "admin", "models", "limits", "created", "revoked"]
    return format_table(headers, rows)


def run_list(args: argparse.Namespace, settings: MeshSettings) -> int:
    keys = backend(args, settings).list(include_revoked=args.all)
    if args.json:
        for key in keys:
            print(orjson.dumps(key_json(key)).decode())
    else:
        print(keys_table(keys) if keys else "no keys")
    return 0


def run_revoke(args: argparse.Namespace, settings: MeshSettings) -> int:
    if not backend(args, settings).revoke(args.key_id):
        raise rpc.CliError(f"no active key with id {args.key_id!r}")
    print(f"revoked {args.key_id}", file=sys.stderr)
    return 0


def run_set_limits(args: argparse.Namespace, settings: MeshSettings) -> int:
    limits = limits_from(args)
    if not backend(args, settings).set_limits(args.key_id, limits):
        raise rpc.CliError(f"no active key with id {args.key_id!r}")
    print(f"set the limits of {args.key_id}", file=sys.stderr)
    return 0
