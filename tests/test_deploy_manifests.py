"""The Kubernetes manifests in deploy/k8s, checked without a cluster.

Every object is validated against the OpenAPI schemas of pinned Kubernetes
versions in strict mode (unknown fields are errors), with the schemas that
the ``kubernetes-validate`` package bundles (no network). Then the facts
the deployment's security and durability rest on are asserted one by one:
the token Secret is mounted where ``--auth_token_file`` points, no
container can run as root, the job server's checkpoints are on a
persistent volume, the pools are reached through a headless Service, every
container has resource limits and a TCP readiness probe, and the
NetworkPolicies let only the job server and the pools talk to each other.

A corrupted copy of a manifest must fail the same validation, so a check
that passes everything would be caught here too.
"""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"

# The oldest Kubernetes minor version the manifests claim to work on, and a
# recent one. kubernetes-validate bundles the schemas of both (pyproject's
# test extra asks for a version of it that does).
KUBERNETES_VERSIONS = ["1.30.0", "1.35.0"]

NAMESPACE = "ferrobeam"
TOKEN_SECRET = "ferrobeam-token"
TOKEN_DIR = "/etc/ferrobeam"
TOKEN_FILE = "/etc/ferrobeam/token"
CHECKPOINT_DIR = "/var/lib/ferrobeam/checkpoints"
WORK_DIR = "/var/lib/ferrobeam/work"
POOL_SERVICE = "ferrobeam-worker-pool"
POOL_PORT = 50000
JOB_PORT, FN_PORT, DASHBOARD_PORT = 8099, 8098, 8081

JOB_SERVER_LABELS = {"app.kubernetes.io/name": "ferrobeam", "app.kubernetes.io/component": "job-server"}
POOL_LABELS = {"app.kubernetes.io/name": "ferrobeam", "app.kubernetes.io/component": "worker-pool"}

WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet"}


# ---------------------------------------------------------------------------
# Loading


def manifest_files() -> list[Path]:
    """The files the kustomization applies, in its order."""
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    return [K8S / name for name in kustomization["resources"]]


