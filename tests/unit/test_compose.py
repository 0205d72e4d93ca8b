"""compose.yaml and .ci/Dockerfile, checked statically against the code: settings, CLI, routes, packages.

No Docker is needed; the one test that asks `docker compose` to validate the file skips without it.
"""

from __future__ import annotations

import fnmatch
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import msgspec
import pytest
import yaml

from api.cli import build_parser
from infra.settings import known_variables, load_settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "compose.yaml"
DOCKERFILE = ROOT / ".ci" / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
APP_SERVICES = ("migrations", "api", "worker")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict), "compose.yaml must be a mapping"
    assert isinstance(data.get("services"), dict), "compose.yaml has no services"
    assert data["services"], "compose.yaml has no services"
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]  # type: ignore[no-any-return]


def _environment(service: dict[str, Any]) -> dict[str, Any]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # the KEY=value list form
        return dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    assert isinstance(env, dict)
    return env


def _depends_on(service: dict[str, Any]) -> dict[str, dict[str, Any]]:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return {name: {"condition": "service_started"} for name in deps}
    return {name: (spec or {"condition": "service_started"}) for name, spec in deps.items()}


def _argv(service: dict[str, Any]) -> list[str]:
    def as_list(value: Any) -> list[str]:
        if value is None:
            return []
        return shlex.split(value) if isinstance(value, str) else [str(v) for v in value]

    entrypoint = as_list(service.get("entrypoint"))
    if not entrypoint and _builds_app_image(service):
        entrypoint = _dockerfile_entrypoint()
    return entrypoint + as_list(service.get("command"))


def _builds_app_image(service: dict[str, Any]) -> bool:
    build = service.get("build")
    if isinstance(build, str):
        return (Path(build) / "Dockerfile").resolve() == DOCKERFILE
    if isinstance(build, dict):
        return (ROOT / build.get("context", ".") / build.get("dockerfile", "Dockerfile")).resolve() == DOCKERFILE
    return False


def _dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def _dockerfile_entrypoint() -> list[str]:
    entries = [rest for keyword, rest in _dockerfile_instructions() if keyword == "ENTRYPOINT"]
    assert entries, ".ci/Dockerfile has no ENTRYPOINT"
    value = entries[-1]
    return list(msgspec.json.decode(value)) if value.startswith("[") else shlex.split(value)


