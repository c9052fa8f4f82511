"""Expand or contract: what a revision declares about the release before it.

A revision file says it beside Alembic's own module-level variables::

    revision = "a1b2c3"
    down_revision = "f0e1d2"
    branch_labels = None
    depends_on = None
    herd_phase = "expand"

*expand*: the previous release keeps working once it is applied (a new table, a nullable
column, an index built concurrently). *contract*: it breaks the previous release (a drop, a
rename, NOT NULL, a type change). A revision without ``herd_phase`` (or with ``None``, as a
template renders an unset value) is *unmarked*; what that counts as is the caller's setting,
and the safe default is contract.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from alembic.script import Script, ScriptDirectory
from alembic.script.revision import ResolutionError, RevisionError
from alembic.util import CommandError

from .errors import ConfigurationError, RevisionNotFoundError

Phase = Literal["expand", "contract"]
PHASES: tuple[Phase, ...] = ("expand", "contract")
PHASE_VARIABLE = "herd_phase"


@dataclass(frozen=True)
class PhasedRevision:
    """One revision, the phase it counts as, and whether its file declares it."""

    revision: str
    phase: Phase
    declared: bool
    path: str


def declared_phase(script: Script) -> Phase | None:
    """The phase the revision file declares, or None when it declares none."""
    value = getattr(script.module, PHASE_VARIABLE, None)
    if value is None:
        return None
    for phase in PHASES:
        if value == phase:
            return phase
    raise ConfigurationError(
        f"{script.path}: {PHASE_VARIABLE} = {value!r} is not a phase; write "
        f"{PHASE_VARIABLE} = 'expand' or {PHASE_VARIABLE} = 'contract' (or leave it out)"
    )


def phase_of(script: Script, *, unmarked: Phase = "contract") -> Phase:
    """The phase of one revision; an unmarked revision counts as ``unmarked``."""
    check_unmarked(unmarked)
    return declared_phase(script) or unmarked


def revisions_between(
    script_directory: ScriptDirectory,
    lower: str | Sequence[str] | None,
    upper: str | Sequence[str],
    *,
    unmarked: Phase = "contract",
) -> tuple[PhasedRevision, ...]:
    """The revisions after ``lower`` up to and including ``upper``, oldest first.

    ``lower`` and ``upper`` are revision ids or heads (a tuple when there are several);
    ``lower=None`` means the base. This is what a database at ``upper`` holds that code
    whose head is ``lower`` does not.
    """
    check_unmarked(unmarked)
    try:
        newest_first = list(script_directory.iterate_revisions(_key(upper), _key(lower)))
    except (ResolutionError, RevisionError, CommandError) as exc:
        raise RevisionNotFoundError(
            f"cannot list the revisions after {lower!r} up to {upper!r} ({exc}); check both "
            "revision ids with 'alembic history'"
        ) from exc
    phased = []
    for script in reversed(newest_first):
        declared = declared_phase(script)
        phased.append(PhasedRevision(
            revision=script.revision,
            phase=declared or unmarked,
            declared=declared is not None,
            path=script.path,
        ))
    return tuple(phased)


def cut_at_contract(
    script_directory: ScriptDirectory, pending: Sequence[str], *, unmarked: Phase = "contract",
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``pending`` (oldest first) split before its first contract revision: (the expand
    revisions ``--expand-only`` applies, the revisions it leaves for the contract step)."""
    phases = [phase_of(script_directory.get_revision(r), unmarked=unmarked) for r in pending]
    first = phases.index("contract") if "contract" in phases else len(phases)
    return tuple(pending[:first]), tuple(pending[first:])


def _key(heads: str | Sequence[str] | None) -> str | tuple[str, ...]:
    if heads is None:
        return "base"
    if isinstance(heads, str):
        return heads
    return tuple(heads) or "base"


def check_unmarked(unmarked: str) -> None:
    if unmarked not in PHASES:
        raise ConfigurationError(
            f"unmarked revisions must count as 'expand' or 'contract', not {unmarked!r}"
        )
