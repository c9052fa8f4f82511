"""Findings: rules over one run's figures. Each rule quotes the figures it used, so the
report's text always matches the run it comes from (and changes when the figures do).

:func:`findings` returns ``(significant, checked)``: where herd costs noticeably more than
it must, and the suspects that were checked and found small.
"""

from __future__ import annotations

from typing import Any

from .stats import ratio

NAMES = {"postgresql": "PostgreSQL", "mariadb": "MariaDB", "sqlite": "SQLite"}
CAP = 0.5
IDEAL_P50 = (1 - 0.5 ** 0.5) * CAP  # full jitter, cap 0.5 s: 0.146 s
Finding = tuple[str, str]


def _s(v: float | None, d: int = 2) -> str:
    return "?" if v is None else f"{v:.{d}f} s"


def _ms(v: float | None, d: int = 1) -> str:
    return "?" if v is None else f"{v * 1000:.{d}f} ms"


def _backends(r: dict[str, Any]) -> list[str]:
    return [b for b in ("postgresql", "mariadb", "sqlite") if r["herd_start"].get(b)]


def findings(r: dict[str, Any]) -> tuple[list[Finding], list[Finding]]:
    significant: list[Finding] = []
    checked: list[Finding] = []
    for rule in (_correctness, _per_revision, _single_fresh, _coordination, _wakeup,
                 _idle, _env_probe, _readiness, _connections):
        got_significant, got_checked = rule(r)
        significant += got_significant
        checked += got_checked
    return significant, checked


def _correctness(r: dict[str, Any]) -> tuple[list[Finding], list[Finding]]:
    bad, good = [], []
    for b in _backends(r):
        for n, tools in r["herd_start"][b]["summary"].items():
            for tool in ("herd", "herd_current"):
                t = tools.get(tool)
                if t and (t["failures"] or t["duplicates"] or t["not_at_head_trials"]):
                    bad.append(f"{NAMES[b]} N={n} ({tool}): {t['failures']} failed processes "
                               f"({t['errors']}), {t['duplicates']} duplicate rows, "
                               f"{t['not_at_head_trials']} trials not at head")
        herd_processes = sum(t.get("herd", {}).get("processes", 0)
                             for t in r["herd_start"][b]["summary"].values())
        plain = [t["alembic"] for t in r["herd_start"][b]["summary"].values()
                 if "alembic" in t]
        good.append(f"{NAMES[b]}: {herd_processes} herd processes on fresh databases, none "
                    f"failed, no duplicate row; plain Alembic in the same trials: "
                    f"{sum(t['failures'] for t in plain)} of {sum(t['processes'] for t in plain)}"
                    f" failed, {sum(t['duplicates'] for t in plain)} duplicate rows")
    if bad:
        return [("herd failed or duplicated in this run.", "; ".join(bad) + ".")], []
    return [], [("Correctness.", "; ".join(good) + ".")]


# What herd does between two revisions, and what is left to take out, per backend.
_BOOKKEEPING = {
    "postgresql": "before each revision herd checks its lock (one constant-time statement) "
                  "and, in one statement, marks the previous revision `applied` and inserts "
                  "the next one's `running` row; after the last, one more check and update.",
    "mariadb": "before each revision herd checks its lock, marks the previous revision "
               "`applied` and inserts the next one's `running` row (two statements: MySQL has "
               "no data-modifying CTE); after the last, one more check and update.",
    "sqlite": "the lock check is a stat() of the lock file; the rows are buffered and written "
              "after the run, 83 per statement.",
}
_LEFT = {
    "postgresql": " What is left is one round trip for the check and one durable commit for the "
                  "log per revision. The `running` row must be committed before its revision "
                  "starts (it is how the next leader learns that a revision was interrupted), "
                  "so it stays.",
    "mariadb": " Left (not applied): the two writes could be one `INSERT ... ON DUPLICATE KEY "
               "UPDATE` of both rows, at the price of reading the new row's id back another "
               "way.",
    "sqlite": " What is left is mostly CPU: the rows, the log events and the stat() per "
              "revision.",
}


