"""docs/adopting.md, run: each block marked ``<!-- adopt: SHAPE KIND [PATH] -->`` in its source
is carried out on a small project of that shape (tests/projects/adopt_SHAPE), so that the
guide cannot drift from what works.

Kinds: ``file PATH`` (written into the project as shown), ``snippet PATH`` (must appear in
that project file verbatim), ``run`` (a bash script started by three replicas released at
once on a fresh database: all exit 0, the data migration ran once, the database is at head;
then a restart), ``fails CODE`` (one run exits CODE), ``compose`` / ``kubernetes`` (valid
against the Compose specification / the Kubernetes API schemas, and every command they start
is one line of the shape's ``run`` blocks). ``uvicorn`` and ``gunicorn`` are stand-ins that
load the application the way the servers do (import ``module:app``, call ``factory()``),
print ``app started`` and exit.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import sqlalchemy as sa
import yaml
from kubernetes_validate import utils as k8s
from sqlalchemy.engine import URL

from conftest import PROJECTS, make_database, render

DOC = Path(__file__).parent.parent / "docs" / "adopting.md"
SHAPES = ["prestart", "flask", "owncli"]
REPLICAS = 3
_MARK = re.compile(r"^<!-- adopt: (\w+) (\w+)(?: (\S+))? -->\n```(\w+)\n(.*?)^```$",
                   re.MULTILINE | re.DOTALL)


@dataclass(frozen=True)
class Block:
    shape: str
    kind: str
    arg: str | None
    text: str


def blocks(shape: str | None = None, kind: str | None = None) -> list[Block]:
    found = [Block(m[1], m[2], m[3], m[5]) for m in _MARK.finditer(DOC.read_text())]
    return [b for b in found if shape in (None, b.shape) and kind in (None, b.kind)]


# What each shape's database holds once its migrations ran exactly once.
HEAD = {"prestart": "p2", "flask": "f2", "owncli": "s2"}
ONCE = {
    "prestart": {"SELECT count(*) FROM item WHERE title = 'first'": 1},
    "flask": {"SELECT count(*) FROM note WHERE body = 'welcome'": 1},
    "owncli": {"SELECT count(*) FROM product": 2, "SELECT count(*) FROM index_rebuild": 1},
}

SERVER = f"""#!{sys.executable}
# A stand-in for uvicorn / gunicorn: load the app as they do, then exit.
import importlib, os, sys
sys.path.insert(0, os.getcwd())
spec = next(a for a in sys.argv[1:] if ":" in a and not a[0].isdigit())
module, _, attr = spec.partition(":")
app = importlib.import_module(module)
app = eval(attr, vars(app))  # 'app' or 'create_app()', as gunicorn evaluates it
assert app is not None
print("app started", flush=True)
"""


def shims(folder: Path) -> Path:
    folder.mkdir()
    for name in ("uvicorn", "gunicorn"):
        (folder / name).write_text(SERVER)
        (folder / name).chmod(0o755)
    return folder


def environment(url: str, bin_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("HERD_") and k not in ("DATABASE_URL", "ALEMBIC_CONFIG")}
    path = os.pathsep.join([str(bin_dir), str(Path(sys.executable).parent), env["PATH"]])
    return {**env, "DATABASE_URL": url, "PATH": path}


def run_replicas(script: str, cwd: Path, env: dict[str, str], n: int
                 ) -> list[subprocess.CompletedProcess[str]]:
    """``n`` bash processes, released at once (each waits for a line on stdin), each
    running ``script``."""
    procs = [subprocess.Popen(["bash", "-c", f"read -r _; set -e\n{script}"], cwd=cwd, env=env,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(n)]
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("\n")
        proc.stdin.flush()
    done = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        done.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return done


def scalar(url: URL, query: str) -> Any:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text(query)).scalar()
    finally:
        engine.dispose()


def starts_app(script: str) -> bool:
    return any(re.search(r"\b(uvicorn|gunicorn)\b", line) for line in script.splitlines())


# -- the guide's structure and its snippets -------------------------------------------------


def test_every_shape_has_commands_compose_and_kubernetes() -> None:
    """Each shape has a tested command, a Compose snippet and a Kubernetes snippet, and
    every marked block is of a known kind (a typo in a marker would skip a block)."""
    for shape in SHAPES:
        kinds = {b.kind for b in blocks(shape)}
        assert {"run", "compose", "kubernetes"} <= kinds, (shape, kinds)
    assert {b.shape for b in blocks()} == set(SHAPES)
    assert {b.kind for b in blocks()} <= {"file", "snippet", "run", "fails", "compose",
                                          "kubernetes"}
    marks = len(re.findall(r"<!-- adopt:", DOC.read_text()))
    assert marks == len(blocks()), "a marker is not followed by a fenced block"


def compose_validator() -> jsonschema.protocols.Validator:
    schema = json.loads((files("check_jsonschema.builtin_schemas.vendor")
                         / "compose-spec.json").read_text())
    validator: jsonschema.protocols.Validator = jsonschema.validators.validator_for(schema)(
        schema)
    return validator


def commands_run(shape: str) -> set[tuple[str, ...]]:
    return {tuple(shlex.split(line)) for b in blocks(shape, "run")
            for line in b.text.splitlines() if line.strip() and not line.startswith("export ")}


@pytest.mark.parametrize("shape", SHAPES)
def test_compose_and_kubernetes_snippets_are_valid_and_start_the_tested_commands(
        shape: str) -> None:
    """The Compose snippets validate against the Compose specification, the Kubernetes ones
    strictly against the API schemas, and each container's command is a tested line."""
    tested = commands_run(shape)
    validator = compose_validator()
    for block in blocks(shape, "compose"):
        data = yaml.safe_load(block.text)
        errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
                  for e in validator.iter_errors(data)]
        assert errors == [], errors
        commands = [tuple(s["command"]) for s in data["services"].values() if "command" in s]
        assert commands and set(commands) <= tested, (commands, tested)
    version = k8s.latest_version()
    for block in blocks(shape, "kubernetes"):
        doc = yaml.safe_load(block.text)
        k8s.validate(doc, version, strict=True)
        containers = doc["spec"]["template"]["spec"]["containers"]
        commands = [tuple(c["command"] + c.get("args", [])) for c in containers]
        assert set(commands) <= tested, (commands, tested)