def load(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def all_objects() -> list[dict[str, Any]]:
    return [doc for path in manifest_files() for doc in load(path)]


def by_kind(kind: str) -> list[dict[str, Any]]:
    return [o for o in all_objects() if o["kind"] == kind]


def one(kind: str, name: str) -> dict[str, Any]:
    found = [o for o in by_kind(kind) if o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} named {name}, found {len(found)}"
    return found[0]


def workloads() -> list[dict[str, Any]]:
    return [o for o in all_objects() if o["kind"] in WORKLOAD_KINDS]


def pod_specs() -> Iterator[tuple[str, dict[str, Any]]]:
    for w in workloads():
        yield f"{w['kind']}/{w['metadata']['name']}", w["spec"]["template"]["spec"]


def containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return pod.get("initContainers", []) + pod["containers"]


def all_containers() -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    for where, pod in pod_specs():
        for c in containers(pod):
            yield f"{where}/{c['name']}", pod, c


def flags(args: list[str]) -> dict[str, str | None]:
    """``--name value`` / ``--name=value`` / ``--switch`` pairs of a command line."""
    out: dict[str, str | None] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if arg.startswith("--"):
            name, eq, value = arg.partition("=")
            if eq:
                out[name] = value
            elif i + 1 < len(args) and not args[i + 1].startswith("--"):
                out[name] = args[i + 1]
                i += 1
            else:
                out[name] = None
        i += 1
    return out


def validate_all(objects: list[dict[str, Any]], version: str) -> None:
    for obj in objects:
        kubernetes_validate.validate(obj, version, strict=True)


# ---------------------------------------------------------------------------
# Schemas


def test_kustomization_applies_every_manifest():
    listed = {p.name for p in manifest_files()}
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk, "every manifest in deploy/k8s must be listed in kustomization.yaml and exist"
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert kustomization["namespace"] == NAMESPACE
    assert kustomization["kind"] == "Kustomization"
    # No token in git: the Secret is created outside the kustomization.
    assert "secretGenerator" not in kustomization
    assert not by_kind("Secret"), "the token Secret must not be checked in"


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_manifest_is_valid_in_strict_mode(version):
    objects = all_objects()
    assert {o["kind"] for o in objects} >= {"Namespace", "StatefulSet", "Deployment", "Service", "NetworkPolicy"}
    for obj in objects:
        # Raises ValidationError (a wrong or unknown field) or
        # SchemaNotFoundError (an unknown kind or apiVersion).
        assert kubernetes_validate.validate(obj, version, strict=True) == version.rsplit(".", 1)[0]


def corruptions() -> dict[str, Any]:
    """Ways to break the job server's StatefulSet that a schema must catch."""

    def misspelled_field(sts):
        c = sts["spec"]["template"]["spec"]["containers"][0]
        c["imagePulPolicy"] = c.pop("imagePullPolicy")

    def wrong_type(sts):
        sts["spec"]["replicas"] = "one"

    def missing_required(sts):
        del sts["spec"]["template"]["spec"]["containers"][0]["name"]

    def misplaced_field(sts):
        # securityContext.runAsNonRoot on the pod spec itself, where a
        # hurried edit might put it: unknown there.
        sts["spec"]["template"]["spec"]["runAsNonRoot"] = True

    def port_as_string(sts):
        sts["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "8099"

    return {f.__name__: f for f in (misspelled_field, wrong_type, missing_required, misplaced_field, port_as_string)}


@pytest.mark.parametrize("corruption", sorted(corruptions()))
def test_a_broken_manifest_fails_validation(corruption, tmp_path):
    """A corrupted copy, written to disk and read back like the real ones."""
    original = one("StatefulSet", "ferrobeam-job-server")
    broken = copy.deepcopy(original)
    corruptions()[corruption](broken)
    path = tmp_path / "job-server.yaml"
    path.write_text(yaml.safe_dump(broken))
    (reloaded,) = load(path)
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_all([reloaded], KUBERNETES_VERSIONS[0])
    # The untouched object, through the same round trip, passes.
    path.write_text(yaml.safe_dump(original))
    validate_all(load(path), KUBERNETES_VERSIONS[0])


def test_an_unknown_kind_is_not_silently_accepted():
    obj = copy.deepcopy(one("Service", POOL_SERVICE))
    obj["apiVersion"] = "v2"
    with pytest.raises(kubernetes_validate.SchemaNotFoundError):
        kubernetes_validate.validate(obj, KUBERNETES_VERSIONS[0], strict=True)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kubernetes_validate", "--strict", "--quiet", *args],
                          capture_output=True, text=True, timeout=120)


def test_the_command_line_validator_agrees(tmp_path):
    """`python -m kubernetes_validate --strict` as a person would run it."""
    versions = [a for v in KUBERNETES_VERSIONS for a in ("-k", v)]
    ok = run_cli(*versions, *map(str, manifest_files()))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "ERROR" not in ok.stdout and "WARN" not in ok.stdout, ok.stdout

    # The worker pool file with one field misspelled in its second document.
    text = (K8S / "worker-pool.yaml").read_text()
    broken_text = text.replace("clusterIP: None", "clusterIp: None")
    assert broken_text != text
    broken = tmp_path / "worker-pool.yaml"
    broken.write_text(broken_text)
    bad = run_cli(*versions, str(broken))
    assert bad.returncode != 0, bad.stdout + bad.stderr
    assert "service/ferrobeam-worker-pool" in bad.stdout and "clusterIp" in bad.stdout, bad.stdout


def test_kustomize_build_output_is_valid():
    """What `kubectl apply -k deploy/k8s` would send, where kubectl exists."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed")
    built = subprocess.run([kubectl, "kustomize", str(K8S)], capture_output=True, text=True, timeout=120)
    if built.returncode != 0 and "unknown command" in built.stderr:
        pytest.skip("this kubectl has no kustomize")
    assert built.returncode == 0, built.stderr
    objects = [o for o in yaml.safe_load_all(built.stdout) if o]
    assert len(objects) == len(all_objects())
    for version in KUBERNETES_VERSIONS:
        validate_all(objects, version)
    for obj in objects:
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == NAMESPACE, obj["metadata"]["name"]


# ---------------------------------------------------------------------------
# The token


def test_token_secret_is_mounted_where_auth_token_file_points():
    assert workloads()
    for where, pod in pod_specs():
        secret_volumes = {v["name"]: v["secret"] for v in pod["volumes"] if "secret" in v}
        token_volumes = [name for name, s in secret_volumes.items() if s["secretName"] == TOKEN_SECRET]
        assert token_volumes, f"{where}: no volume from the Secret {TOKEN_SECRET}"
        (volume,) = token_volumes
        secret = secret_volumes[volume]
        assert {"key": "token", "path": "token"} in secret["items"], where
        assert secret.get("optional") is not True, f"{where}: a pod must not start without its token"
        # No bits for others (YAML 0440 is octal, as kubectl reads it).
        assert secret["defaultMode"] & 0o007 == 0, f"{where}: token readable by others"
        for c in pod["containers"]:
            mounts = [m for m in c["volumeMounts"] if m["name"] == volume]
            assert mounts == [{"name": volume, "mountPath": TOKEN_DIR, "readOnly": True}], f"{where}/{c['name']}"
            assert flags(c["args"]).get("--auth_token_file") == TOKEN_FILE, f"{where}/{c['name']}"
            # The token comes from the file, never from a plain env value.
            for env in c.get("env", []):
                assert env["name"] != "FERROBEAM_AUTH_TOKEN" or "valueFrom" in env, f"{where}/{c['name']}"


def test_remote_binding_is_explicit_and_token_protected():
    for where, _, c in all_containers():
        f = flags(c["args"])
        if f.get("--host") not in (None, "127.0.0.1", "localhost", "::1"):
            assert "--allow-remote" in f, where
            assert f.get("--auth_token_file") == TOKEN_FILE, where


# ---------------------------------------------------------------------------
# No root


def test_no_container_runs_as_root():
    for where, pod, c in all_containers():
        pod_sc = pod.get("securityContext", {})
        sc = c.get("securityContext", {})

        def effective(key):
            return sc.get(key, pod_sc.get(key))

        assert effective("runAsNonRoot") is True, where
        uid = effective("runAsUser")
        assert isinstance(uid, int) and uid > 0, f"{where}: runAsUser {uid!r}"
        gid = effective("runAsGroup")
        assert isinstance(gid, int) and gid > 0, f"{where}: runAsGroup {gid!r}"
        assert sc.get("privileged") is not True, where
        assert sc.get("allowPrivilegeEscalation") is False, where
        assert sc.get("capabilities", {}).get("drop") == ["ALL"], where
        assert not sc.get("capabilities", {}).get("add"), where
        assert sc.get("readOnlyRootFilesystem") is True, where
        seccomp = sc.get("seccompProfile", pod_sc.get("seccompProfile", {}))
        assert seccomp.get("type") == "RuntimeDefault", where
    for where, pod in pod_specs():
        assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC"), where
        assert pod.get("automountServiceAccountToken") is False, where
        assert not any("hostPath" in v for v in pod["volumes"]), where


def test_writable_paths_are_volumes():
    """With a read-only root filesystem, /tmp (HOME) must be a volume."""
    for where, pod, c in all_containers():
        mounted = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
        assert "/tmp" in mounted, where
        tmp = next(v for v in pod["volumes"] if v["name"] == mounted["/tmp"]["name"])
        assert "sizeLimit" in tmp["emptyDir"], where


def test_namespace_enforces_the_restricted_pod_security_profile():
    labels = one("Namespace", NAMESPACE)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


def test_dockerfile_runs_as_the_same_non_root_user():
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", dockerfile, re.M)
    user = re.findall(r"^USER\s+(\S+)", dockerfile, re.M)
    assert user, "the image must set a USER"
    uid, _, gid = user[-1].partition(":")
    assert uid.isdigit() and int(uid) > 0, "a numeric non-root USER (runAsNonRoot checks numbers)"
    for where, pod, c in all_containers():
        sc = {**pod.get("securityContext", {}), **c.get("securityContext", {})}
        assert sc["runAsUser"] == int(uid), where
        assert not gid or sc["runAsGroup"] == int(gid), where
    # The servers stop cleanly on SIGTERM, the runtime's default signal.
    assert not re.search(r"^STOPSIGNAL", dockerfile, re.M)
    assert "pip wheel" in dockerfile or "pip install ." in dockerfile


# ---------------------------------------------------------------------------
# The job server


def job_server() -> tuple[dict[str, Any], dict[str, Any]]:
    sts = one("StatefulSet", "ferrobeam-job-server")
    (c,) = sts["spec"]["template"]["spec"]["containers"]
    return sts, c


def test_job_server_command_line():
    sts, c = job_server()
    assert sts["spec"]["replicas"] == 1
    assert c["command"] == ["ferrobeam"]
    assert c["args"][0] == "job-server"
    assert flags(c["args"]) == {
        "--host": "0.0.0.0",
        "--allow-remote": None,
        "--auth_token_file": TOKEN_FILE,
        "--port": str(JOB_PORT),
        "--fn_port": str(FN_PORT),
        "--advertise_host": "$(POD_IP)",
        "--worker_pools": f"{POOL_SERVICE}:{POOL_PORT}",
        "--checkpoint_dir": CHECKPOINT_DIR,
        "--work_dir": WORK_DIR,
        "--dashboard_port": str(DASHBOARD_PORT),
    }


def test_variables_in_arguments_are_defined():
    """Kubernetes leaves an undefined $(VAR) in args as it is, silently."""
    for where, _, c in all_containers():
        defined = {e["name"] for e in c.get("env", [])}
        for arg in c.get("command", []) + c.get("args", []):
            for var in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", arg):
                assert var in defined, f"{where}: $({var}) is not defined"
    _, c = job_server()
    (pod_ip,) = [e for e in c["env"] if e["name"] == "POD_IP"]
    assert pod_ip["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"


def test_job_server_checkpoints_are_on_a_persistent_volume():
    sts, c = job_server()
    claims = {t["metadata"]["name"]: t for t in sts["spec"]["volumeClaimTemplates"]}
    pod_volumes = {v["name"] for v in sts["spec"]["template"]["spec"]["volumes"]}
    f = flags(c["args"])

    def volume_of(path: str) -> str:
        mounts = [m for m in c["volumeMounts"] if path == m["mountPath"] or path.startswith(m["mountPath"].rstrip("/") + "/")]
        assert mounts, f"{path} is on the container's (read-only) root filesystem"
        return max(mounts, key=lambda m: len(m["mountPath"]))["name"]

    checkpoint_volume = volume_of(f["--checkpoint_dir"])
    assert checkpoint_volume in claims, "checkpoints must be on a volumeClaimTemplate (a PVC per pod)"
    assert checkpoint_volume not in pod_volumes, "a pod volume of the same name would shadow the claim"
    claim = claims[checkpoint_volume]["spec"]
    assert claim["accessModes"] == ["ReadWriteOnce"]
    assert claim["resources"]["requests"]["storage"]
    # RocksDB checkpoints hard-link the working state's files: one filesystem.
    assert volume_of(f["--work_dir"]) == checkpoint_volume
    # Deleting or scaling the StatefulSet keeps the state.
    assert sts["spec"]["persistentVolumeClaimRetentionPolicy"] == {"whenDeleted": "Retain", "whenScaled": "Retain"}


def test_job_server_service_exposes_its_ports():
    sts, c = job_server()
    service = one("Service", sts["spec"]["serviceName"])
    ports = {p["port"]: p for p in service["spec"]["ports"]}
    assert set(ports) == {JOB_PORT, FN_PORT, DASHBOARD_PORT}
    container_ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    for port, p in ports.items():
        assert container_ports[p["targetPort"]] == port
    assert selects(service["spec"]["selector"], sts)


# ---------------------------------------------------------------------------
# The pools


def selects(selector: dict[str, str], workload: dict[str, Any]) -> bool:
    labels = workload["spec"]["template"]["metadata"]["labels"]
    return all(labels.get(k) == v for k, v in selector.items())


def test_pool_deployment_behind_a_headless_service():
    deployment = one("Deployment", POOL_SERVICE)
    assert deployment["spec"]["replicas"] == 2
    (c,) = deployment["spec"]["template"]["spec"]["containers"]
    assert c["command"] == ["ferrobeam"] and c["args"][0] == "worker-pool"
    assert flags(c["args"]) == {
        "--host": "0.0.0.0",
        "--allow-remote": None,
        "--port": str(POOL_PORT),
        "--auth_token_file": TOKEN_FILE,
    }
    service = one("Service", POOL_SERVICE)
    assert service["spec"]["clusterIP"] == "None", "one pool per pod needs a headless Service"
    assert service["spec"].get("publishNotReadyAddresses", False) is False
    assert selects(service["spec"]["selector"], deployment)
    assert deployment["spec"]["selector"]["matchLabels"] == service["spec"]["selector"]
    (port,) = service["spec"]["ports"]
    container_ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert port["port"] == POOL_PORT and container_ports[port["targetPort"]] == POOL_PORT
    # The job server finds the pools by this Service's name.
    _, server = job_server()
    host, _, pool_port = flags(server["args"])["--worker_pools"].partition(":")
    assert host == service["metadata"]["name"] and int(pool_port) == POOL_PORT
    # No other workload is selected by the pools' Service.
    assert [w["metadata"]["name"] for w in workloads() if selects(service["spec"]["selector"], w)] == [POOL_SERVICE]


# ---------------------------------------------------------------------------
# Resources and probes

QUANTITY = re.compile(r"^(\d+(?:\.\d+)?)(m|Ki|Mi|Gi|Ti|k|M|G|T)?$")
FACTORS = {None: 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
           "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def quantity(value: Any) -> float:
    match = QUANTITY.match(str(value))
    assert match, f"unparsed quantity {value!r}"
    return float(match.group(1)) * FACTORS[match.group(2)]


def test_every_container_has_resource_requests_and_limits():
    for where, _, c in all_containers():
        resources = c.get("resources", {})
        requests, limits = resources.get("requests", {}), resources.get("limits", {})
        for key in ("cpu", "memory", "ephemeral-storage"):
            assert key in requests and key in limits, f"{where}: {key} needs a request and a limit"
            assert quantity(requests[key]) <= quantity(limits[key]), f"{where}: {key} request above its limit"


def test_every_container_has_a_tcp_readiness_probe_on_its_port():
    for where, _, c in all_containers():
        probe = c.get("readinessProbe", {})
        assert "tcpSocket" in probe, f"{where}: needs a tcpSocket readiness probe"
        port = probe["tcpSocket"]["port"]
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        assert port in ports or port in ports.values(), f"{where}: probe on a port it does not declare"


def test_images_are_the_placeholder_the_kustomization_rewrites():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    names = {i["name"] for i in kustomization["images"]}
    for where, _, c in all_containers():
        name = c["image"].rsplit(":", 1)[0]
        assert name in names, f"{where}: image {c['image']} is not overridable through the kustomization"


# ---------------------------------------------------------------------------
# Network policy


def policy_for(workload: dict[str, Any]) -> dict[str, Any]:
    policies = [p for p in by_kind("NetworkPolicy") if selects(p["spec"]["podSelector"]["matchLabels"], workload)]
    assert len(policies) == 1, f"{workload['metadata']['name']}: expected one NetworkPolicy, found {len(policies)}"
    return policies[0]


def peers(rule: dict[str, Any], key: str) -> list[dict[str, Any]]:
    return rule.get(key, [])


def test_network_policy_pools_accept_only_the_job_server():
    pools = one("Deployment", POOL_SERVICE)
    sts, _ = job_server()
    policy = policy_for(pools)["spec"]
    assert set(policy["policyTypes"]) == {"Ingress", "Egress"}
    (rule,) = policy["ingress"]
    (peer,) = peers(rule, "from")
    assert set(peer) == {"podSelector"} and peer["podSelector"]["matchLabels"] == JOB_SERVER_LABELS
    assert selects(peer["podSelector"]["matchLabels"], sts)
    assert rule["ports"] == [{"protocol": "TCP", "port": POOL_PORT}]
    # Out: the job server's Fn API, and DNS (port 53 only).
    for rule in policy["egress"]:
        if "to" in rule:
            (peer,) = rule["to"]
            assert peer["podSelector"]["matchLabels"] == JOB_SERVER_LABELS
            assert rule["ports"] == [{"protocol": "TCP", "port": FN_PORT}]
        else:
            assert {p["port"] for p in rule["ports"]} == {53}


def test_network_policy_job_server_fn_api_only_from_pools():
    sts, _ = job_server()
    pools = one("Deployment", POOL_SERVICE)
    policy = policy_for(sts)["spec"]
    assert "Ingress" in policy["policyTypes"]
    allowed: dict[int, list[dict[str, str]]] = {}
    for rule in policy["ingress"]:
        assert rule.get("from"), "an ingress rule without `from` admits everyone"
        assert rule.get("ports"), "an ingress rule without `ports` admits every port"
        for peer in rule["from"]:
            assert set(peer) == {"podSelector"}, "only pods of this namespace"
            for port in rule["ports"]:
                allowed.setdefault(port["port"], []).append(peer["podSelector"]["matchLabels"])
    assert allowed[FN_PORT] == [POOL_LABELS]
    assert selects(POOL_LABELS, pools)
    assert set(allowed) == {FN_PORT, JOB_PORT, DASHBOARD_PORT}
    # Clients opt in with a label that no ferrobeam pod carries.
    for port in (JOB_PORT, DASHBOARD_PORT):
        (client,) = allowed[port]
        assert client == {"ferrobeam.io/client": "true"}
        assert not any(selects(client, w) for w in workloads())


def test_every_service_selects_a_workload_and_ports_exist():
    for service in by_kind("Service"):
        matching = [w for w in workloads() if selects(service["spec"]["selector"], w)]
        assert len(matching) == 1, service["metadata"]["name"]
        (c,) = matching[0]["spec"]["template"]["spec"]["containers"]
        names = {p["name"] for p in c["ports"]}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in names, f"{service['metadata']['name']}: {port['targetPort']}"
