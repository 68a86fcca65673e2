"""``python -m hybridinference.launcher [--config F]``: what ``make up`` runs."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from hybridinference.common.settings import CONFIG_ENV, ConfigError, config_path_from, load_settings
from hybridinference.launcher import plan, supervisor
from hybridinference.launcher.restarts import RestartPolicy


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m hybridinference.launcher",
        description="Start the HybridInference mesh (services, then Envoy), restart a service that "
        "crashes, and stop it all on Ctrl-C.",
    )
    parser.add_argument("--config", help=f"mesh YAML file (default: ${CONFIG_ENV} or built-in)")
    parser.add_argument(
        "--var-dir",
        default="var",
        help="where the rendered Envoy config (run/) and process logs (log/) go",
    )
    parser.add_argument(
        "--prometheus",
        action="store_true",
        help="also start Prometheus scraping the mesh, when installed (make up does)",
    )
    parser.add_argument(
        "--start-timeout",
        type=float,
        default=30.0,
        help="seconds each service may take to become healthy",
    )
    parser.add_argument(
        "--max-restarts",
        type=int,
        default=RestartPolicy.max_restarts,
        help="restarts of one crashed service allowed within --restart-window before the "
        "launcher gives up on it and stops the mesh",
    )
    parser.add_argument(
        "--restart-window",
        type=float,
        default=RestartPolicy.window_s,
        help="seconds over which a service's crashes are counted",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        settings = load_settings(args.config)
    except ConfigError as error:
        print(f"launcher: {error}", file=sys.stderr)
        return 2
    problems = plan.port_conflicts(settings)
    if problems:
        print("launcher: cannot start:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 2
    # Children get the file in use as an absolute path.
    config_path = config_path_from(args.config)
    config = Path(config_path).resolve() if config_path else None
    cwd = Path.cwd()
    options = supervisor.Options(
        config=config,
        var_dir=(cwd / args.var_dir).resolve(),
        cwd=cwd,
        start_timeout_s=args.start_timeout,
        prometheus=args.prometheus,
        restarts=RestartPolicy(max_restarts=args.max_restarts, window_s=args.restart_window),
    )
    # The default loop: uvloop cannot start children in their own process group.
    return asyncio.run(supervisor.run(settings, options))


if __name__ == "__main__":
    sys.exit(main())
