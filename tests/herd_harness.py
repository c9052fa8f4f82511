"""Release N real processes at once (a barrier) and collect what each did.

Each child is the shared replica program (:mod:`alembic_herd.demo.replica`): it imports
everything first, says ``ready``, and blocks on its stdin; the parent waits for all of
them, then writes ``go`` to every one in a tight loop. The children therefore start the
interesting part within a few milliseconds of each other.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alembic_herd.demo import replica

CHILD = Path(replica.__file__)


@dataclass
class Result:
    returncode: int
    report: dict[str, Any]
    stdout: str
    stderr: str = field(repr=False)


def release(n: int, args: list[str], *, env: dict[str, str] | None = None,
            timeout: float = 300.0) -> list[Result]:
    """Start ``n`` replicas with ``ARGS...`` and release them together."""
    child_env = {**os.environ, **(env or {})}
    procs = [
        subprocess.Popen([sys.executable, str(CHILD), *args], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=child_env,
                         text=True)
        for _ in range(n)
    ]
    for proc in procs:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if line.strip() != "ready":
            for p in procs:
                p.kill()
            err = proc.stderr.read() if proc.stderr else ""
            raise RuntimeError(f"child did not get ready: {line!r} {err}")
    for proc in procs:  # the barrier opens
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=timeout)
        report: dict[str, Any] = {}
        for line in out.splitlines():
            if line.startswith("{"):
                report = json.loads(line)
        results.append(Result(proc.returncode, report, out, err))
    return results
