"""The reference deployment (examples/magflow): the incident's five services.

* Offline: docker-compose.yml against the Compose specification's JSON schema (vendored by
  check-jsonschema) and every Kubernetes manifest against the Kubernetes API schemas
  (bundled by kubernetes-validate); every Python service starts through ``herd run``,
  worker and beat with ``--mode wait``, and every health check points at an endpoint the
  FastAPI app really defines or at ``herd check``.
* For real, as processes (no Docker): three app replicas, a worker and beat released at the
  same moment against a fresh PostgreSQL database and Redis (Celery's filesystem broker
  when no Redis answers, except where Redis is required: CI=true, or redis in
  HERD_REQUIRE_BACKENDS as .ci/run sets it). Exactly one process
  migrates, all become healthy, the worker runs the app's and beat's tasks; after a
  restart of everything nothing migrates.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
import sys
import time
import uuid
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from functools import partial
from importlib.resources import files
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import sqlalchemy as sa
import yaml
from kubernetes_validate import utils as k8s
from sqlalchemy.engine import URL

import alembic_herd
from alembic_herd._durations import to_seconds
from conftest import REQUIRED, make_database, render

with warnings.catch_warnings():  # Starlette 1.x prefers httpx2 for its test client
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from starlette.testclient import TestClient

ROOT = Path(__file__).resolve().parent.parent
MAGFLOW = ROOT / "examples" / "magflow"
COMPOSE = MAGFLOW / "docker-compose.yml"
DOCKERFILE = MAGFLOW / "Dockerfile"
K8S = sorted((MAGFLOW / "k8s").glob("*.yaml"))
INI = str(MAGFLOW / "alembic.ini")
REVISIONS = ["0001_users", "0002_catalogue", "0003_seed_catalogue", "0004_heartbeats",
             "0005_concurrent_indexes", "0006_orders_status_check"]
HEAD = REVISIONS[-1]
CONTRACT = ["0006_orders_status_check"]  # herd_phase = "contract"; the others are expand
PYTHON_SERVICES = {"app", "worker", "beat"}
PASSWORD = "st4ck-s3cret-pw"
# Redis for the stack test; when nothing answers there, Celery's filesystem broker (which
# needs no server) is used instead - except where Redis is required: with CI=true, or with
# redis in HERD_REQUIRE_BACKENDS (as .ci/run sets it).
REDIS_URL = os.environ.get("HERD_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
REDIS_REQUIRED = "redis" in REQUIRED or os.environ.get("CI") == "true"

if str(MAGFLOW) not in sys.path:
    sys.path.insert(0, str(MAGFLOW))

import localstack  # noqa: E402 - examples/magflow, put on sys.path just above
from localstack import Service  # noqa: E402

# -- helpers: the files -------------------------------------------------------------------


def load_yaml_documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def dockerfile_instruction(name: str) -> list[str]:
    """The exec-form (JSON) value of the Dockerfile's last ENTRYPOINT or CMD."""
    values = [line.split(None, 1)[1] for line in DOCKERFILE.read_text().splitlines()
              if line.startswith(f"{name} ")]
    assert values, f"Dockerfile has no {name}"
    parsed = json.loads(values[-1])
    assert isinstance(parsed, list), f"{name} must use the exec form (JSON list)"
    return [str(p) for p in parsed]


def compose_argv(service: dict[str, Any]) -> list[str]:
    """What a compose service runs: its entrypoint (else the image's) + its command."""
    entrypoint = service.get("entrypoint", dockerfile_instruction("ENTRYPOINT"))
    command = service.get("command", dockerfile_instruction("CMD"))
    return [*_argv(entrypoint), *_argv(command)]


def k8s_argv(container: dict[str, Any]) -> list[str]:
    """What a container runs: command (else the image's ENTRYPOINT) + args (else the
    image's CMD, which Kubernetes drops when command is set)."""
    if "command" in container:
        return [*container["command"], *container.get("args", [])]
    return [*dockerfile_instruction("ENTRYPOINT"),
            *container.get("args", dockerfile_instruction("CMD"))]


