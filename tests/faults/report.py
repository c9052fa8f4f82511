"""Build docs/faults.md from the fault suite's figures (and report_intro.md, its prose).

``python tests/faults/report.py RESULTS_DIR OUTPUT.md`` reads the JSON files the suite
wrote (``HERD_FAULTS_RESULTS=RESULTS_DIR``; ``make faults`` does both steps). For each
scenario the many-trial ("full") run is reported when there is one, else the fast one.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

Result = dict[str, Any]


def load(folder: Path) -> dict[str, Result]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}


def pick(results: dict[str, Result], name: str) -> Result | None:
    return results.get(f"{name}-full") or results.get(f"{name}-fast") or results.get(name)


def seconds(value: Any) -> str:
    return "n/a" if value is None else f"{float(value):.2f} s"


def verdict(result: Result) -> str:
    return "**pass**" if not result.get("failures") else f"**{result['failures']} failed**"


def landing(result: Result) -> str:
    """The table's cells for where the faults landed: landed (a trial whose fault never
    landed is a failure), re-runs of trials whose fault missed at first."""
    return f"{result['landed']} | {result['reruns']}"


def where(result: Result) -> str:
    return ", ".join(f"{k}: {v}" for k, v in sorted(result["where"].items()))


def checks(result: Result) -> str:
    return "; ".join(result.get("checks", []))


LEADER_CLASSES = {
    "sigkill": "SIGKILL",
    "sigterm": "SIGTERM",
    "sigint": "SIGINT",
    "sigstop-lease": "SIGSTOP past the lease (`--lock table`, 2 s ttl)",
    "sigstop-session": "SIGSTOP past the keepalives (session lock)",
    "mixed": "mixed lock kinds (advisory/GET_LOCK + lease), leader SIGKILLed",
    "command": "`herd migrate -- CMD`, SIGTERM to herd",
}
DIALECTS = {"postgresql": "PostgreSQL", "mysql": "MariaDB", "sqlite": "SQLite"}
NOT_ON = {"sqlite": {"sigstop-session", "mixed"}}
"""Leader classes that do not apply to a backend (SQLite: no keepalives; mixed kinds not
run there): never listed as not run."""


def codes(counts: Counter[str]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in sorted(counts.items(), key=lambda kv: str(kv[0])))


def leader_rows(results: dict[str, Result]) -> list[str]:
    """One line per fault class and backend: trials, landed, re-runs, failures, the exit
    codes seen, the operator's repairs (MariaDB), and the recovery time."""
    out = ["| fault | backend | trials | faults landed | re-runs | failures | victim exit "
           "| other replicas' exits | repaired + resolved | fault to every replica done "
           "(median / max) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for name, title in LEADER_CLASSES.items():
        for dialect, backend in DIALECTS.items():
            r = pick(results, f"leader-{name}-{dialect}")
            if not r:
                continue
            detail = r["trials_detail"]
            victim = Counter(str(t["codes"]["victim"]) for t in detail)
            others: Counter[str] = Counter()
            for t in detail:
                for code, n in t["codes"]["survivors"].items():
                    others[str(code)] += n
            rec = r["recovery_seconds"]
            out.append(f"| {title} | {backend} | {r['trials']} | {r['landed']} | "
                       f"{r['reruns']} | {verdict(r)} | {codes(victim)} | {codes(others)} | "
                       f"{r['resolved']} | {seconds(rec['median'])} / {seconds(rec['max'])} |")
    return out


def controls(results: dict[str, Result]) -> list[str]:
    out = []
    for dialect, backend in DIALECTS.items():
        r = results.get(f"controls-{dialect}")
        if not r:
            continue
        out += [f"{backend} (recorded {r['recorded']}): {r['trials']} control trials, "
                f"faults landed in {r['landed']}.", "",
                "| fault class | protection switched off | aimed at | mode | "
                "checks failed (each trial) |",
                "|---|---|---|---|---|"]
        for t in r["trials_detail"]:
            failed = ", ".join(t["failed_checks"]) or "**none**"
            mode = "per migration" if t["tpm"] else "one transaction"
            out.append(f"| {t['class']} | `{t['control']}` | {t['target']} | {mode} | "
                       f"{failed} |")
        out += ["", "| check | control trials failing it | made to fail by |", "|---|---|---|"]
        cannot = r.get("cannot_fail", {})
        for check, count in r["failed_checks"].items():
            by = ", ".join(f"`{c}`" for c in r.get("failed_by", {}).get(check, []))
            if not count:
                by = f"**cannot fail here**: {cannot[check]}" if check in cannot else "**none**"
            out.append(f"| {check} | {count} | {by} |")
        out.append("")
    return out


def restart(r: Result) -> list[str]:
    ready = r["ready_after_restart_seconds"]
    return [
        f"{r['trials']} trials ({', '.join(f'{k} lock: {v}' for k, v in r['by_lock'].items())}"
        f"), {r['replicas']}; restarts landed: {r['landed']}, re-runs: {r['reruns']}; "
        f"failures: {r['failures']}.",
        f"* Where the restarts landed: {where(r)}.",
        f"* `pg_ctl restart -m fast` took {seconds(r['restart_seconds_median'])} (median); "
        f"{r['replicas_that_reconnected']} replica runs reconnected and started over; "
        f"{r['interrupted_revisions']} revisions were interrupted and accounted for by the "
        "next leader.",
        f"* Restart to every replica ready: median {seconds(ready['median'])}, max "
        f"{seconds(ready['max'])} (lease: expires after its ttl of {r['lease_ttl']:g} s).",
        f"* Checked: {checks(r)}.",
    ]


def drop(r: Result) -> list[str]:
    return [f"{r['trials']} trials; drops landed: {r['landed']}, re-runs: {r['reruns']}; "
            f"failures: {r['failures']}. The server freed the lock "
            f"{seconds(r['lock_freed_seconds_max'])} (max) after the proxy aborted the "
            f"leader's connections. Checked: {checks(r)}."]


def freeze(r: Result) -> list[str]:
    return [f"{r['trials']} trials, {r['freeze_seconds']:g} s freezes; freezes landed: "
            f"{r['landed']}, re-runs: {r['reruns']}; failures: {r['failures']}. "
            f"Checked: {checks(r)}."]


def partition(r: Result) -> list[str]:
    k = r["keepalives"]
    freed = ", ".join(f"{v:.1f} s" for v in r["lock_freed_seconds"])
    dropped = ", ".join(str(v) for v in r["packets_dropped"])
    gone = ", ".join(f"{v:.1f} s" for v in r["leader_sessions_gone_seconds"])
    lines = [
        f"{r['trials']} trials; cuts landed: {r['landed']}, re-runs: {r['reruns']}; "
        f"failures: {r['failures']}. Server-side keepalives set by herd: "
        f"idle {k['idle']} s, interval {k['interval']} s, {k['count']} probes: bound "
        f"{k['bound_seconds']} s (tcp_user_timeout {k['bound_seconds']} s when a reply was in "
        "flight).",
        f"* Packets the link dropped while down: {dropped}. Lock freed after: {freed}; all the "
        f"leader's sessions (lock and migration) gone after: {gone}.",
    ]
    control = r.get("control_without_server_keepalives")
    if control:
        state = "still held" if control["still_held"] else "freed"
        lines.append(f"* Control - a session holding an advisory lock without server "
                     f"keepalives (the server default is 7200 s): {state} "
                     f"{control['seconds_after_cut']} s after the same cut.")
    lines.append(f"* Checked: {checks(r)}.")
    return lines


def pgbouncer(works: Result | None, refused: Result | None) -> list[str]:
    lines = []
    if works:
        for name, v in works["variants"].items():
            actions = ", ".join(f"{k} {n}" for k, n in v["actions"].items())
            how = "lock='table'" if name == "table" else "lock_url= (direct)"
            lines.append(f"* Through PgBouncer with {how}: {works['replicas']} replicas: "
                         f"{actions}; {'pass' if not v['problems'] else v['problems']}.")
    if refused:
        for name, v in refused["variants"].items():
            codes = ", ".join(f"exit {k}: {n}" for k, n in v["exit_codes"].items())
            where = "url" if name == "url" else "lock_url"
            lines.append(f"* Advisory lock with {where} through PgBouncer: {codes}; "
                         f"{'pass' if not v['problems'] else v['problems']}. The message: "
                         f"\"{v['message']}\"")
    return lines


def starvation(r: Result) -> list[str]:
    actions = ", ".join(f"{k} {v}" for k, v in r["actions"].items())
    return [
        f"{r['replicas']} replicas, max_connections {r['max_connections']} "
        f"({r['superuser_reserved_connections']} reserved); failures: {r['failures']}.",
        f"* Every replica ready after {r['all_ready_seconds']} s ({actions}); "
        f"{r['replicas_refused_at_first_then_retried']} were refused a connection at first "
        "('too many clients', retried as transient).",
        f"* Most client sessions seen at once: {r['max_client_sessions_seen']}; most "
        f"connections held by one waiting replica: {r['max_connections_per_waiting_replica']}"
        f" ({r['samples']} samples of pg_stat_activity).",
    ]


def outsider(r: Result) -> list[str]:
    outcomes = ", ".join(f"{k}: {v}" for k, v in r["outsider_outcomes"].items())
    return [
        f"{r['trials']} trials, {r['replicas']} herd replicas + 1 plain `alembic upgrade head`"
        f" each; overlaps landed: {r['landed']}, re-runs: {r['reruns']}; failures: "
        f"{r['failures']}.",
        f"* herd's leader noticed a collision in {r['trials_where_herd_noticed_a_collision']} "
        f"trials and finished anyway; the plain runner: {outcomes}.",
        f"* Checked: {checks(r)}.",
    ]


def secrets(r: Result) -> list[str]:
    runs = ", ".join(f"{k} (exit {v['exit']}, {v['lines']} lines)" for k, v in r["runs"].items())
    return [f"Failures: {r['failures']}. herd CLI paths checked: {runs}. Every other scenario "
            "also checks all its replicas' output (herd's log at INFO) for the password."]


SCENARIOS: list[tuple[str, str, Callable[[Result], list[str]]]] = [
    ("restart", "2. Database restarted in the middle of a herd", restart),
    ("network-drop", "3a. Leader's connections dropped (proxy)", drop),
    ("network-freeze", "3b. Leader frozen (proxy: sockets open, nothing forwarded)", freeze),
    ("network-partition", "3c. Leader partitioned (link down: no FIN, no RST)", partition),
    ("starvation", "5. More replicas than connection slots", starvation),
    ("outsider", "6. A plain `alembic upgrade head` in the middle of a herd", outsider),
    ("secrets", "7. Secrets", secrets),
]

# Scenarios with no fault in time to land: secrets is a check of what every command prints
# (PgBouncer, a configuration, has its own line).
NO_FAULT_IN_TIME = {"secrets"}

INTRO = (Path(__file__).with_name("report_intro.md")).read_text()


SCENARIO_BACKEND = {"restart": "PostgreSQL (own server)", "network-drop": "PostgreSQL",
                    "network-freeze": "PostgreSQL", "network-partition": "PostgreSQL",
                    "starvation": "PostgreSQL (own server)", "outsider": "PostgreSQL",
                    "secrets": "PostgreSQL, MariaDB"}


def main(folder: Path, output: Path) -> None:
    results = load(folder)
    out = [INTRO, "## Results", "",
           "Every row is one fault class on one backend; a trial counts only if its fault "
           "landed mid-revision (a trial whose fault never landed is a failure).", "",
           "| fault | backend | trials | faults landed | re-runs | failures | recorded |",
           "|---|---|---|---|---|---|---|"]
    for name, title in LEADER_CLASSES.items():
        for dialect, backend in DIALECTS.items():
            r = pick(results, f"leader-{name}-{dialect}")
            if r:
                out.append(f"| 1. leader: {title} | {backend} | {r['trials']} | {landing(r)} "
                           f"| {verdict(r)} | {r['recorded']} |")
    works, refused = results.get("pgbouncer-works"), results.get("pgbouncer-advisory-refused")
    for name, title, _ in SCENARIOS:
        r = pick(results, name)
        if r:
            cells = ("no fault in time (a check of every output) | - "
                     if name in NO_FAULT_IN_TIME else landing(r))
            out.append(f"| {title} | {SCENARIO_BACKEND[name]} | {r.get('trials', 1)} | "
                       f"{cells} | {verdict(r)} | {r['recorded']} |")
        if name == "network-partition" and (works or refused):
            failures = sum((x or {}).get("failures", 0) for x in (works, refused))
            out.append(f"| 4. PgBouncer, transaction pooling | PostgreSQL | 4 herds | no fault "
                       f"in time (a configuration) | - | "
                       f"{'**pass**' if not failures else f'**{failures} failed**'} | "
                       f"{(works or refused or {}).get('recorded')} |")
    out += ["", "### 1. The leader faulted inside a revision", "",
            "A herd of 4 replicas (`tests/faults/test_leader_faults.py`), the four-revision "
            "faultset (two data migrations); in each trial the fault "
            "is brought on at a random point of the first half of a revision chosen at "
            "random. Checked after every trial: no two runs overlap (committed marks, "
            "attempts); each data row and each revision's committed marks exactly once; "
            "the version table at head; the attempt log agrees with it (every revision "
            "applied once, nothing left failed or running); every exit code documented and "
            "the one the fault calls for. On MariaDB (DDL not transactional) a revision cut "
            "in the middle stops every replica (exit 9 or 10) until an operator repairs it: "
            "the trial undoes it and runs `herd resolve` as the exit line says, then "
            "migrates and checks (\"repaired + resolved\" counts those trials). On SQLite "
            "herd treats DDL as not transactional too (as Alembic does): a revision whose "
            "leader was signalled or fenced is recorded `failed`, the others exit 9, and the "
            "trial resolves it the same way (SQLite had rolled it back: nothing to undo). "
            "The controls below run on PostgreSQL and MariaDB, not on SQLite.", "",
            *leader_rows(results), ""]
    ctl = controls(results)
    if ctl:
        out += ["### 1c. Controls: one protection switched off", "",
                "The same trials with one protection switched off in the replica "
                "(`tests/faults/driver.py`, `HERD_FAULT_CONTROL`): the lock itself (`no-lock`: "
                "every replica leads at once), the take-over by a waiting replica (`no-takeover`), "
                "signal handling (`no-signals`), the lease's "
                "fence inside each revision's transaction (`no-fence`, aimed at m1), the look "
                "at the other lock kinds (`no-rivals`), the wrapped command's process group "
                "and forwarding (`no-group`). The second table says, for each check, which "
                "controls made it fail; a check no control can make fail on a backend says "
                "why. `no-fence` alone makes no check fail with this faultset (a taker waits "
                "on the paused transaction's locks, and Alembic's version-row compare-and-set "
                "refuses a stale later revision); `tests/test_fencing.py`'s control shows a "
                "stale commit without the fence. The mode column is env.py's setting (on "
                "MariaDB, DDL commits on its own either way).", "",
                *ctl]
    for name, title, render in SCENARIOS:
        r = pick(results, name)
        if not r:
            continue
        out += [f"### {title}", "", f"Backend: {r.get('backend', 'see the test')}. Recorded "
                f"{r['recorded']}.", "", *render(r), ""]
        if name == "network-partition":
            out += ["### 4. PgBouncer in transaction pooling mode", "",
                    *pgbouncer(works, refused), ""]
    missing = [title for name, title, _ in SCENARIOS if not pick(results, name)]
    missing += [f"1. leader: {title} - {backend}" for name, title in LEADER_CLASSES.items()
                for dialect, backend in DIALECTS.items()
                if name not in NOT_ON.get(dialect, set())
                and not pick(results, f"leader-{name}-{dialect}")]
    if missing:
        out += ["### Not run", "", *[f"* {m}" for m in missing], ""]
    output.write_text("\n".join(out).rstrip() + "\n" + kept_block(output))


KEPT = ("<!-- make lockwait: begin -->", "<!-- make lockwait: end -->")
"""The markers of a block another report writes into docs/faults.md (``make lockwait``,
tests/lockwait_trial.py); this report keeps it as it is."""


def kept_block(output: Path) -> str:
    begin, end = KEPT
    text = output.read_text() if output.exists() else ""
    if begin not in text or end not in text:
        return ""
    return "\n" + begin + text.split(begin, 1)[1].split(end, 1)[0] + end + "\n"


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