def _per_revision(r: dict[str, Any]) -> tuple[list[Finding], list[Finding]]:
    significant, checked = [], []
    for b in _backends(r):
        e = r["per_migration"].get(b)
        if not e or e.get("extra_per_revision") is None:
            continue
        count = e["revisions"]
        herd_p = e.get("profile", {}).get("herd", {})
        own = {k: v for k, v in herd_p.items() if k.startswith(("attempt log", "lock:"))}
        own_seconds = sum(v.get("seconds", 0.0) for v in own.values())
        own_count = sum(int(v.get("count", 0)) for v in own.values())
        extra = e["extra_per_revision"] * count
        text = (f"On {NAMES[b]}, applying {count} revisions took herd "
                f"{_s(e['herd']['median'])} and plain Alembic {_s(e['alembic']['median'])} "
                f"(paired ratio {e['ratio']:.2f}×): {_ms(e['extra_per_revision'], 2)} more "
                "per revision.")
        if own:
            detail = ", ".join(f"{k} {int(v.get('count', 0))}× {_s(v.get('seconds'), 3)}"
                               for k, v in sorted(own.items()))
            share = ratio(own_seconds, extra)
            text += (f" In a profiled run herd's own statements were {own_count} "
                     f"({own_count / count:.1f} per revision: {detail}), "
                     f"{_s(own_seconds, 3)} of round trips"
                     + (f", {share:.0%} of the difference" if share and extra > 0 else "")
                     + ": " + _BOOKKEEPING[b])
        hc, ac = e["herd"].get("cpu_median"), e["alembic"].get("cpu_median")
        if hc is not None and ac is not None:
            text += (f" herd's process used {_s(hc, 2)} of CPU against Alembic's "
                     f"{_s(ac, 2)} ({_ms((hc - ac) / count, 2)} per revision: building and "
                     "executing those statements, the attempt rows and the per-revision "
                     "log events).")
        async_extra = e.get("extra_per_revision_async_commit")
        if async_extra is not None:
            text += (f" With `synchronous_commit = off` (no wait for a durable commit) herd's "
                     f"extra was {_ms(async_extra, 2)} per revision instead of "
                     f"{_ms(e['extra_per_revision'], 2)}: the flushes of the attempt-log "
                     "writes are "
                     + ("the larger part." if async_extra < 0.5 * e["extra_per_revision"]
                        else "a minor part; the round trips and the client's CPU are most "
                             "of it."))
        text += _LEFT[b]
        text += (" For scale: real revisions on real data take far longer than these "
                 "empty-table DDLs, so the ratio is at its worst here.")
        if e["ratio"] > 1.25 and e["extra_per_revision"] > 0.001:
            significant.append((f"Per-revision bookkeeping on {NAMES[b]}.", text))
        else:
            checked.append((f"Per-revision bookkeeping on {NAMES[b]}.", text))
    return significant, checked


def _single_fresh(r: dict[str, Any]) -> tuple[list[Finding], list[Finding]]:
    significant, checked = [], []
    for b in _backends(r):
        one = r["herd_start"][b]["summary"].get("1", {})
        herd, plain = one.get("herd"), one.get("alembic")
        if not herd or not plain:
            continue
        h, a = herd["last_done_median"], plain["last_done_median"]
        profile = r["per_migration"].get(b, {}).get("profile", {}).get("herd", {})
        fixed = {k: v for k, v in profile.items()
                 if k in ("attempt log: create", "attempt log: read", "catalog lookups",
                          "heads read", "lock: take/release")}
        detail = ", ".join(f"{k} {int(v.get('count', 0))}× {_s(v.get('seconds'), 3)}"
                           for k, v in sorted(fixed.items()))
        text = (f"One replica alone on a fresh {NAMES[b]} database: herd "
                f"{_s(h, 3)}, plain `alembic upgrade head` {_s(a, 3)} ({h / a:.1f}×, "
                f"+{_ms(h - a, 0)}) for the four-revision set.")
        hs, as_ = herd.get("statements_per_process_median"), plain.get(
            "statements_per_process_median")
        if hs is not None and as_ is not None:
            hc = herd.get("connections_per_process_median") or 0
            ac = plain.get("connections_per_process_median") or 0
            text += (f" herd issued {hs:.0f} statements on {hc:.0f} connections, Alembic "
                     f"{as_:.0f} on {ac:.0f}; CPU {_ms(herd.get('cpu_per_process_median'), 0)}"
                     f" against {_ms(plain.get('cpu_per_process_median'), 0)} (herd's check "
                     "before the lock, the lock, its attempt-log table created on first use, "
                     "the re-check under the lock, and per revision a lock check and the "
                     "attempt-log writes).")
        if detail:
            text += (f" herd's once-per-run statements in the profiled {NAMES[b]} run "
                     f"(section 4): {detail}"
                     + ("; the attempt-log table is created by one `DO` statement under a "
                        "transaction-level advisory lock, on herd's own connection."
                        if b == "postgresql" else "."))
        if h - a > 0.05 and h / a > 1.5:
            significant.append((f"Fixed cost of a first migration on {NAMES[b]}.", text))
        else:
            checked.append((f"Fixed cost of a first migration on {NAMES[b]}.", text))
    return significant, checked