def test_every_service_has_an_image_or_a_build(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        assert service.get("image") or service.get("build"), f"service {name} has neither image nor build"


def test_the_app_services_build_from_the_ci_dockerfile(services: dict[str, dict[str, Any]]) -> None:
    assert DOCKERFILE.is_file()
    for name in APP_SERVICES:
        assert name in services, f"compose.yaml has no {name} service"
        assert _builds_app_image(services[name]), f"{name} does not build from .ci/Dockerfile (context .)"


def test_the_app_services_share_one_environment(services: dict[str, dict[str, Any]]) -> None:
    envs = {name: _environment(services[name]) for name in APP_SERVICES}
    first = envs["api"]
    for name, env in envs.items():
        assert env == first, f"{name} environment differs from api's: use the shared x- anchor"
    assert first["LITESKILL_DATABASE_URL"] == "postgresql://liteskill:liteskill@postgres:5432/liteskill"
    assert first["LITESKILL_REDIS_URL"] == "redis://redis:6379/0"
    assert first["LITESKILL_WORKER_EMBEDDED"] == "false"


def test_the_shared_environment_is_an_anchor() -> None:
    text = COMPOSE.read_text()
    anchors = re.findall(r"^x-[\w-]+:\s*&([\w-]+)", text, flags=re.MULTILINE)
    assert anchors, "no top-level x- anchor in compose.yaml"
    assert any(f"*{anchor}" in text for anchor in anchors), "the x- anchor is never referenced"


def test_liteskill_variables_are_known_and_load(services: dict[str, dict[str, Any]]) -> None:
    known = {name for name, _ in known_variables()}
    used = False
    for name, service in services.items():
        env = {k: v for k, v in _environment(service).items() if k.startswith("LITESKILL_")}
        if not env:
            continue
        used = True
        for key, value in env.items():
            assert key in known, f"{name}: {key} is not a setting infra/settings.py knows"
            # Compose rejects booleans in environment maps, and the app only ever sees strings.
            assert isinstance(value, str), f"{name}: quote {key}'s value ({value!r})"
            assert "${" not in value, f"{name}: {key} relies on interpolation; set it literally"
        settings = load_settings(env, dotenv=None)
        assert settings.database.url == env.get("LITESKILL_DATABASE_URL", settings.database.url)
    assert used, "no service sets any LITESKILL_* variable"


def test_depends_on_references_services_and_is_acyclic(services: dict[str, dict[str, Any]]) -> None:
    graph = {name: set(_depends_on(service)) for name, service in services.items()}
    for name, deps in graph.items():
        missing = deps - graph.keys()
        assert not missing, f"{name} depends on unknown services {sorted(missing)}"
        assert name not in deps, f"{name} depends on itself"

    done: set[str] = set()

    def visit(node: str, path: tuple[str, ...]) -> None:
        assert node not in path, "dependency cycle: " + " -> ".join((*path, node))
        if node in done:
            return
        for dep in graph[node]:
            visit(dep, (*path, node))
        done.add(node)

    for node in graph:
        visit(node, ())


def test_startup_order_conditions(services: dict[str, dict[str, Any]]) -> None:
    api = _depends_on(services["api"])
    assert api["migrations"]["condition"] == "service_completed_successfully"
    assert api["redis"]["condition"] == "service_healthy"
    worker = _depends_on(services["worker"])
    assert worker["migrations"]["condition"] == "service_completed_successfully"
    migrations = _depends_on(services["migrations"])
    assert migrations["postgres"]["condition"] == "service_healthy"
    assert _depends_on(services["minio-init"])["minio"]["condition"] == "service_healthy"
    # Conditions on health need a healthcheck on the service waited for.
    for name, service in services.items():
        for dep, spec in _depends_on(service).items():
            if spec.get("condition") == "service_healthy":
                assert services[dep].get("healthcheck"), f"{name} waits for {dep} healthy, which has no healthcheck"


@pytest.mark.parametrize("name", ["postgres", "redis", "minio", "api"])
def test_healthchecks(services: dict[str, dict[str, Any]], name: str) -> None:
    check = services[name].get("healthcheck")
    assert check, f"{name} has no healthcheck"
    assert check.get("test"), f"{name} has a healthcheck without a test"
    assert check.get("disable") is not True
    if isinstance(check["test"], list):
        assert check["test"][0] in ("CMD", "CMD-SHELL"), f"{name}: healthcheck test must start with CMD or CMD-SHELL"
        assert len(check["test"]) > 1


def test_liteskill_commands_parse_with_the_real_cli(services: dict[str, dict[str, Any]]) -> None:
    parser = build_parser()
    seen: set[str] = set()
    for name, service in services.items():
        argv = _argv(service)
        if not argv or Path(argv[0]).name != "liteskill":
            continue
        try:
            args = parser.parse_args(argv[1:])
        except SystemExit:
            pytest.fail(f"{name}: `{shlex.join(argv)}` is not a valid liteskill command")
        seen.add(args.command)
    assert {"serve", "worker", "migrate"} <= seen, f"compose runs only {sorted(seen)}"
    assert Path(_argv(services["migrations"])[1]).name == "migrate"


def test_api_serves_where_its_healthcheck_and_port_point(services: dict[str, dict[str, Any]]) -> None:
    from api.app import create_app

    api = services["api"]
    args = build_parser().parse_args(_argv(api)[1:])
    assert args.command == "serve"
    assert args.host == "0.0.0.0", "inside a container the API must bind every interface"
    assert args.workers == 2
    probe = " ".join(api["healthcheck"]["test"])
    url = re.search(r"https?://[^'\"\s]+", probe)
    assert url, "the api healthcheck does not request a URL"
    parts = urlsplit(url.group(0))
    assert parts.port == args.port
    assert any(str(p).split(":")[-1] == str(args.port) for p in api.get("ports", [])), "API port not published"

    settings = load_settings(
        {**_environment(api), "LITESKILL_DATABASE_URL": "postgresql://u@h/db", "LITESKILL_REDIS_URL": "redis://h"},
        dotenv=None,
    )
    paths = {route.path for route in create_app(settings).routes}
    assert parts.path == "/api/v1/ready"
    assert parts.path in paths, f"the app has no route {parts.path}"


def test_named_volumes_are_declared(compose: dict[str, Any], services: dict[str, dict[str, Any]]) -> None:
    declared = set(compose.get("volumes") or {})
    for name, service in services.items():
        for volume in service.get("volumes") or []:
            source = volume.split(":", 1)[0] if isinstance(volume, str) else volume.get("source", "")
            if source and not source.startswith((".", "/", "~")):
                assert source in declared, f"{name} uses undeclared volume {source}"
    for name in ("postgres", "minio"):
        assert services[name].get("volumes"), f"{name} keeps its data in the container: add a named volume"


def test_minio_init_creates_the_bucket(services: dict[str, dict[str, Any]]) -> None:
    init = services["minio-init"]
    assert "minio/mc" in init["image"]
    script = " ".join(_argv(init))
    assert re.search(r"mc mb\b.*\blocal/liteskill\b", script), "minio-init does not create the liteskill bucket"
    assert services["minio"]["command"][:2] == ["server", "/data"]


def test_dockerfile_copies_every_package() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]
    assert packages
    copied: set[str] = set()
    for keyword, rest in _dockerfile_instructions():
        if keyword != "COPY":
            continue
        parts = [p for p in shlex.split(rest) if not p.startswith("--")]
        copied.update(p.rstrip("/").removeprefix("./") for p in parts[:-1])
    for package in packages:
        assert package in copied, f".ci/Dockerfile does not COPY {package}/"
    # Hatchling needs the readme to build the project; uv needs the lock for --frozen.
    assert {"pyproject.toml", "uv.lock", "README.md"} <= copied
    ignored = [line.strip() for line in DOCKERIGNORE.read_text().splitlines() if line.strip()]
    for source in copied:
        assert (ROOT / source).exists(), f"COPY {source}: no such path"
        assert not any(fnmatch.fnmatch(source, pattern) for pattern in ignored), f"{source} is .dockerignored"