def test_a_changed_command_is_caught() -> None:
    """The check above fails when a snippet starts something the guide does not test."""
    tested = commands_run("owncli")
    block = blocks("owncli", "compose")[0]
    data = yaml.safe_load(block.text.replace("--migrate-command", "--migration-command"))
    commands = {tuple(s["command"]) for s in data["services"].values()}
    assert not commands <= tested


# -- each shape, carried out ----------------------------------------------------------------


@pytest.fixture
def new_database(backend: str, request: pytest.FixtureRequest, tmp_path: Path
                 ) -> Iterator[Callable[[], URL]]:
    """Makes fresh databases on ``backend``, as many as the test asks for; drops them at
    the end."""
    fresh = contextmanager(make_database)
    with ExitStack() as made:
        yield lambda: made.enter_context(fresh(backend, request, tmp_path))


# Every shape on PostgreSQL; MariaDB once (the guide's steps are the same on both, and the
# core suites cover each backend): together about a minute of `make test`.
CASES = [(shape, "postgresql-server") for shape in SHAPES] + [("prestart", "mysql")]


@pytest.mark.parametrize(("shape", "backend"), CASES)
def test_the_guide_works_on_a_project_of_that_shape(
        shape: str, backend: str, new_database: Callable[[], URL], tmp_path: Path) -> None:
    """Every ``file``, ``snippet``, ``fails`` and ``run`` block of the shape, carried out on
    a copy of tests/projects/adopt_SHAPE (see the module docstring)."""
    project = tmp_path / "project"
    shutil.copytree(PROJECTS / f"adopt_{shape}", project,
                    ignore=shutil.ignore_patterns("__pycache__"))
    for block in blocks(shape, "file"):
        assert block.arg is not None
        (project / block.arg).write_text(block.text)
    for block in blocks(shape, "snippet"):
        assert block.arg is not None
        assert block.text in (project / block.arg).read_text(), f"{block.arg} differs"
    bin_dir = shims(tmp_path / "bin")

    for block in blocks(shape, "fails"):
        url = new_database()
        proc = subprocess.run(["bash", "-c", block.text], cwd=project,
                              env=environment(render(url), bin_dir), capture_output=True,
                              text=True, timeout=120, check=False)
        assert proc.returncode == int(block.arg or 0), proc.stderr
        assert proc.stderr.splitlines()[-1].startswith("herd: error: ")

    runs = blocks(shape, "run")
    assert runs
    for block in runs:
        url = new_database()
        env = environment(render(url), bin_dir)
        for restart in (False, True):
            results = run_replicas(block.text, project, env, 1 if restart else REPLICAS)
            for result in results:
                assert result.returncode == 0, (block.text, result.stdout, result.stderr)
                if starts_app(block.text):
                    assert result.stdout.splitlines()[-1:] == ["app started"], result.stdout
            version = scalar(url, "SELECT version_num FROM alembic_version")
            assert version == HEAD[shape], block.text
            for query, expected in ONCE[shape].items():
                assert scalar(url, query) == expected, (block.text, query)
