"""The report's chart (matplotlib, Agg backend; from the bench extra)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

COLORS = {"herd": "#1f77b4", "herd_current": "#7fb3e0", "alembic": "#d62728",
          "yoyo": "#2ca02c"}
LABELS = {"herd": "herd (fresh db)", "herd_current": "herd (db already current)",
          "alembic": "alembic upgrade head", "yoyo": "yoyo apply"}
NAMES = {"postgresql": "PostgreSQL", "mariadb": "MariaDB", "sqlite": "SQLite"}


def _theory_cdf(t: float, cap: float = 0.5) -> float:
    """Time from a random moment to the next check of a full-jitter poller capped at ``cap``."""
    if t <= 0:
        return 0.0
    if t >= cap:
        return 1.0
    return 2 * t / cap - (t / cap) ** 2


def draw(r: dict[str, Any], path: Path) -> None:
    backends = [b for b in ("postgresql", "mariadb", "sqlite") if r["herd_start"].get(b)]
    fig, axes = plt.subplots(2, 3, figsize=(15, 8.5))
    run = r["run"]
    fig.suptitle(f"alembic-herd benchmarks - run of {run['started']} on {r['machine']['host']}"
                 f" ({r['machine']['cores']} cores){' - QUICK' if run.get('quick') else ''}",
                 fontsize=11)
    for i in range(3):
        ax = axes[0][i]
        if i >= len(backends):
            ax.axis("off")
            continue
        b = backends[i]
        summary = r["herd_start"][b]["summary"]
        ns = sorted(summary, key=int)
        for tool in ("herd", "herd_current", "alembic", "yoyo"):
            points = [(int(n), summary[n][tool]) for n in ns if tool in summary[n]]
            if not points:
                continue
            xs = [p[0] for p in points]
            ys = [p[1]["last_done_median"] for p in points]
            ax.plot(xs, ys, "o-", color=COLORS[tool], label=LABELS[tool])
            for xv, (_, e) in zip(xs, points, strict=True):
                if e["failures"] or e["duplicates"]:
                    ax.annotate(f"{e['failures']} failed" + (f", {e['duplicates']} dup"
                                                             if e["duplicates"] else ""),
                                (xv, e["last_done_median"]), textcoords="offset points",
                                xytext=(4, -10), fontsize=7, color=COLORS[tool])
        ax.set_xscale("log", base=2)
        ax.set_xticks([int(n) for n in ns], [str(n) for n in ns])
        ax.set_xlabel("replicas released at once (N)")
        ax.set_ylabel("seconds until the last one is done")
        ax.set_title(f"{NAMES[b]}: herd start (median)", fontsize=10)
        ax.grid(alpha=0.3)
        if i == 0:
            ax.legend(fontsize=8)

    ax = axes[1][0]
    styles = {"postgresql": "-", "mariadb": "--", "sqlite": ":"}
    drew = False
    for b in backends:
        wake = r["wakeup"].get(b, {})
        shown = [n for n in wake if int(n) >= 16] or sorted(wake, key=int)[-1:]
        for n, tools in wake.items():
            if n not in shown or "herd" not in tools:
                continue
            values = sorted(v for rec in r["herd_start"][b]["trials"][n]["herd"]
                            for v in rec.get("wakeups", []))
            if not values:
                continue
            ys = [(k + 1) / len(values) for k in range(len(values))]
            ax.step([v * 1000 for v in values], ys, where="post", linestyle=styles[b],
                    label=f"{NAMES[b]} N={n}")
            drew = True
    ts = [k / 200 * 0.6 for k in range(201)]
    ax.plot([t * 1000 for t in ts], [_theory_cdf(t) for t in ts], color="black", alpha=0.5,
            linewidth=1, label="ideal full jitter, cap 0.5 s")
    ax.axvline(500, color="grey", alpha=0.4)
    ax.set_xlabel("ms from the leader's release to a waiter's return")
    ax.set_ylabel("fraction of waiters")
    ax.set_title("herd wake-up latency (CDF)", fontsize=10)
    ax.grid(alpha=0.3)
    if drew:
        ax.legend(fontsize=7)

    ax = axes[1][1]
    commands = ["herd migrate", "alembic upgrade head", "herd check", "alembic current"]
    colors = ["#1f77b4", "#d62728", "#7fb3e0", "#f4a5a5"]
    groups = [(b, size) for b in backends for size in sorted(r["idle_cost"].get(b, {}), key=int)]
    width = 0.2
    for k, cmd in enumerate(commands):
        xs = [g + (k - 1.5) * width for g in range(len(groups))]
        ys = [r["idle_cost"][b][size][cmd]["median"] for b, size in groups]
        ax.bar(xs, ys, width, label=cmd, color=colors[k])
    short = {"postgresql": "PG", "mariadb": "MariaDB", "sqlite": "SQLite"}
    ax.set_xticks(range(len(groups)), [f"{short[b]}\n{size} rev" for b, size in groups],
                  fontsize=8)
    ax.set_ylabel("seconds, whole process")
    ax.set_title("nothing pending: whole-process wall time (median)", fontsize=10)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, axis="y")

    ax = axes[1][2]
    pm = [(b, r["per_migration"][b]) for b in backends if r["per_migration"].get(b)]
    for k, (tool, color) in enumerate((("herd", COLORS["herd"]), ("alembic", COLORS["alembic"]))):
        xs = [g + (k - 0.5) * 0.35 for g in range(len(pm))]
        ax.bar(xs, [e[tool]["median"] for _, e in pm], 0.35, color=color,
                label="herd" if tool == "herd" else "plain Alembic")
    for g, (_, e) in enumerate(pm):
        if e.get("ratio"):
            ax.annotate(f"{e['ratio']:.2f}×", (g, max(e["herd"]["median"], e["alembic"]["median"])),
                        textcoords="offset points", xytext=(0, 3), ha="center", fontsize=8)
    chain = pm[0][1]["revisions"] if pm else "?"
    ax.set_xticks(range(len(pm)), [NAMES[b] for b, _ in pm])
    ax.set_ylabel("seconds")
    ax.set_title(f"applying a {chain}-revision chain (median)", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")

    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
