"""docker/Dockerfile (the gateway) and docker/Dockerfile.mock (the mock hospital)."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from bridge.settings import load_settings
from tests.deploy.support import DOCKER, ROOT, Dockerfile, parse_dockerfile, unknown_options

DOCKERFILES = ["Dockerfile", "Dockerfile.mock"]


def _argv(dockerfile: Dockerfile) -> list[str]:
    """ENTRYPOINT + CMD of the last stage, both in exec (JSON) form."""
    final = dockerfile.stages()[-1]
    entrypoint = [i for i in final if i.keyword == "ENTRYPOINT"]
    cmd = [i for i in final if i.keyword == "CMD"]
    assert len(entrypoint) == 1 and len(cmd) == 1
    return [*json.loads(entrypoint[0].value), *json.loads(cmd[0].value)]


def _user(dockerfile: Dockerfile) -> str:
    users = [i for i in dockerfile.stages()[-1] if i.keyword == "USER"]
    assert users, f"{dockerfile.path}: the runtime stage has no USER"
    return users[-1].value


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dockerfile_is_multi_stage_with_wheels_built_first(name: str) -> None:
    dockerfile = parse_dockerfile(DOCKER / name)
    stages = dockerfile.stages()
    assert len(stages) == 2
    assert stages[0][0].value.endswith(" AS wheels")
    assert any("pip wheel --wheel-dir /wheels" in i.value for i in stages[0])
    installs = [i.value for i in stages[1] if i.keyword == "RUN" and "pip install" in i.value]
    assert len(installs) == 1
    # The wheels come in by a bind mount and are used alone: not a layer, no download.
    assert "--mount=type=bind,from=wheels" in installs[0]
    assert "--no-index --find-links /wheels" in installs[0]


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dockerfile_runs_as_numeric_non_root_user(name: str) -> None:
    user = _user(parse_dockerfile(DOCKER / name))
    uid, _, gid = user.partition(":")
    # Numeric, so Kubernetes can check runAsNonRoot without reading /etc/passwd.
    assert uid.isdigit() and int(uid) > 0, user
    assert gid.isdigit() and int(gid) > 0, user


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dockerfile_base_images_are_pinned(name: str) -> None:
    dockerfile = parse_dockerfile(DOCKER / name)
    args = dict(i.value.split("=", 1) for i in dockerfile.instructions[:1] if i.keyword == "ARG")
    for stage in dockerfile.stages():
        image = stage[0].value.split()[0]
        image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image)
        repository, _, tag = image.partition(":")
        assert repository == "python", image
        # A Python minor version and a Debian release: no `latest`, no moving major.
        assert re.fullmatch(r"3\.1[1-9]-slim-[a-z]+", tag), image


def test_dockerfile_mock_uses_python_311() -> None:
    dockerfile = parse_dockerfile(DOCKER / "Dockerfile.mock")
    assert dockerfile.instructions[0].value.startswith("PYTHON_IMAGE=python:3.11-")
    install = next(i.value for i in dockerfile.all("RUN") if "pip install" in i.value)
    assert '"bridge[mock]"' in install


@pytest.mark.parametrize(
    ("name", "path"), [("Dockerfile", "/healthz"), ("Dockerfile.mock", "/_mock/info")]
)
def test_dockerfile_healthcheck_asks_the_health_endpoint(name: str, path: str) -> None:
    dockerfile = parse_dockerfile(DOCKER / name)
    (check,) = dockerfile.all("HEALTHCHECK")
    command = json.loads(check.value.split(" CMD ", 1)[1])
    assert command == ["python", "/usr/local/bin/bridge-healthcheck", path]
    assert any(
        i.value == "docker/healthcheck.py /usr/local/bin/bridge-healthcheck"
        for i in dockerfile.all("COPY")
    )


def test_dockerfile_gateway_command_uses_real_serve_options(
    gateway_dockerfile: Dockerfile,
) -> None:
    argv = _argv(gateway_dockerfile)
    assert argv[:2] == ["bridge", "serve"]
    assert unknown_options(argv[2:], "serve") == []
    # The config file it names is the one the image copies in.
    config = argv[argv.index("--config") + 1]
    assert f"COPY docker/gateway.yaml {config}" in [
        f"COPY {i.value}" for i in gateway_dockerfile.all("COPY")
    ]


def test_dockerfile_mock_command_uses_real_mock_options_and_all_interfaces(
    mock_dockerfile: Dockerfile,
) -> None:
    argv = _argv(mock_dockerfile)
    assert argv[:2] == ["bridge", "mock"]
    assert unknown_options(argv[2:], "mock") == []
    assert argv[argv.index("--host") + 1] == "0.0.0.0"
    port = argv[argv.index("--port") + 1]
    assert f"EXPOSE {port}" in [f"EXPOSE {i.value}" for i in mock_dockerfile.all("EXPOSE")]
    assert f"HEALTH_PORT={port}" in " ".join(i.value for i in mock_dockerfile.all("ENV"))


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dockerfile_bakes_in_no_secret(name: str) -> None:
    dockerfile = parse_dockerfile(DOCKER / name)
    for instruction in dockerfile.all("ENV") + dockerfile.all("ARG"):
        assert not re.search(r"PASSWORD|SECRET|TOKEN|PAGING_KEY|USERNAME", instruction.value), (
            f"{name}:{instruction.line}: {instruction.keyword} {instruction.value}"
        )


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dockerfile_copies_only_what_its_dockerignore_lets_in(name: str) -> None:
    ignore = (DOCKER / f"{name}.dockerignore").read_text(encoding="utf-8").splitlines()
    allowed = {line[1:] for line in ignore if line.startswith("!")}
    sources = [
        part
        for i in parse_dockerfile(DOCKER / name).all("COPY")
        if not i.value.startswith("--from")
        for part in i.value.split()[:-1]
    ]
    for source in sources:
        assert (ROOT / source).exists(), source
        assert source.rstrip("/") in allowed or source.split("/")[0] in allowed, source


def test_dockerfile_default_config_loads(clean_environment: pytest.MonkeyPatch) -> None:
    settings = load_settings(DOCKER / "gateway.yaml")
    assert settings.host == "0.0.0.0"
    assert settings.port == 8080
    # The SQLite file lives in the image's one writable volume.
    assert settings.store.url == "sqlite:////var/lib/bridge/store.db"
    assert "VOLUME" in {i.keyword for i in parse_dockerfile(DOCKER / "Dockerfile").instructions}


class _Health(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/healthz" else 503)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def health_port() -> Iterator[int]:
    server = HTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def _healthcheck(path: str, port: int) -> int:
    script = Path(DOCKER / "healthcheck.py")
    env = {"BRIDGE_PORT": str(port), "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        [sys.executable, str(script), path], env=env, capture_output=True, timeout=30
    ).returncode


def test_healthcheck_script_passes_on_2xx_and_fails_otherwise(health_port: int) -> None:
    assert _healthcheck("/healthz", health_port) == 0
    assert _healthcheck("/readyz", health_port) == 1


def test_healthcheck_script_fails_when_nothing_listens() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert _healthcheck("/healthz", port) == 1
