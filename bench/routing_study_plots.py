"""Plots of the routing study from its results.json: TTFT CDF per policy, cost vs p99 TTFT per
policy, and the share served locally over time, one panel per workload shape.

Needs only matplotlib (bench/requirements-study.txt) and runs in a venv of its own
(``make study`` makes it): matplotlib's Pillow would change how the project's mypy sees the
google-genai types, so it stays out of the dev venv.

    var/study-venv/bin/python bench/routing_study_plots.py bench/results/routing_study
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def main(out: Path) -> None:
    data = json.loads((out / "results.json").read_text())
    recommended: str = data["recommended"]
    rows: list[dict[str, Any]] = data["rows"]
    raw: dict[str, dict[str, Any]] = data["raw"]
    shapes = list(dict.fromkeys(r["shape"] for r in rows))
    policies = list(dict.fromkeys(r["policy"] for r in rows))
    colors: dict[str, Any] = {p: plt.get_cmap("tab10")(i) for i, p in enumerate(policies)}
    colors[recommended] = "black"

    def width(policy: str) -> float:
        return 2.4 if policy == recommended else 1.0

    def grid(title: str) -> tuple[Any, list[Any]]:
        fig, axes = plt.subplots(1, len(shapes), figsize=(4.6 * len(shapes), 4), squeeze=False)
        fig.suptitle(title)
        return fig, list(axes[0])

    fig, axes = grid("TTFT CDF per policy, from the median up (client-measured)")
    for ax, shape in zip(axes, shapes, strict=True):
        for policy in policies:
            samples = sorted(raw.get(f"{shape}/{policy}", {}).get("ttft_ms", []))
            if samples:
                ys = [(i + 1) / len(samples) for i in range(len(samples))]
                ax.plot(samples, ys, label=policy, color=colors[policy], linewidth=width(policy))
        ax.set_xscale("log")
        ax.set_xlabel("TTFT ms (log)")
        ax.set_ylim(0.5, 1.001)
        ax.set_title(shape)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("share of requests")
    axes[-1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(out / "ttft_cdf.png", dpi=80)
    plt.close(fig)

    fig, axes = grid("Cost vs p99 TTFT per policy (lower left is better)")
    for ax, shape in zip(axes, shapes, strict=True):
        for r in rows:
            if r["shape"] == shape:
                ax.scatter(r["p99_ms"], r["cost_per_1k"], color=colors[r["policy"]], s=40)
                ax.annotate(r["policy"], (r["p99_ms"], r["cost_per_1k"]), fontsize=7)
        ax.set_xscale("log")
        ax.set_xlabel("p99 TTFT ms (log)")
        ax.set_title(shape)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("cost $ per 1k requests")
    fig.tight_layout()
    fig.savefig(out / "cost_vs_p99.png", dpi=80)
    plt.close(fig)

    fig, axes = grid("Share served locally over time (1 s bins; grey: arrivals per second)")
    for ax, shape in zip(axes, shapes, strict=True):
        arrivals: dict[int, int] = {}
        for policy in policies:
            served = raw.get(f"{shape}/{policy}", {}).get("served", [])
            bins: dict[int, list[bool]] = {}
            for t, local in served:
                bins.setdefault(int(t), []).append(bool(local))
            if policy == recommended:
                arrivals = {t: len(v) for t, v in bins.items()}
            xs = sorted(bins)
            ys = [sum(bins[x]) / len(bins[x]) for x in xs]
            ax.plot(xs, ys, label=policy, color=colors[policy], linewidth=width(policy))
        if arrivals:
            rate = ax.twinx()
            xs = sorted(arrivals)
            rate.fill_between(xs, [arrivals[x] for x in xs], color="grey", alpha=0.15, step="mid")
        ax.set_xlabel("seconds")
        ax.set_ylim(0, 1.02)
        ax.set_title(shape)
    axes[0].set_ylabel("local share")
    axes[-1].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(out / "local_share.png", dpi=80)
    plt.close(fig)


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "bench/results/routing_study"))