def _coordination(r: dict[str, Any]) -> tuple[list[Finding], list[Finding]]:
    significant, checked = [], []
    cores = r["machine"].get("cores") or 1
    for b in _backends(r):
        over = r["overhead"].get(b, {})
        by_n = over.get("by_n", {})
        if not by_n:
            continue
        n = max(by_n, key=int)
        e = by_n[n]
        wake = r["wakeup"].get(b, {}).get(n, {}).get("herd", {})
        single = over.get("single_migration")
        text = (f"On {NAMES[b]} at N={n}, herd took {_s(e['herd_fresh'])} on a fresh database "
                f"and {_s(e['herd_current'])} on a current one (medians): the paired "
                f"difference, {_s(e['difference'])}, is "
                f"{e['ratio_to_single_migration'] or 0:.1f}× one migration "
                f"({_s(single, 3)}).")
        if wake:
            text += (f" The leader finished {_s(wake.get('leader_done_median'))} after the "
                     "release")
            if wake.get("leader_cpu_median") is not None:
                text += (f" but used only {_s(wake['leader_cpu_median'], 3)} of CPU: it "
                         f"spent the rest waiting, for one of the {cores} cores that {n} "
                         "starting processes share and for the server")
            text += (f"; the last waiter returned at most {_ms(wake.get('max'), 0)} after "
                     f"the leader released its lock (p50 {_ms(wake.get('p50'), 0)}).")
        cpu = e.get("cpu_total", {})
        per = e.get("cpu_per_process", {})
        if cpu.get("herd") is not None and cpu.get("alembic") is not None:
            text += (f" CPU used by all {n} processes after the release (median trial): herd "
                     f"{_s(cpu['herd'])}, herd on a current database "
                     f"{_s(cpu.get('herd_current'))}, plain Alembic {_s(cpu['alembic'])}"
                     + (f", yoyo {_s(cpu['yoyo'])}" if cpu.get("yoyo") is not None else "")
                     + f"; per process {_ms(per.get('herd'), 0)}, "
                     f"{_ms(per.get('herd_current'), 0)}, {_ms(per.get('alembic'), 0)}.")
        if wake.get("polls_per_waiter_median") is not None:
            rate = wake.get("waiter_statements_per_second") or 0.0
            text += (f" The median waiter made {wake['polls_per_waiter_median']:.0f} polling "
                     f"rounds (each: re-read the heads, try the lock), "
                     f"{wake['statements_per_waiter_median']:.0f} statements in all with its "
                     f"start-up reads, and used {_ms(wake.get('waiter_cpu_median'), 0)} of "
                     f"CPU; the herd's waiters issued about {rate * int(n):.0f} statements "
                     "per second while waiting.")
        leader_cpu, leader_done = wake.get("leader_cpu_median"), wake.get("leader_done_median")
        if leader_cpu is not None and leader_done and leader_cpu < 0.25 * leader_done:
            text += (" So at this N on this machine the time goes to waiting for a CPU: "
                     f"{n} interpreters share {cores} cores, and herd's waiters add their "
                     "polling to that. Replicas on their own cores would see roughly one "
                     "start-up, one migration and one wake-up.")
        if e.get("ratio_to_single_migration") and e["ratio_to_single_migration"] > 3:
            significant.append((f"Coordination overhead at N={n} on {NAMES[b]}.", text))
        else:
            checked.append((f"Coordination overhead at N={n} on {NAMES[b]}.", text))
    return significant, checked