def _argv(value: str | list[str]) -> list[str]:
    return shlex.split(value) if isinstance(value, str) else list(value)


def after_dashes(argv: list[str]) -> list[str]:
    return argv[argv.index("--") + 1:]


def option(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv else None


def k8s_documents() -> list[tuple[Path, dict[str, Any]]]:
    return [(path, doc) for path in K8S for doc in load_yaml_documents(path)]


def magflow_containers() -> list[tuple[str, dict[str, Any]]]:
    """(deployment name, container) of every container that runs the MagFlow image."""
    found = []
    for _, doc in k8s_documents():
        if doc["kind"] in ("Deployment", "StatefulSet"):
            for container in doc["spec"]["template"]["spec"]["containers"]:
                if "magflow:" in container["image"]:
                    found.append((doc["metadata"]["name"], container))
    return found


def contract_job() -> dict[str, Any]:
    """The Job of the contract step (k8s/migrate-contract.yaml)."""
    jobs = [doc for _, doc in k8s_documents() if doc["kind"] == "Job"]
    assert [job["metadata"]["name"] for job in jobs] == ["magflow-migrate-contract"]
    return jobs[0]


def container_env(container: dict[str, Any]) -> dict[str, str]:
    """What a container's environment holds: its ConfigMap entries, then its own env."""
    config = next(doc for _, doc in k8s_documents() if doc["kind"] == "ConfigMap")
    env = {k: str(v) for k, v in config["data"].items()
           if any(ref.get("configMapRef", {}).get("name") == config["metadata"]["name"]
                  for ref in container.get("envFrom", []))}
    env.update({e["name"]: e["value"] for e in container.get("env", []) if "value" in e})
    return env


def app_statuses() -> Callable[[str], int]:
    """GET a path on the FastAPI app (no server, no lifespan) and return the status code.

    The app's database URL points at a closed port, so /ready answers 503 at once; a path
    the app does not define answers 404.
    """
    from magflow.api import create_app
    from magflow.settings import Settings

    settings = Settings(database_url="postgresql+psycopg://magflow:x@127.0.0.1:9/magflow",
                        broker_url="redis://127.0.0.1:9/0", alembic_config=INI)
    client = TestClient(create_app(settings))
    return lambda path: client.get(path).status_code


# -- offline validation -------------------------------------------------------------------


def compose_validator() -> jsonschema.protocols.Validator:
    schema = json.loads((files("check_jsonschema.builtin_schemas.vendor")
                         / "compose-spec.json").read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    validator: jsonschema.protocols.Validator = cls(schema)
    return validator


def test_compose_file_follows_the_compose_specification() -> None:
    """docker-compose.yml validates against the Compose specification's JSON schema, and
    the same validator rejects a broken copy (so the check can fail)."""
    validator = compose_validator()
    data = compose()
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
              for e in validator.iter_errors(data)]
    assert errors == []
    assert set(data["services"]) == PYTHON_SERVICES | {"db", "redis"}

    broken = copy.deepcopy(data)
    broken["services"]["worker"]["depends_on"]["db"]["condition"] = "service_happy"
    broken["services"]["app"]["healthcheck"]["tset"] = ["CMD", "true"]
    assert len(list(validator.iter_errors(broken))) >= 2


def test_kubernetes_manifests_follow_the_kubernetes_api_schemas() -> None:
    """Every document in k8s/*.yaml validates (strict: no unknown fields) against the newest
    Kubernetes API schemas kubernetes-validate bundles, and a broken copy is rejected."""
    version = k8s.latest_version()
    kinds: Counter[str] = Counter()
    for path, doc in k8s_documents():
        try:
            k8s.validate(doc, version, strict=True)
        except k8s.ValidationError as exc:
            pytest.fail(f"{path.name}: {doc['kind']} {doc['metadata']['name']}: "
                        f"{'.'.join(map(str, exc.path))}: {exc.message}")
        kinds[doc["kind"]] += 1
    assert kinds["Deployment"] >= 3 and kinds["Service"] >= 1
    assert {"ConfigMap", "Secret", "StatefulSet", "PodDisruptionBudget", "Job"} <= set(kinds)

    app = next(doc for _, doc in k8s_documents() if doc["metadata"]["name"] == "magflow-app")
    broken = copy.deepcopy(app)
    broken["spec"]["replicas"] = "three"
    broken["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(k8s.ValidationError):
        k8s.validate(broken, version, strict=True)
    broken_job = copy.deepcopy(contract_job())
    broken_job["spec"]["template"]["spec"]["restartPolicy"] = "Sometimes"
    broken_job["spec"]["template"]["spec"]["containers"][0]["comand"] = ["herd"]
    with pytest.raises(k8s.ValidationError):
        k8s.validate(broken_job, version, strict=True)


def test_dockerfile_builds_on_python_slim_and_enters_through_herd_run() -> None:
    """The image is python:3.11-slim, installs alembic-herd and MagFlow, runs as a non-root
    user, and its ENTRYPOINT is `herd run` with uvicorn as the default command."""
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM python:3\.11-slim$", text, re.M)
    assert re.search(r"^RUN pip install \"/src/alembic-herd\[postgresql,starlette,celery\]\"",
                     text, re.M)
    assert re.search(r"^RUN pip install /app$", text, re.M)
    assert re.search(r"^USER magflow$", text, re.M)
    assert dockerfile_instruction("ENTRYPOINT") == ["herd", "run"]
    assert after_dashes(dockerfile_instruction("CMD"))[0] == "uvicorn"


def test_every_python_service_starts_through_herd_run() -> None:
    """In compose and in Kubernetes, app starts as `herd run -- uvicorn` (migrate or wait),
    worker and beat as `herd run --mode wait -- celery worker|beat` (never migrate)."""
    services = compose()["services"]
    containers = {name: c for name, c in magflow_containers()}
    assert set(containers) == {"magflow-app", "magflow-worker", "magflow-beat"}
    runs = {f"compose {name}": compose_argv(services[name]) for name in PYTHON_SERVICES}
    runs.update({f"k8s {name}": k8s_argv(c) for name, c in containers.items()})
    for where, argv in runs.items():
        assert argv[:2] == ["herd", "run"], f"{where} does not start through herd run: {argv}"
        herd_options, command = argv[2:argv.index("--")], after_dashes(argv)
        role = where.split()[-1].removeprefix("magflow-")
        if role == "app":
            assert option(herd_options, "--mode") in (None, "auto", "migrate"), where
            assert command[:3] == ["uvicorn", "--factory", "magflow.api:create_app"], where
        else:
            assert option(herd_options, "--mode") == "wait", f"{where} may migrate: {argv}"
            assert command[:4] == ["celery", "-A", "magflow.worker", role], where

    beat = next(doc for _, doc in k8s_documents() if doc["metadata"]["name"] == "magflow-beat")
    assert beat["spec"]["replicas"] == 1 and beat["spec"]["strategy"]["type"] == "Recreate"
    app = next(doc for _, doc in k8s_documents() if doc["metadata"]["name"] == "magflow-app")
    assert app["spec"]["replicas"] == 3
    assert services["app"]["deploy"]["replicas"] == 3


def test_rolling_deploys_expand_in_the_deployments_and_contract_in_a_job() -> None:
    """Every MagFlow Deployment's container runs with HERD_EXPAND_ONLY=true (app: apply,
    worker and beat: wait for, only the expand revisions), the shared ConfigMap sets neither
    that nor HERD_ALLOW_AHEAD, and the contract Job runs a plain `herd migrate` of the same
    image with the same config and secret, never restarting in place. The revision files
    declare their phases (0006 contract, the others expand) and `herd lint` finds nothing."""
    config = next(doc for _, doc in k8s_documents() if doc["kind"] == "ConfigMap")
    assert not {"HERD_EXPAND_ONLY", "HERD_ALLOW_AHEAD"} & set(config["data"])
    images = set()
    for name, container in magflow_containers():
        assert container_env(container).get("HERD_EXPAND_ONLY") == "true", name
        images.add(container["image"])
    job = contract_job()
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    [container] = pod["containers"]
    assert {container["image"]} == images
    assert k8s_argv(container) == ["herd", "migrate"]
    assert "HERD_EXPAND_ONLY" not in container_env(container)
    assert [ref.get("configMapRef", ref.get("secretRef")) for ref in container["envFrom"]] == [
        {"name": "magflow-config"}, {"name": "magflow-db"}]

    from alembic.config import Config
    from alembic.script import ScriptDirectory
    scripts = ScriptDirectory.from_config(Config(INI))
    phases = {r: alembic_herd.phase_of(scripts.get_revision(r)) for r in REVISIONS}
    assert [r for r, phase in phases.items() if phase == "contract"] == CONTRACT
    assert alembic_herd.lint(INI, dialect="postgresql").exit_code == 0


def test_health_checks_point_at_real_endpoints_or_herd_check() -> None:
    """Every compose healthcheck and Kubernetes probe of a MagFlow container calls a path the
    FastAPI app defines on the port uvicorn listens on, `herd check`, or a Celery ping of
    the worker's own app; readiness is /api/v1/health/ready everywhere."""
    status = app_statuses()
    assert status("/api/v1/health/live") == 200
    assert status("/api/v1/health/ready") == 503  # the database is unreachable
    assert status("/api/v1/health/nowhere") == 404  # so a wrong path would show

    def check_command(where: str, words: list[str], timeout: float) -> None:
        text = " ".join(words)
        if "herd check" in text:
            # herd must give up on an unanswering database before the orchestrator kills
            # the check: its connect timeout, plus ~2 s to start the interpreter, plus a
            # chained Celery ping's own timeout, must fit in the check's timeout
            found = re.search(r"herd check --connect-timeout (\S+)", text)
            assert found, f"{where}: 'herd check' without --connect-timeout (10s by default)"
            ping = re.search(r"inspect ping .*--timeout (\d+)", text)
            needed = to_seconds(found.group(1)) + 2 + (int(ping.group(1)) if ping else 0)
            assert needed <= timeout, f"{where}: needs {needed}s, the check allows {timeout}s"
            return
        assert re.search(r"celery -A magflow\.worker inspect ping --destination "
                         r"celery@\$\$?HOSTNAME", text), f"{where}: unknown check {text!r}"

    services = compose()["services"]
    app_port = option(after_dashes(compose_argv(services["app"])), "--port")
    for name in PYTHON_SERVICES:
        test = services[name]["healthcheck"]["test"]
        words = test[1:] if test[0] in ("CMD", "CMD-SHELL") else test
        urls = re.findall(r"http://127\.0\.0\.1:(\d+)(/[\w/.-]*)", " ".join(words))
        if name == "app":
            assert urls == [(app_port, "/api/v1/health/ready")], test
        else:  # compose's default check timeout is 30s
            check_command(f"compose {name}", words,
                          to_seconds(services[name]["healthcheck"].get("timeout", "30s")))
    for svc in services.values():
        for dependency, condition in svc.get("depends_on", {}).items():
            if dependency in ("db", "redis"):
                assert condition["condition"] == "service_healthy"

    for name, container in magflow_containers():
        port = option(after_dashes(k8s_argv(container)), "--port")
        named_ports = {p["name"]: str(p["containerPort"]) for p in container.get("ports", [])}
        probes = {kind: container[kind] for kind in
                  ("startupProbe", "livenessProbe", "readinessProbe") if kind in container}
        for kind, probe in probes.items():
            if "httpGet" in probe:
                get = probe["httpGet"]
                assert status(get["path"]) in (200, 503), f"{name} {kind}: {get['path']}"
                assert named_ports.get(get["port"], str(get["port"])) == port, (name, kind)
            else:
                # Kubernetes' default timeoutSeconds is 1
                check_command(f"{name} {kind}", probe["exec"]["command"],
                              probe.get("timeoutSeconds", 1))
        if name == "magflow-app":
            assert probes["readinessProbe"]["httpGet"]["path"] == "/api/v1/health/ready"
            assert probes["livenessProbe"]["httpGet"]["path"] == "/api/v1/health/live"
            # herd may migrate for minutes before uvicorn listens: liveness must wait
            startup = probes["startupProbe"]
            assert startup["periodSeconds"] * startup["failureThreshold"] >= 300


# -- a rolling deploy's two steps, for real ------------------------------------------------


def run_container(argv: list[str], env: dict[str, str], url: URL) -> Any:
    """``argv`` as the container would run it (``herd`` is this environment's console
    script), in the image's WORKDIR, with the container's environment and DATABASE_URL."""
    import subprocess
    base = {k: v for k, v in os.environ.items() if not k.startswith("HERD_") or
            k.startswith("HERD_TEST_")}
    herd = str(Path(sys.executable).with_name("herd"))
    return subprocess.run([herd if argv[0] == "herd" else argv[0], *argv[1:]], cwd=MAGFLOW,
                          env={**base, **env, "DATABASE_URL": render(url),
                               "ALEMBIC_CONFIG": INI},
                          capture_output=True, text=True, timeout=120, check=False)


def test_rolling_deploy_steps_of_the_manifests_for_real(pg: URL) -> None:
    """On a fresh PostgreSQL database, the app Deployment's container (its herd options and
    environment, uvicorn replaced by a one-line program) applies 0001-0005 and stops before
    contract 0006; the app's readiness endpoint is 200 there, and the worker's startup probe
    (`herd check` with the worker's environment) exits 0. Controls: without
    HERD_EXPAND_ONLY both say not current. Then the contract Job's command applies 0006."""
    containers = dict(magflow_containers())
    app_argv = k8s_argv(containers["magflow-app"])
    dashes = app_argv.index("--")
    up = run_container([*app_argv[:dashes + 1], sys.executable, "-c", "print('app up')"],
                       container_env(containers["magflow-app"]), pg)
    assert (up.returncode, up.stdout) == (0, "app up\n"), up.stderr
    status = alembic_herd.status(INI, url=render(pg), expand_only=True)
    assert status.current_heads == (REVISIONS[-2],) and status.left == tuple(CONTRACT)

    from magflow.api import create_app
    from magflow.settings import Settings

    def ready(expand_only: bool) -> tuple[int, dict[str, Any]]:
        settings = Settings(database_url=render(pg), broker_url="redis://127.0.0.1:9/0",
                            alembic_config=INI, expand_only=expand_only)
        got = TestClient(create_app(settings)).get("/api/v1/health/ready")
        return got.status_code, got.json()

    code, body = ready(expand_only=True)
    assert (code, body["pending"], body["left"]) == (200, 0, CONTRACT), body
    assert ready(expand_only=False)[0] == 503  # the control: 0006 would count as pending

    worker = containers["magflow-worker"]
    probe, worker_env = worker["startupProbe"]["exec"]["command"], container_env(worker)
    assert run_container(probe, worker_env, pg).returncode == 0
    without = {k: v for k, v in worker_env.items() if k != "HERD_EXPAND_ONLY"}
    assert run_container(probe, without, pg).returncode == 1  # the control

    job = contract_job()["spec"]["template"]["spec"]["containers"][0]
    done = run_container(k8s_argv(job), container_env(job), pg)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"migrated 1 revision(s) to {HEAD}"), done.stdout
    assert scalar(pg, "SELECT convalidated FROM pg_constraint WHERE conname = 'ck_orders_status'")
    assert ready(expand_only=False)[0] == 200


# -- the incident's tests, for real -------------------------------------------------------


@pytest.fixture(params=["postgresql", "postgresql-server"])
def stack_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[URL]:
    """A fresh database on the embedded PostgreSQL (with a password in its URL, which the
    server's trust authentication accepts) or on HERD_TEST_POSTGRES_URL's server."""
    for url in make_database(request.param, request, tmp_path):
        yield url.set(password=PASSWORD) if request.param == "postgresql" else url


def wait_for(what: str, check: Callable[[], Any], services: list[Service], *,
             timeout: float = 90.0, interval: float = 0.25) -> Any:
    """Poll ``check`` until it returns something truthy; fail (with the logs) when a
    service exits or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        exited = {s.name: code for s in services
                  if s.proc is not None and (code := s.proc.poll()) is not None}
        if exited or time.monotonic() > deadline:
            reason = (", ".join(f"{name} exited {code}" for name, code in exited.items())
                      if exited else f"timed out after {timeout:.0f} s")
            pytest.fail(f"waiting for {what}: {reason}\n{logs(services)}")
        time.sleep(interval)


def logs(services: list[Service]) -> str:
    return "\n".join(f"--- {s.name} ---\n{s.text()[-2500:]}" for s in services)


def ready_json(svc: Service) -> dict[str, Any] | None:
    got = localstack.http_json(svc.url + localstack.READY_PATH)
    return got[1] if got is not None and got[0] == 200 else None


def scalar(url: URL, sql: str, **params: Any) -> Any:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text(sql), params).scalar()
    finally:
        engine.dispose()


def place_order(app: Service, services: list[Service], url: URL) -> dict[str, Any]:
    """A user and an order through the app's API; returns the order once a worker
    processed it (the task ran: it wrote the order's status)."""
    created = localstack.http_json(app.url + "/api/v1/users", method="POST", body={
        "email": f"buyer-{uuid.uuid4().hex[:8]}@example.com", "name": "Buyer"})
    assert created is not None and created[0] == 201, created
    placed = localstack.http_json(app.url + "/api/v1/orders", method="POST", body={
        "user_id": created[1]["id"], "sku": "MF-RICE-1KG", "quantity": 3})
    assert placed is not None and placed[0] == 202 and placed[1]["queued"] is True, placed
    order_id = placed[1]["id"]

    def processed() -> dict[str, Any] | None:
        got = localstack.http_json(f"{app.url}/api/v1/orders/{order_id}")
        return got[1] if got and got[0] == 200 and got[1]["status"] != "pending" else None

    order: dict[str, Any] = wait_for(f"the worker to process order {order_id}", processed,
                                     services, timeout=60)
    return order


def make_services(logs_dir: Path, ports: list[int], schedule: Path) -> list[Service]:
    logs_dir.mkdir(parents=True, exist_ok=True)
    apps = [Service(f"app-{i}", localstack.app_command(port), logs_dir / f"app-{i}.log",
                    port=port) for i, port in enumerate(ports, 1)]
    return [*apps, Service("worker", localstack.worker_command("worker"),
                           logs_dir / "worker.log"),
            Service("beat", localstack.beat_command(schedule), logs_dir / "beat.log")]


def start_and_check_healthy(services: list[Service], env: dict[str, str],
                            url: URL) -> dict[str, str]:
    """Release every service at once, wait until each app replica is ready, return herd's
    summary line per service."""
    localstack.launch_together(services, env)
    apps = [s for s in services if s.port is not None]
    for app in apps:
        body = wait_for(f"{app.name} to be ready", partial(ready_json, app), services)
        assert body["status"] == "ready"
        assert body["current"] == body["expected"] == [HEAD]
        assert body["pending"] == 0
        got = localstack.http_json(app.url + localstack.READY_PATH)
        assert got is not None
        assert PASSWORD not in json.dumps(got[1]) and "postgresql" not in json.dumps(got[1])
    outcomes = {s.name: wait_for(f"herd to hand over in {s.name}", s.herd_outcome, services)
                for s in services}
    for app in apps:  # the process herd exec'd is the one started: same pid, now uvicorn
        assert app.proc is not None
        assert f"Started server process [{app.proc.pid}]" in app.text(), app.text()
    return outcomes


def applied_history(url: URL) -> list[tuple[int | None, str, str]]:
    return [(a.id, a.revision, a.status)
            for a in alembic_herd.history(INI, url=render(url), limit=100)]


def heartbeats_from_beat(url: URL) -> int:
    return int(scalar(url, "SELECT count(*) FROM app.heartbeats WHERE source = 'beat'"))


@pytest.mark.timeout(300)
def test_the_incident_stack_migrates_once_starts_healthy_and_restarts_without_migrating(
        stack_db: URL, tmp_path: Path) -> None:
    """Three app replicas, a worker and beat started at the same moment: exactly one app
    replica migrates (each revision applied once), every replica becomes ready at the
    scripts' head, the worker runs the app's and beat's tasks; after SIGTERM to all and a
    restart together, nobody migrates and everything is healthy again."""
    url = stack_db
    try:
        broker = localstack.choose_broker(tmp_path, redis_url=REDIS_URL,
                                          require_redis=REDIS_REQUIRED)
    except RuntimeError as exc:
        pytest.fail(f"{exc} (CI=true or redis in HERD_REQUIRE_BACKENDS)")
    env = localstack.service_env(render(url), broker, beat_interval=1.0,
                                 queue=f"magflow-test-{uuid.uuid4().hex[:8]}")
    ports = [localstack.free_port() for _ in range(3)]
    schedule = tmp_path / "beat-schedule"
    first = make_services(tmp_path / "logs-1", ports, schedule)
    second = make_services(tmp_path / "logs-2", ports, schedule)
    try:
        # -- a fresh start: `docker compose down -v && docker compose up` ---------------
        outcomes = start_and_check_healthy(first, env, url)
        migrated = [name for name, line in outcomes.items() if line.startswith("migrated")]
        assert len(migrated) == 1, outcomes
        assert migrated[0].startswith("app-"), outcomes
        assert outcomes[migrated[0]].startswith(f"migrated {len(REVISIONS)} revision(s)")
        for name, line in outcomes.items():
            if name not in migrated:
                assert line.startswith(("waited", "database already current")), (name, line)
        leaders = [s.name for s in first if "this replica migrates" in s.text()]
        assert leaders == migrated, logs(first)

        history = applied_history(url)
        assert Counter(rev for _, rev, _ in history) == Counter(REVISIONS), history
        assert {status for _, _, status in history} == {"applied"}
        # the data migration ran once (a second run would have doubled the catalogue)
        assert scalar(url, "SELECT count(*) FROM app.products") == 5

        order = place_order(first[1], first, url)  # through a replica that did not lead
        assert order["status"] == "confirmed"
        assert order["processed_by"].startswith("worker@")
        beats = wait_for("beat to schedule a heartbeat that the worker runs",
                         lambda: heartbeats_from_beat(url), first, timeout=60)
        assert "Sending due task heartbeat" in first[-1].text()
        scheme = broker.url.split(":", 1)[0]
        assert f"transport:   {scheme}://" in first[-2].text()  # the worker used that broker

        # -- restart app, worker and beat: `docker compose restart` -------------------
        localstack.stop(first)
        for svc in first:
            assert not svc.killed, f"{svc.name} ignored SIGTERM:\n{svc.text()[-2000:]}"
        stopped_at = heartbeats_from_beat(url)
        outcomes = start_and_check_healthy(second, env, url)
        assert all(line.startswith("database already current") for line in
                   outcomes.values()), outcomes
        assert not any("this replica migrates" in s.text() or "taking lock" in s.text()
                       for s in second), logs(second)
        assert applied_history(url) == history

        order = place_order(second[0], second, url)
        assert order["status"] == "confirmed"
        wait_for("beat to schedule again after the restart",
                 lambda: heartbeats_from_beat(url) > stopped_at, second, timeout=60)
        assert beats >= 1
    finally:
        localstack.stop(first + second, timeout=20)