def test_dockerfile_shape() -> None:
    instructions = _dockerfile_instructions()
    keywords = [k for k, _ in instructions]
    assert instructions[0] == ("FROM", "python:3.11-slim")
    assert _dockerfile_entrypoint() == ["liteskill"]
    users = [rest for k, rest in instructions if k == "USER"]
    assert users, "the image must run as a non-root user"
    assert users[-1] not in ("root", "0"), "the image must run as a non-root user"
    syncs = [i for i, (k, rest) in enumerate(instructions) if k == "RUN" and "uv sync" in rest]
    assert len(syncs) == 2
    assert all("--frozen" in instructions[i][1] for i in syncs)
    assert "--no-install-project" in instructions[syncs[0]][1]
    first_code_copy = next(i for i, (k, rest) in enumerate(instructions) if k == "COPY" and rest.startswith("api"))
    assert syncs[0] < first_code_copy < syncs[1], "install dependencies before copying code (layer cache)"
    assert keywords.index("USER") > syncs[1]


def test_dockerignore_excludes_local_state() -> None:
    ignored = {line.strip() for line in DOCKERIGNORE.read_text().splitlines()}
    assert {".venv", ".venv-tools", "node_modules", ".git", ".liteskill", "bench/results"} <= ignored


def _docker_compose_available() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


@pytest.mark.skipif(not _docker_compose_available(), reason="docker compose is not installed")
def test_docker_compose_accepts_the_file() -> None:
    result = subprocess.run(
        ["docker", "compose", "-f", str(COMPOSE), "config", "-q"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
