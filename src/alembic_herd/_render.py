"""What ``herd check``, ``herd status`` and ``herd history`` print as text (``--json``
prints the objects' ``as_dict()`` instead)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._history import Attempt
    from ._lint import LintReport
    from ._outcome import Status


def heads_text(heads: Sequence[str]) -> str:
    return ", ".join(heads) or "base"


def status_text(st: Status) -> str:
    """The heads, the pending revisions, the lock and its holder, the recent attempts."""
    holder = st.holder.describe() if st.holder else "nobody"
    pending = (f"{len(st.pending)} revision(s): {', '.join(st.pending)}" if st.pending
               else "none (current)")
    lines = [
        f"database:       {st.url}",
        f"version table:  {st.version_table}",
        f"current heads:  {', '.join(st.current_heads) or 'none (empty database)'}",
        f"script heads:   {', '.join(st.script_heads) or 'none'}",
        f"pending:        {pending}",
    ]
    if st.retrying:
        lines.append(f"leader:         {st.retrying}")
    if st.ahead:
        how = "all expand: this release can run on it" if st.ahead_expand else "--allow-ahead"
        lines.append(f"ahead:          {', '.join(st.ahead)} ({how})")
    lines.append(f"lock:           {st.lock}, held by {holder}")
    if st.recent:
        lines += ["recent attempts (newest first):", history_text(st.recent, indent="  ")]
    return "\n".join(lines)


def history_text(rows: Sequence[Attempt], indent: str = "") -> str:
    """The attempt log as a table with aligned columns, one row per attempt."""
    if not rows:
        return f"{indent}no attempts recorded"
    table = [("ID", "REVISION", "STATUS", "STARTED", "SECONDS", "REPLICA", "ERROR")]
    for row in rows:
        error = (row.error or "").strip().splitlines()
        table.append((
            str(row.id if row.id is not None else ""), row.revision, row.status,
            row.started.isoformat(timespec="seconds"),
            f"{row.duration:.2f}" if row.duration is not None else "",
            f"{row.host}:{row.pid}", error[-1] if error else "",
        ))
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    return "\n".join(
        (indent + "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True))).rstrip()
        for r in table
    )


def check_line(st: Status) -> tuple[str, bool]:
    """``herd check``'s one line, and whether the database counts as current."""
    at = f"{st.version_table} at {heads_text(st.current_heads)}"
    if st.ahead_expand:
        return (f"current: {at}, ahead by {', '.join(st.ahead)} (all expand); this release "
                "can run on it"), True
    if st.ahead:
        return f"current (ahead of this code): {at}, unknown {', '.join(st.ahead)}", True
    if st.is_current and st.left:
        return (f"current: {at}; {len(st.left)} revision(s) left for the contract step "
                f"({', '.join(st.left)})"), True
    if st.is_current:
        return f"current: {at}", True
    return f"not current: {len(st.pending)} revision(s) pending ({', '.join(st.pending)})", False


def lint_text(report: LintReport) -> str:
    """``herd lint``'s findings, one line each."""
    return "".join(f"{finding.line()}\n" for finding in report.findings)
