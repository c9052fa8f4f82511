"""``latest.json`` -> the tables of ``docs/benchmarks.md`` and its chart.

The report's sentences are written by hand; only its tables are generated. Each table sits
between ``<!-- bench:NAME -->`` and ``<!-- /bench -->`` in the Markdown file, and
:func:`write` replaces what is between them, leaving every other line alone. A file with no
such markers (a new ``--report`` path) gets every table under a heading of its name.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

BACKENDS = {"postgresql": "PostgreSQL", "mariadb": "MariaDB", "sqlite": "SQLite"}
TOOLS = {"herd": "herd", "herd_current": "herd, already current",
         "alembic": "alembic upgrade head", "yoyo": "yoyo apply"}
BLOCK = re.compile(r"(<!-- bench:(?P<name>[\w-]+) -->\n).*?(<!-- /bench -->)", re.S)

Results = dict[str, Any]
Row = list[str]


def s(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f} s"


def ms(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value * 1000:.{digits}f} ms"


def x(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}×"


def table(header: list[str], rows: list[Row]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def write(results: Results, report: Path) -> list[Path]:
    """Write the tables into ``report`` and the chart beside it; the paths written."""
    report.parent.mkdir(parents=True, exist_ok=True)
    image = report.parent / "img" / "benchmarks.png"
    written = [report]
    try:
        from .chart import draw

        draw(results, image)
        written.append(image)
    except ImportError as exc:  # matplotlib is in the bench extra, not in dev
        print(f"no chart: {exc}", file=sys.stderr)
    tables = dict(blocks(results))
    text = report.read_text() if report.exists() else ""
    if BLOCK.search(text):
        text = BLOCK.sub(lambda m: m.group(1) + tables.get(m["name"], "(not measured in this "
                                                           "run)") + "\n" + m.group(3), text)
    else:
        chart = os.path.relpath(image, report.parent)
        text = f"# Benchmarks\n\n![benchmark chart]({chart})\n\n" + "".join(
            f"## {name}\n\n<!-- bench:{name} -->\n{body}\n<!-- /bench -->\n\n"
            for name, body in tables.items())
    report.write_text(text)
    return written


def write_block(report: Path, name: str, body: str) -> None:
    """Replace the one table ``name`` in ``report`` (it must have the markers)."""
    text = report.read_text()
    marker = f"<!-- bench:{name} -->\n"
    if marker not in text:
        raise SystemExit(f"{report} has no {marker.strip()} marker: add one where the table goes")
    report.write_text(BLOCK.sub(lambda m: m.group(1) + body + "\n" + m.group(3)
                                if m["name"] == name else m.group(0), text))


def blocks(r: Results) -> Iterator[tuple[str, str]]:
    """(name, Markdown) of every table this run has figures for."""
    measured = [b for b in BACKENDS if "version" in r["backends"].get(b, {})]
    yield "run", _run(r)
    yield "machine", _machine(r)
    for b in measured:
        if r["herd_start"].get(b, {}).get("summary"):
            yield f"start-{b}", _start(r, b)
            yield f"errors-{b}", _errors(r, b)
    per_backend: list[tuple[str, Callable[[Results, str], list[Row]], list[str]]] = [
        ("overhead", _overhead, ["database", "N", "herd, fresh", "herd, current",
                                 "difference", "one migration", "difference / one migration",
                                 "herd / alembic", "herd / yoyo"]),
        ("cpu", _cpu, ["database", "N", *(TOOLS[t] for t in TOOLS)]),
        ("wakeup", _wakeup, ["database", "N", "tool", "waiters", "p50", "p90", "p99", "max",
                             "min", "leader done (from the herd's release)",
                             "commit → release", "p50 from commit", "max from commit"]),
        ("idle", _idle, ["database", "revisions", "`herd migrate`", "`alembic upgrade head`",
                         "ratio", "`herd check`", "`alembic current`", "ratio", "runs"]),
        ("idle-cpu", _idle_cpu, ["database", "revisions", *(f"`{c}`" for c in IDLE_CPU),
                                 "runs"]),
        ("readiness", _readiness, ["database", "probe p50", "probe p99", "built once",
                                   "`status()` per call", "bare SELECT", "calls"]),
        ("per-migration", _per_migration, [
            "database", "revisions", "herd", "plain Alembic", "ratio (paired)",
            "extra per revision", "extra per revision, `synchronous_commit=off`",
            "CPU herd / Alembic", "runs"]),
    ]
    for name, rows_of, header in per_backend:
        yield name, table(header, [row for b in measured for row in rows_of(r, b)])
    yield "interpreter", table(["command", "median"], [
        [f"`python -c \"{k}\"`" if k.startswith("import") else f"`{k}`", s(v["median"])]
        for k, v in r.get("interpreter", {}).items()])
    yield "profile", _profile(r, measured)
    yield "stampede", _stampede(r)
    if r.get("herd1000"):
        yield "herd1000", herd1000_table(r["herd1000"])
    yield "connections", _connections(r)


def _run(r: Results) -> str:
    run, m = r["run"], r["machine"]
    git = m.get("git", {})
    commit = (git.get("commit") or "unknown") + (" (uncommitted changes)"
                                                 if git.get("dirty") else "")
    load = run.get("load_before") or ["?"]
    after = run.get("load_after") or ["?"]
    kind = "quick smoke run (not for quoting)" if run.get("quick") else "full run"
    plan = run.get("plan", {})
    text = table(["run", "started (UTC)", "host", "commit", "took", "load (1 min) at start / "
                  "end", "cores", "N", "trials per N", "repetitions", "revision sets",
                  "chain"],
                 [[kind, run["started"], f"`{m['host']}`", f"`{commit}`",
                   f"{run.get('duration_seconds', 0) / 60:.1f} min", f"{load[0]} / {after[0]}",
                   str(m.get("cores")), str(plan.get("ns")), str(plan.get("trials")),
                   str(plan.get("reps")), str(plan.get("sizes")), str(plan.get("chain"))]])
    notes = "\n".join(f"* {note}" for note in r.get("notes", []))
    return text + (f"\n\n{notes}" if notes else "")


def _machine(r: Results) -> str:
    m = r["machine"]
    databases = []
    for name, label in BACKENDS.items():
        info = r["backends"].get(name)
        if info:
            databases.append([label, info.get("version", "skipped"),
                              info.get("where", info.get("skipped", ""))])
    packages = [[k, v] for k, v in m.get("packages", {}).items() if v]
    return "\n\n".join([
        table(["CPU", "cores", "memory", "OS", "Python"],
              [[m["cpu_model"], str(m["cores"]), f"{m['memory_gib']} GiB", m["os"],
                m["python"]]]),
        table(["database", "version", "where"], databases),
        table(["package", "version"], packages)])


def _by_n(mapping: dict[str, Any]) -> list[tuple[str, Any]]:
    return sorted(mapping.items(), key=lambda kv: int(kv[0]))


def _start(r: Results, b: str) -> str:
    rows = []
    for n, tools in _by_n(r["herd_start"][b]["summary"]):
        row = [n, str(tools.get("herd", {}).get("trials", "–"))]
        row += [s(tools.get(t, {}).get("last_done_median")) for t in TOOLS]
        for tool in ("herd", "alembic", "yoyo"):
            t = tools.get(tool)
            row.append("–" if not t else f"{t['failures']}/{t['processes']}")
        for tool in ("herd", "alembic", "yoyo"):
            t = tools.get(tool)
            row.append("–" if not t else f"{t['duplicates']}" + (
                f" ({t['not_at_head_trials']} not at head)" if t["not_at_head_trials"] else ""))
        rows.append(row)
    return table(["N", "trials", "herd: last done", "herd, already current",
                  "alembic: last done", "yoyo: last done", "herd failed", "alembic failed",
                  "yoyo failed", "herd extra rows", "alembic extra rows", "yoyo extra rows"],
                 rows)


def _errors(r: Results, b: str) -> str:
    rows: list[Row] = []
    examples: list[str] = []
    for n, per_tool in _by_n(r["herd_start"][b]["trials"]):
        for tool in ("alembic", "yoyo", "herd"):
            t = r["herd_start"][b]["summary"][n].get(tool)
            if t and t["errors"]:
                rows.append([n, TOOLS[tool], ", ".join(
                    f"{k} ×{v}" for k, v in sorted(t["errors"].items(), key=lambda kv: -kv[1]))])
            for record in per_tool.get(tool, []):
                for e in record.get("first_errors", []):
                    short = f"`{e.replace('`', chr(39))[:140]}`"
                    if short not in examples and len(examples) < 3:
                        examples.append(short)
    if not rows:
        return "No process failed."
    return table(["N", "tool", "errors of the failed processes"], rows) + "\n\n" + table(
        ["for example"], [[e] for e in examples])


def _overhead(r: Results, b: str) -> list[Row]:
    over = r["overhead"].get(b, {})
    return [[BACKENDS[b], n, s(e["herd_fresh"]), s(e["herd_current"]), s(e["difference"]),
             s(over.get("single_migration")), x(e["ratio_to_single_migration"], 1),
             x(e["herd_vs_alembic"]), x(e["herd_vs_yoyo"])]
            for n, e in _by_n(over.get("by_n", {}))]


def _cpu(r: Results, b: str) -> list[Row]:
    rows = []
    for n, e in _by_n(r["overhead"].get(b, {}).get("by_n", {})):
        cpu, per = e.get("cpu_total", {}), e.get("cpu_per_process", {})
        rows.append([BACKENDS[b], n] + [f"{s(cpu.get(t), 2)} ({ms(per.get(t), 0)})"
                                        if cpu.get(t) is not None else "–" for t in TOOLS])
    return rows


def _wakeup(r: Results, b: str) -> list[Row]:
    rows = []
    for n, tools in _by_n(r["wakeup"].get(b, {})):
        for tool in ("herd", "yoyo"):
            e = tools.get(tool)
            if e:
                fc = e.get("from_commit", {})
                rows.append([BACKENDS[b], n, TOOLS[tool], str(e["count"]), ms(e["p50"], 0),
                             ms(e["p90"], 0), ms(e["p99"], 0), ms(e["max"], 0),
                             ms(e["min"], 0), s(e.get("leader_done_median")),
                             ms(e.get("release_after_commit_median"), 1),
                             ms(fc.get("p50"), 0), ms(fc.get("max"), 0)])
    return rows


def _idle(r: Results, b: str) -> list[Row]:
    return [[BACKENDS[b], size, s(e["herd migrate"]["median"]),
             s(e["alembic upgrade head"]["median"]),
             x(e["ratios"]["herd migrate / alembic upgrade head"]),
             s(e["herd check"]["median"]), s(e["alembic current"]["median"]),
             x(e["ratios"]["herd check / alembic current"]), str(len(e["herd check"]["runs"]))]
            for size, e in _by_n(r["idle_cost"].get(b, {}))]


IDLE_CPU = ("herd check", "herd migrate", "herd run -- true", "alembic current",
            "alembic upgrade head")


def _idle_cpu(r: Results, b: str) -> list[Row]:
    """CPU (user + sys) per whole process at head, mean over the runs (issue 17 point 4)."""
    return [[BACKENDS[b], size, *(s(e[c].get("cpu_mean")) for c in IDLE_CPU),
             str(len(e["herd check"].get("cpu_runs", [])))]
            for size, e in _by_n(r["idle_cost"].get(b, {})) if "cpu_mean" in e["herd check"]]


def _readiness(r: Results, b: str) -> list[Row]:
    e = r["readiness"].get(b, {})
    if not e or "error" in e:
        return []
    probe = e.get("probe", {})
    return [[BACKENDS[b], ms(probe.get("p50"), 2), ms(probe.get("p99"), 2),
             ms(probe.get("construct"), 0), ms(e.get("status", {}).get("p50"), 1),
             ms(e.get("select", {}).get("p50"), 2), str(e.get("calls"))]]


def _per_migration(r: Results, b: str) -> list[Row]:
    e = r["per_migration"].get(b)
    if not e:
        return []
    return [[BACKENDS[b], str(e["revisions"]), s(e["herd"]["median"]), s(e["alembic"]["median"]),
             x(e["ratio"]), ms(e["extra_per_revision"], 2),
             ms(e.get("extra_per_revision_async_commit"), 2),
             f"{s(e['herd'].get('cpu_median'), 2)} / {s(e['alembic'].get('cpu_median'), 2)}",
             str(len(e["herd"]["runs"]))]]


def _profile(r: Results, backends: list[str]) -> str:
    profiles = [(b, tool, r["per_migration"][b]["profile"][tool]) for b in backends
                for tool in ("herd", "alembic")
                if tool in r["per_migration"].get(b, {}).get("profile", {})]
    kinds = list(dict.fromkeys(k for _, _, p in profiles for k in p if k != "total"))
    rows = [[BACKENDS[b], "herd" if tool == "herd" else "plain Alembic",
             s(p.get("total", {}).get("seconds"), 2)]
            + [f"{s(p[k]['seconds'], 3)} ({int(p[k]['count'])})" if k in p else "–"
               for k in kinds] for b, tool, p in profiles]
    return table(["database", "tool", "total", *kinds], rows)


def _connections(r: Results) -> str:
    conns = r.get("connections", {}).get("postgresql")
    if not conns:
        return "(PostgreSQL was not part of this run.)"
    rows = []
    for n, tools in _by_n(conns):
        h, c, a, y = (tools.get(t) for t in TOOLS)
        rows.append([n] + [str(t[key]) if t else "–" for t, key in (
            (h, "total"), (h, "herd"), (h, "alembic"), (c, "total"), (a, "total"),
            (y, "total"))])
    return table(["N", "herd: total", "herd's own", "Alembic's (leader's env.py)",
                  "herd, already current", "alembic upgrade head", "yoyo apply"], rows)


def _stampede(r: Results) -> str:
    st = r.get("stampede") or {}
    rows = []
    for n, tools in _by_n(st.get("summary", {})):
        for tool, e in tools.items():
            rows.append([n, tool, str(e["trials"]), s(e["all_exited_median"], 2),
                         s(e["all_exited_max"], 2), s(e["cpu_per_process_median"]),
                         s(e.get("leader_cpu_median")), s(e.get("waiter_cpu_median")),
                         s(e["cpu_total_median"], 1), ms(e.get("exit_tax_p50")),
                         ms(e.get("exit_tax_max")), f"{e['failures']}/{e['processes']}",
                         f"{e['incorrect_trials']}/{e['trials']}"])
    if not rows:
        return "(PostgreSQL was not part of this run.)"
    skipped = "".join(f"\n\n{tool}: not run ({why})."
                      for tool, why in st.get("skipped", {}).items())
    return table(["N", "tool", "trials", "all exited (median)", "all exited (worst)",
                  "CPU per process", "leader's CPU", "a waiting replica's CPU",
                  "CPU, all processes", "last line → exit p50", "max", "failed",
                  "trials with a wrong database"],
                 rows) + skipped


def herd1000_table(h: Results) -> str:
    """The table of ``bench/results/herd1000.json`` (``make herd1000``)."""
    rows = []
    for mode, e in h.get("modes", {}).items():
        ready = e["ready_after_leader_exit"]
        woke = e.get("notified_after_leader_exit") or {}
        rows.append([
            "directly" if mode == "direct" else f"through PgBouncer (transaction mode, pool "
            f"{e['pool_size']})", str(e["waiters"]), f"{e['start_to_all_waiting']:.0f} s",
            str(e["connections_peak"]), f"{e['connections_window_median']:.0f}",
            f"{e['statements_per_second']:.0f} ({e['statements_per_second'] / e['waiters']:.2f})",
            f"{e['xact_commit_per_second']:.0f}",
            f"{woke.get('count', 0)}: {ms(woke.get('p50'), 0)} / {ms(woke.get('p99'), 0)}",
            ms(ready["p50"], 0), ms(ready["p99"], 0), ms(ready["max"], 0),
            ms(e.get("wake_cpu_per_waiter"), 1), f"{e['failures']}/{e['waiters']}" + (
                f", leader exit {e['leader_exit_code']}" if e["leader_exit_code"] else ""),
            ", ".join(e["heads"])])
    load = h.get("load_before") or ["?"]
    git = h.get("machine", {}).get("git", {})
    return (f"Run {h.get('started')}, commit `{git.get('commit') or 'unknown'}`"
            f"{' (uncommitted changes)' if git.get('dirty') else ''}, load (1 min) at start "
            f"{load[0]}, `python -m bench.herd1000 {' '.join(h.get('argv', []))}`.\n\n"
            + table(["waiters connect", "waiters", "start → all waiting", "connections: peak",
                     "while waiting (median)", "statements/s while waiting (per waiter)",
                     "server commits/s", "woken by NOTIFY: count: p50 / p99 after the leader's "
                     "exit", "leader exit → ready p50", "p99", "max",
                     "client CPU per wake-up", "failed",
                     "heads after"], rows))