def _wakeup(r: dict[str, Any]) -> tuple[list[Finding], list[Finding]]:
    significant, checked = [], []
    for b in _backends(r):
        wake = r["wakeup"].get(b, {})
        if not wake:
            continue
        n = max(wake, key=int)
        herd, yoyo = wake[n].get("herd"), wake[n].get("yoyo")
        if not herd:
            continue
        fc = herd.get("from_commit") or {}
        text = (f"On {NAMES[b]} at N={n}, from the leader's lock release to each waiter's "
                f"return: p50 {_ms(herd['p50'], 0)}, p99 {_ms(herd['p99'], 0)}, max "
                f"{_ms(herd['max'], 0)} over {herd['count']} waiters"
                + (f" (from the migration's commit, which is what waiters watch: p50 "
                   f"{_ms(fc.get('p50'), 0)}, max {_ms(fc.get('max'), 0)})" if fc else "")
                + f"; an ideal full-jitter poller capped at 0.5 s gives p50 "
                f"{_ms(IDEAL_P50, 0)}, p99 450 ms, max 500 ms.")
        if yoyo:
            text += (f" yoyo in the same run: p50 {_ms(yoyo['p50'], 0)}, p99 "
                     f"{_ms(yoyo['p99'], 0)} (its waiters take the lock one by one).")
        text += (" The cap sets both the latency and the load: at a cap c the ideal p50 is "
                 "0.29·c and each waiter polls about every c/2 (two statements a round), so "
                 "a 0.1 s cap would wake waiters in about 30 ms for five times the polling "
                 "(`poll_interval` is already an option of `upgrade()` and "
                 "`wait_until_current()`).")
        if herd["p50"] is not None and herd["p50"] < IDEAL_P50:
            text += (" The measured p50 is below the ideal because the leader finishes while "
                     "many waiters are still early in their backoff (sleeps start at 50 ms "
                     "and double), not yet at the 0.5 s cap.")
        if herd["p50"] is not None and herd["p50"] > 2 * IDEAL_P50:
            text += (f" The measured p50 is more than twice the ideal: with {n} processes on "
                     f"{r['machine'].get('cores')} cores, waiters also wait for a CPU.")
            significant.append((f"Wake-up latency on {NAMES[b]}.", text))
        else:
            checked.append((f"Wake-up latency on {NAMES[b]}.", text))
    return significant, checked


