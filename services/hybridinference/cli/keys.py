"""``hybridinference keys create|list|revoke``: API keys in the request-log database.

Talks to the database directly (the same one the logger uses, from the same config), so the
first admin key can be made before anything runs. ``create`` needs the server secret
(``$HI_AUTH_SECRET`` by default) that the gateways hash keys with.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import TypeVar

import orjson
from pydantic import ValidationError

from hybridinference.cli import rpc
from hybridinference.cli.table import format_table
from hybridinference.common.edge_settings import KeyLimitSettings
from hybridinference.common.settings import MeshSettings
from hybridinference.keys.issue import MAX_NAME_CHARS, create_key
from hybridinference.keys.model import ApiKey
from hybridinference.keys.store import KeyStore, KeyStoreError, open_key_store
from hybridinference.keys.tokens import SecretMissing, server_secret

T = TypeVar("T")


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser("keys", help="create, list and revoke API keys")
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
    create.add_argument("--rpm", type=int, help="requests per minute")
    create.add_argument("--tpm", type=int, help="tokens per minute")
    create.add_argument("--max-concurrent", type=int, help="requests in flight at once")
    create.add_argument("--daily-usd", type=float, help="spend per UTC day, USD")
    create.add_argument("--monthly-usd", type=float, help="spend per UTC month, USD")
    create.add_argument("--json", action="store_true", help="print the new key as JSON")
    create.set_defaults(run=run_create)

    listing = actions.add_parser("list", help="list keys (never the keys themselves)")
    listing.add_argument("--all", action="store_true", help="include revoked keys")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    listing.set_defaults(run=run_list)

    revoke = actions.add_parser("revoke", help="revoke a key by its id (key_…)")
    revoke.add_argument("key_id")
    revoke.set_defaults(run=run_revoke)


def _with_store(settings: MeshSettings, work: Callable[[KeyStore], Awaitable[T]]) -> T:
    async def main() -> T:
        store = await open_key_store(settings.logger)
        try:
            return await work(store)
        finally:
            await store.close()

    try:
        return asyncio.run(main())
    except KeyStoreError as error:
        raise rpc.CliError(str(error)) from None


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


def key_json(key: ApiKey) -> dict[str, object]:
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
    try:
        secret = server_secret(settings.gateway.auth.secret_env)
    except SecretMissing as error:
        raise rpc.CliError(str(error)) from None
    models = tuple(dict.fromkeys(args.models))
    key, plain = _with_store(
        settings, lambda store: create_key(store, secret, name, args.admin, models, limits)
    )
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


def keys_table(keys: list[ApiKey]) -> str:
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
    keys = _with_store(settings, lambda store: store.list_keys(include_revoked=args.all))
    if args.json:
        for key in keys:
            print(orjson.dumps(key_json(key)).decode())
    else:
        print(keys_table(keys) if keys else "no keys")
    return 0


def run_revoke(args: argparse.Namespace, settings: MeshSettings) -> int:
    if not _with_store(settings, lambda store: store.revoke(args.key_id)):
        raise rpc.CliError(f"no active key with id {args.key_id!r}")
    print(f"revoked {args.key_id}", file=sys.stderr)
    return 0
