"""The Kubernetes manifests: valid against the schemas, and consistent with the code."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import kubernetes_validate
import pytest
import yaml

from alchemist.auth.app import create_app as create_auth_app
from alchemist.cli.main import build_parser
from alchemist.cli.services import ALL_INTERFACES
from alchemist.config import OTHER_VARIABLES, SERVICE_SETTINGS, Settings
from alchemist.gateway.app import create_app as create_gateway_app
from alchemist.health import create_health_app

from .conftest import DEPLOY

KUBERNETES_VERSION = "1.30.0"
SERVICE_PORTS = {"auth": "port", "gateway": "port", "converter": "health_port", "notification": "health_port"}


def of_kind(resources: list[dict[str, Any]], *kinds: str) -> list[dict[str, Any]]:
    return [r for r in resources if r["kind"] in kinds]


def containers(resources: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """(service name from the command, container) of every workload running our image."""
    found = []
    for workload in of_kind(resources, "Deployment", "Job"):
        for container in workload["spec"]["template"]["spec"]["containers"]:
            if container["image"].startswith("audio-alchemist"):
                found.append((container["args"][0], container))
    return found


def provided_names(resources: list[dict[str, Any]], container: dict[str, Any]) -> set[str]:
    names = {item["name"] for item in container.get("env", [])}
    for source in container.get("envFrom", []):
        ref = source.get("configMapRef") or source.get("secretRef")
        (resource,) = [
            r for r in of_kind(resources, "ConfigMap", "Secret") if r["metadata"]["name"] == ref["name"]
        ]
        names |= set(resource.get("data", {})) | set(resource.get("stringData", {}))
    return names


def test_every_resource_is_valid_against_the_kubernetes_schemas(rendered: list[dict[str, Any]]) -> None:
    assert len(rendered) > 20
    for resource in rendered:
        kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)


def test_the_keda_component_is_well_formed() -> None:
    docs = [
        d for d in yaml.safe_load_all((DEPLOY / "k8s/components/keda/scaledobject.yaml").read_text()) if d
    ]
    (scaled,) = [d for d in docs if d["kind"] == "ScaledObject"]
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    assert scaled["spec"]["scaleTargetRef"]["name"] == "converter"
    assert scaled["spec"]["triggers"][0]["metadata"]["queueName"] == Settings().VIDEO_QUEUE


def test_every_service_has_a_deployment_a_service_and_probes(rendered: list[dict[str, Any]]) -> None:
    deployments = {d["metadata"]["name"]: d for d in of_kind(rendered, "Deployment")}
    services = {s["metadata"]["name"] for s in of_kind(rendered, "Service")}
    for name in ("auth", "gateway", "converter", "notification"):
        assert name in deployments and name in services
        (container,) = deployments[name]["spec"]["template"]["spec"]["containers"]
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert {"requests", "limits"} <= container["resources"].keys()
        security = container["securityContext"]
        assert security["allowPrivilegeEscalation"] is False
        assert security["readOnlyRootFilesystem"] is True
        assert deployments[name]["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    for name in ("mysql", "mongodb", "rabbitmq"):
        (stateful,) = [s for s in of_kind(rendered, "StatefulSet") if s["metadata"]["name"] == name]
        assert stateful["spec"]["volumeClaimTemplates"]
    assert of_kind(rendered, "HorizontalPodAutoscaler")[0]["spec"]["scaleTargetRef"]["name"] == "converter"
    assert any(job["metadata"]["name"] == "alchemist-migrate" for job in of_kind(rendered, "Job"))


def satisfied(requirement: str, provided: set[str]) -> bool:
    return any(option in provided for option in requirement.split("|"))


def test_every_setting_a_service_needs_is_provided(rendered: list[dict[str, Any]]) -> None:
    known = set(Settings.model_fields) | set(OTHER_VARIABLES)
    seen = set()
    for service, container in containers(rendered):
        provided = provided_names(rendered, container)
        missing = [need for need in SERVICE_SETTINGS[service] if not satisfied(need, provided)]
        assert not missing, (service, missing)
        assert provided <= known, (service, provided - known)  # a typo would be silently ignored
        seen.add(service)
    assert seen == set(SERVICE_SETTINGS)


def test_every_command_is_a_real_subcommand_and_ports_match(rendered: list[dict[str, Any]]) -> None:
    parser = build_parser()
    for service, container in containers(rendered):
        args = parser.parse_args(container["args"])  # SystemExit on an unknown command or option
        if service in SERVICE_PORTS:
            port = next(p for p in container["ports"] if p["name"] in ("http", "health"))
            assert port["containerPort"] == getattr(args, SERVICE_PORTS[service]), service


def test_metrics_are_scraped_on_a_port_the_ingress_never_routes(rendered: list[dict[str, Any]]) -> None:
    (gateway,) = [c for s, c in containers(rendered) if s == "gateway"]
    metrics = next(p for p in gateway["ports"] if p["name"] == "metrics")
    env = {item["name"]: item.get("value") for item in gateway.get("env", [])}
    assert env["METRICS_PORT"] == str(metrics["containerPort"])
    (service,) = [s for s in of_kind(rendered, "Service") if s["metadata"]["name"] == "gateway"]
    assert all(
        p["targetPort"] != "metrics" and p["port"] != metrics["containerPort"]
        for p in service["spec"]["ports"]
    )
    for ingress in of_kind(rendered, "Ingress"):
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                assert path["backend"]["service"]["port"] in ({"name": "http"}, {"number": 8080}), path
    for deployment in of_kind(rendered, "Deployment"):
        annotations = deployment["spec"]["template"]["metadata"].get("annotations", {})
        if annotations.get("prometheus.io/scrape") == "true":
            ports = {str(p["containerPort"]) for c in deployment["spec"]["template"]["spec"]["containers"]
                     for p in c.get("ports", [])}  # fmt: skip
            assert annotations["prometheus.io/port"] in ports, deployment["metadata"]["name"]


def routes_of(service: str, tmp_path: Path) -> set[str]:
    settings = Settings(JWT_SECRET="x" * 40, ALCHEMIST_DATA_DIR=tmp_path)  # type: ignore[arg-type]
    apps = {
        "auth": lambda: create_auth_app(settings),
        "gateway": lambda: create_gateway_app(settings),
        "converter": lambda: create_health_app(None),  # type: ignore[arg-type]
        "notification": lambda: create_health_app(None),  # type: ignore[arg-type]
    }
    # The OpenAPI paths: routers are included lazily, so app.routes does not list them.
    return set(apps[service]().openapi()["paths"])


@pytest.mark.parametrize("kind", ["readinessProbe", "livenessProbe"])
def test_every_probe_path_exists_in_the_app(
    rendered: list[dict[str, Any]], kind: str, tmp_path: Path
) -> None:
    for service, container in containers(rendered):
        if kind in container:
            assert container[kind]["httpGet"]["path"] in routes_of(service, tmp_path), service


def test_the_minikube_overlay_uses_the_seeds_host_and_the_local_image() -> None:
    from .conftest import render

    overlay = render(DEPLOY / "k8s/overlays/minikube")
    (ingress,) = of_kind(overlay, "Ingress")
    assert ingress["spec"]["rules"][0]["host"] == "mp3converter.com"
    annotations = ingress["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/proxy-body-size"] == "2g"
    for _, container in containers(overlay):
        assert container["image"] == "audio-alchemist:local"
        assert container["imagePullPolicy"] == "Never"


def test_secrets_hold_only_placeholders(rendered: list[dict[str, Any]]) -> None:
    for secret in of_kind(rendered, "Secret"):
        for key, value in secret.get("stringData", {}).items():
            if key.endswith("_USERNAME"):
                continue  # a user name is no secret
            if "://" in value:  # a URL with credentials: its password is the placeholder
                assert (urlsplit(value).password or "").startswith("CHANGE-ME"), key
            else:
                assert value.startswith("CHANGE-ME"), key


def test_services_listen_where_their_peers_and_probes_reach_them(rendered: list[dict[str, Any]]) -> None:
    # The CLI binds 127.0.0.1 by default; in a pod, Services and the kubelet use the pod's address.
    parser = build_parser()
    for service, container in containers(rendered):
        args = parser.parse_args(container["args"])
        if service in ("auth", "gateway"):
            assert args.host == ALL_INTERFACES, service
        elif service in ("converter", "notification"):
            assert args.health_host == ALL_INTERFACES, service


def test_mongodb_runs_with_authentication_and_the_services_log_in(rendered: list[dict[str, Any]]) -> None:
    secrets = {s["metadata"]["name"]: s.get("stringData", {}) for s in of_kind(rendered, "Secret")}
    (mongodb,) = [s for s in of_kind(rendered, "StatefulSet") if s["metadata"]["name"] == "mongodb"]
    (container,) = mongodb["spec"]["template"]["spec"]["containers"]
    env = {item["name"]: item for item in container.get("env", [])}
    root: dict[str, str] = {}
    for name in ("MONGO_INITDB_ROOT_USERNAME", "MONGO_INITDB_ROOT_PASSWORD"):
        ref = env[name]["valueFrom"]["secretKeyRef"]  # from a Secret, never a literal
        root[name] = secrets[ref["name"]][ref["key"]]
    assert "--noauth" not in container.get("args", []) + container.get("command", [])
    configs = {c["metadata"]["name"]: c.get("data", {}) for c in of_kind(rendered, "ConfigMap")}
    assert "MONGODB_URI" not in configs["alchemist-config"]  # it carries a password: Secret only
    uri = urlsplit(secrets["alchemist-secrets"]["MONGODB_URI"])
    assert (uri.username, uri.password) == (
        root["MONGO_INITDB_ROOT_USERNAME"],
        root["MONGO_INITDB_ROOT_PASSWORD"],
    )
    assert parse_qs(uri.query)["authSource"] == ["admin"]  # the root user lives in admin
    for service, container in containers(rendered):
        if "MONGODB_URI" in SERVICE_SETTINGS[service]:
            sources = [s.get("secretRef", {}).get("name") for s in container.get("envFrom", [])]
            assert "alchemist-secrets" in sources, service


def test_webhooks_are_signed_with_their_own_secret(rendered: list[dict[str, Any]]) -> None:
    (secret,) = [s for s in of_kind(rendered, "Secret") if s["metadata"]["name"] == "alchemist-secrets"]
    values = secret["stringData"]
    assert values["WEBHOOK_SECRET"] != values["JWT_SECRET"]
    (config,) = [c for c in of_kind(rendered, "ConfigMap") if c["metadata"]["name"] == "alchemist-config"]
    settings = Settings(**{k: v for k, v in config["data"].items() if k in Settings.model_fields})
    assert settings.webhook_networks == ()  # public receivers only, unless an operator says so


def test_databases_are_reachable_only_from_their_services(rendered: list[dict[str, Any]]) -> None:
    policies = {p["metadata"]["name"]: p["spec"] for p in of_kind(rendered, "NetworkPolicy")}
    assert policies["default-deny-ingress"]["podSelector"] == {}
    allowed = {
        name: set(spec["ingress"][0]["from"][0]["podSelector"]["matchExpressions"][0]["values"])
        for name, spec in policies.items()
        if name.endswith("-from-services")
    }
    assert allowed["mongodb-from-services"] == {"gateway", "converter"}
    assert "auth" not in allowed["rabbitmq-from-services"]
    assert "from" not in policies["gateway-from-anywhere"]["ingress"][0]