def _idle(r: dict[str, Any]) -> tuple[list[Finding], list[Finding]]:
    significant, checked = [], []
    interp = r.get("interpreter", {})
    imports = ""
    if interp:
        h = interp.get("import alembic_herd.cli", {}).get("median")
        a = interp.get("import alembic.config", {}).get("median")
        p = interp.get("python -c pass", {}).get("median")
        imports = (f" Of each process, the interpreter takes {_s(p, 3)}; importing "
                   f"`alembic_herd.cli` {_s(h, 3)} against `alembic.config` {_s(a, 3)}.")
    for b in _backends(r):
        idle = r["idle_cost"].get(b, {})
        if not idle:
            continue
        parts, worst = [], 1.0
        for size, e in sorted(idle.items(), key=lambda kv: int(kv[0])):
            rm = e["ratios"]["herd migrate / alembic upgrade head"]
            rc = e["ratios"]["herd check / alembic current"]
            worst = max(worst, rm or 1.0, rc or 1.0)
            parts.append(f"{size} revisions: `herd migrate` {_s(e['herd migrate']['median'], 3)}"
                         f" vs `alembic upgrade head` {_s(e['alembic upgrade head']['median'], 3)}"
                         f" ({rm:.2f}×), `herd check` {_s(e['herd check']['median'], 3)} vs "
                         f"`alembic current` {_s(e['alembic current']['median'], 3)} ({rc:.2f}×)")
        text = f"On {NAMES[b]}: " + "; ".join(parts) + "." + imports
        h_imp = interp.get("import alembic_herd.cli", {}).get("median")
        a_imp = interp.get("import alembic.config", {}).get("median")
        small = idle.get(str(min(int(k) for k in idle)), {})
        if h_imp is not None and a_imp is not None and small:
            diff = small["herd check"]["median"] - small["alembic current"]["median"]
            extra_import = h_imp - a_imp
            if diff > 0 and extra_import >= 0.9 * diff:
                how = "accounts for all of"
            elif diff > 0 and extra_import > 0.5 * diff:
                how = "is most of"
            else:
                how = "is part of"
            text += (f" That import difference, {_ms(extra_import, 0)}, {how} the "
                     f"{_ms(diff, 0)} between `herd check` and `alembic current` on the "
                     "smallest set: herd's CLI imports click, tenacity and its own modules on "
                     "top of Alembic (`python -X importtime -c 'import alembic_herd.cli'` "
                     "shows them).")
        if worst > 1.15:
            significant.append((f"Cost of a restart with nothing pending on {NAMES[b]}.", text))
        else:
            checked.append((f"Cost of a restart with nothing pending on {NAMES[b]}.", text))
    return significant, checked


def _env_probe(r: dict[str, Any]) -> tuple[list[Finding], list[Finding]]:
    significant, checked = [], []
    for b in _backends(r):
        e = r["readiness"].get(b, {})
        probe, status, scripts = e.get("envprobe"), e.get("status"), e.get("scripts")
        if not probe or not status:
            continue
        share = ratio(probe["p50"], status["p50"])
        text = (f"On {NAMES[b]} ({max(int(k) for k in r['idle_cost'][b])} revisions), "
                f"herd's offline run of env.py (`load_environment`, on every call) costs "
                f"{_ms(probe['p50'], 1)}; loading the revision files "
                f"{_ms(scripts['p50'] if scripts else None, 1)}; a whole `status()` "
                f"{_ms(status['p50'], 1)}" + (f" (the probe is {share:.0%} of it)." if share
                                              is not None else "."))
        if share is not None and share > 0.25:
            significant.append(("The offline env.py probe.", text))
        else:
            checked.append(("The offline env.py probe.", text))
    return significant, checked


def _readiness(r: dict[str, Any]) -> tuple[list[Finding], list[Finding]]:
    significant, checked = [], []
    for b in _backends(r):
        e = r["readiness"].get(b, {})
        probe, select = e.get("probe"), e.get("select")
        if not probe or not select:
            continue
        text = (f"On {NAMES[b]}: {_ms(probe['p50'], 2)} per probe (p99 "
                f"{_ms(probe['p99'], 2)}) against {_ms(select['p50'], 2)} for a bare "
                f"`SELECT version_num` on an open connection; built once in "
                f"{_ms(probe.get('construct'), 0)}.")
        if probe["p50"] > 0.002 and probe["p50"] > 3 * select["p50"]:
            significant.append(("The readiness probe.", text))
        else:
            checked.append(("The readiness probe.", text))
    return significant, checked


def _connections(r: dict[str, Any]) -> tuple[list[Finding], list[Finding]]:
    conns = r.get("connections", {}).get("postgresql")
    if not conns:
        return [], []
    worst = []
    over = False
    for n, tools in conns.items():
        h = tools.get("herd")
        if not h:
            continue
        worst.append(f"N={n}: {h['total']}")
        if h["total"] > int(n) + 1:
            over = True
    text = ("Peak connections of a herd on PostgreSQL (at one moment): " + ", ".join(worst)
            + "; at most N + 1 expected (one per replica and env.py's on the leader).")
    if over:
        return [("Connections above N + 1.", text)], []
    return [], [("Connections.", text)]
