"""docker/k8s: Deployment, Service, HPA, PDB, the Secret's shape and the kustomization."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from bridge.mapping.compiler import compile_system
from bridge.settings import load_settings
from tests.deploy.support import (
    DOCKER,
    K8S,
    ROOT,
    SystemVariables,
    load_yaml,
    parse_dockerfile,
    unknown_options,
)

# Runtime inputs of a system folder; golden cases (tests/) and the demo's requests stay out.
BUNDLED = [
    p
    for top in ("mappings", "wsdl")
    for p in sorted((ROOT / top).rglob("*"))
    if p.is_file()
    and "tests" not in p.relative_to(ROOT / top).parts[1:-1]
    and p.name != "demo-requests.yaml"
]


def _pod(manifests: dict[str, dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = manifests["Deployment"]["spec"]["template"]["spec"]
    return spec


def _container(manifests: dict[str, dict[str, Any]], name: str = "gateway") -> dict[str, Any]:
    pod = _pod(manifests)
    found: dict[str, Any] = next(
        c for c in pod["containers"] + pod.get("initContainers", []) if c["name"] == name
    )
    return found


def _kustomization() -> dict[str, Any]:
    data: dict[str, Any] = load_yaml(K8S / "kustomization.yaml")
    return data


def _generator(name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(
        g for g in _kustomization()["configMapGenerator"] if g["name"] == name
    )
    return found


def _secret_keys(manifests: dict[str, dict[str, Any]]) -> set[str]:
    return set(manifests["Secret"]["stringData"])


def test_k8s_probes_ask_healthz_and_readyz(manifests: dict[str, dict[str, Any]]) -> None:
    gateway = _container(manifests)
    assert gateway["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert gateway["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert gateway["readinessProbe"]["httpGet"]["path"] == "/readyz"
    ports = {p["name"]: p["containerPort"] for p in gateway["ports"]}
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert gateway[probe]["httpGet"]["port"] in ports


def test_k8s_container_port_is_the_configured_port(
    manifests: dict[str, dict[str, Any]], clean_environment: pytest.MonkeyPatch
) -> None:
    gateway = _container(manifests)
    config = gateway["args"][gateway["args"].index("--config") + 1]
    assert config == "/etc/bridge/gateway.yaml"
    settings = load_settings(K8S / "config" / "gateway.yaml")
    assert settings.host == "0.0.0.0"
    assert [p["containerPort"] for p in gateway["ports"]] == [settings.port]


def test_k8s_gateway_args_use_real_serve_options(manifests: dict[str, dict[str, Any]]) -> None:
    args = _container(manifests)["args"]
    assert args[0] == "serve"
    assert unknown_options(args[1:], "serve") == []


def test_k8s_settings_require_tokens(clean_environment: pytest.MonkeyPatch) -> None:
    settings = load_settings(K8S / "config" / "gateway.yaml")
    assert settings.auth.mode == "jwt"
    assert settings.auth.issuer and settings.base_url
    assert settings.auth.jwks_file == Path("/etc/bridge/issuer-jwks.json")
    assert "issuer-jwks.json" in {Path(f).name for f in _generator("bridge-gateway")["files"]}
    keys = json.loads((K8S / "config" / "issuer-jwks.json").read_text(encoding="utf-8"))
    # Public keys only: no private member of an EC or RSA key.
    for key in keys["keys"]:
        assert not {"d", "p", "q", "dp", "dq", "qi"} & set(key)


def test_k8s_pods_run_as_non_root(manifests: dict[str, dict[str, Any]]) -> None:
    pod = _pod(manifests)
    context = pod["securityContext"]
    assert context["runAsNonRoot"] is True
    uid = parse_dockerfile(DOCKER / "Dockerfile").all("USER")[-1].value.split(":")[0]
    assert context["runAsUser"] == int(uid)
    assert context["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["automountServiceAccountToken"] is False
    for container in pod["containers"] + pod["initContainers"]:
        security = container["securityContext"]
        assert security["allowPrivilegeEscalation"] is False
        assert security["readOnlyRootFilesystem"] is True
        assert security["capabilities"]["drop"] == ["ALL"]


def test_k8s_credentials_come_from_the_secret(
    manifests: dict[str, dict[str, Any]], system_variables: SystemVariables
) -> None:
    sources = _container(manifests)["envFrom"]
    secret_refs = [s["secretRef"]["name"] for s in sources if "secretRef" in s]
    assert secret_refs == [manifests["Secret"]["metadata"]["name"]]
    needed = {*system_variables.credentials, "BRIDGE_PAGING_KEY", "BRIDGE_STORE__URL"}
    assert needed - _secret_keys(manifests) == set()
    assert "BRIDGE_ADMIN__TOKEN" in _secret_keys(manifests)
    # The example is never applied by kustomize, so real values stay out of git.
    assert "secret.example.yaml" not in _kustomization()["resources"]
    assert all(
        v.startswith("REPLACE") or "REPLACE" in v
        for v in manifests["Secret"]["stringData"].values()
    )


def test_k8s_endpoints_are_config_not_secret(
    manifests: dict[str, dict[str, Any]], system_variables: SystemVariables
) -> None:
    envs = _generator("bridge-endpoints")["envs"]
    names = set()
    for envfile in envs:
        for line in (K8S / envfile).read_text(encoding="utf-8").splitlines():
            if line and not line.startswith("#"):
                names.add(line.split("=", 1)[0])
    assert names == set(system_variables.endpoints)
    assert not names & _secret_keys(manifests)
    refs = [
        s["configMapRef"]["name"] for s in _container(manifests)["envFrom"] if "configMapRef" in s
    ]
    assert refs == ["bridge-endpoints"]
    # Nothing secret in the settings file either.
    text = (K8S / "config" / "gateway.yaml").read_text(encoding="utf-8")
    assert not re.search(r"password|paging_key|token:|postgresql://", text, re.IGNORECASE)


def test_k8s_hpa_scales_the_deployment(manifests: dict[str, dict[str, Any]]) -> None:
    hpa = manifests["HorizontalPodAutoscaler"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": manifests["Deployment"]["apiVersion"],
        "kind": "Deployment",
        "name": manifests["Deployment"]["metadata"]["name"],
    }
    assert hpa["spec"]["minReplicas"] >= 2
    assert hpa["spec"]["maxReplicas"] > hpa["spec"]["minReplicas"]
    # CPU utilization needs a CPU request on every container.
    assert _container(manifests)["resources"]["requests"]["cpu"]


def test_k8s_service_and_pdb_select_the_gateway_pods(
    manifests: dict[str, dict[str, Any]],
) -> None:
    labels = manifests["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert manifests["Deployment"]["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert manifests["Service"]["spec"]["selector"].items() <= labels.items()
    assert manifests["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"].items() <= (
        labels.items()
    )
    ports = {p["name"] for p in _container(manifests)["ports"]}
    assert {p["targetPort"] for p in manifests["Service"]["spec"]["ports"]} <= ports


def test_k8s_rollout_keeps_serving(manifests: dict[str, dict[str, Any]]) -> None:
    spec = manifests["Deployment"]["spec"]
    assert spec["replicas"] >= 2
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    grace = _pod(manifests)["terminationGracePeriodSeconds"]
    pre_stop = _container(manifests)["lifecycle"]["preStop"]["sleep"]["seconds"]
    # preStop, then uvicorn's 10 s graceful shutdown and the legacy logouts.
    assert grace >= pre_stop + 10 + 5


def test_k8s_kustomization_lists_existing_files(manifests: dict[str, dict[str, Any]]) -> None:
    kustomization = _kustomization()
    for resource in kustomization["resources"]:
        assert (K8S / resource).is_file(), resource
    for generator in kustomization["configMapGenerator"]:
        for entry in generator.get("files", []) + generator.get("envs", []):
            assert (K8S / entry.split("=", 1)[-1]).is_file(), entry
    volumes = {v["configMap"]["name"] for v in _pod(manifests)["volumes"] if "configMap" in v}
    assert volumes == {"bridge-gateway", "bridge-mappings"}
    assert [i["name"] for i in kustomization["images"]] == ["bridge"]
    for container in _pod(manifests)["containers"] + _pod(manifests)["initContainers"]:
        assert container["image"].split(":")[0] == "bridge"


def test_k8s_mappings_configmap_lists_every_mapping_and_wsdl_file() -> None:
    listed = _generator("bridge-mappings")["files"]
    paths = [p.relative_to(ROOT).as_posix() for p in BUNDLED]
    wanted = [f"{path.replace('/', '__')}=../../{path}" for path in paths]
    missing = [line for line in wanted if line not in listed]
    extra = [line for line in listed if line not in wanted]
    assert not missing and not extra, (
        "docker/k8s/kustomization.yaml, configMapGenerator bridge-mappings: "
        + "".join(f"\n  add:    - {line}" for line in missing)
        + "".join(f"\n  remove: - {line}" for line in extra)
    )
    for line in listed:
        key = line.split("=", 1)[0]
        # A ConfigMap key: letters, digits, '-', '_', '.'.
        assert re.fullmatch(r"[-._a-zA-Z0-9]{1,253}", key), key
    # A ConfigMap holds at most 1 MiB, keys and all.
    assert sum(p.stat().st_size for p in BUNDLED) < 900 * 1024


def test_k8s_init_container_rebuilds_folders_the_gateway_compiles(
    manifests: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    """Run the init container's script on a fake ConfigMap volume, then compile the result."""
    bundle = tmp_path / "bundle"
    out = tmp_path / "config"
    bundle.mkdir()
    out.mkdir()
    for line in _generator("bridge-mappings")["files"]:
        key, source = line.split("=", 1)
        # A ConfigMap volume: each key a symlink into a hidden timestamped folder.
        target = bundle / "..data" / key
        target.parent.mkdir(exist_ok=True)
        shutil.copyfile(K8S / source, target)
        (bundle / key).symlink_to(Path("..data") / key)
    init = _container(manifests, "unpack-mappings")
    mounts = {m["name"]: m["mountPath"] for m in init["volumeMounts"]}
    command = init["command"]
    assert command[:2] == ["sh", "-c"]
    assert command[3:] == ["unpack-mappings", mounts["mapping-bundle"], mounts["mappings"]]
    subprocess.run(
        [*command[:4], str(bundle), str(out)], check=True, timeout=60, capture_output=True
    )

    gateway = _container(manifests)
    assert gateway["workingDir"] == mounts["mappings"]
    assert {m["mountPath"]: m["name"] for m in gateway["volumeMounts"]}[
        gateway["workingDir"]
    ] == "mappings"
    folders = sorted(p.parent for p in out.glob("mappings/*/system.yaml"))
    expected = sorted((ROOT / "mappings").glob("*/system.yaml"))
    assert [f.name for f in folders] == [p.parent.name for p in expected]
    for folder in folders:
        for original in (ROOT / "mappings" / folder.name).rglob("*"):
            if original.is_file() and "tests" not in original.parts[-2:-1]:
                copy = folder / original.relative_to(ROOT / "mappings" / folder.name)
                assert copy.read_bytes() == original.read_bytes(), copy
        system = compile_system(folder, {})
        assert system.resources, folder.name
