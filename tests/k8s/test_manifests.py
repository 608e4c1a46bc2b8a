"""The Kubernetes manifests (deploy/k8s), checked offline: no API server runs here.

The production overlay is rendered by tests/k8s/kustomize.py, and where kubectl is installed
by `kubectl kustomize` too, which must print the same objects. Every rendered object passes
the Kubernetes schemas in strict mode and checkov's Kubernetes checks, and the rest is what a
reviewer checks by reading: probes, drain, security context, selectors, budget, secrets,
images, and the settings and edge the Compose files give the same app. docs/scaling.md.
"""

from __future__ import annotations

import copy
import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import all_versions, major_minor

from app import doctor
from app.config import load_config
from harness import REPO, VENV_BIN
from harness.process import free_port
from tests.deploy.test_static import DEV, PROD, PROD_REQUIRED, SECRET_VARIABLES, SECRETS, model
from tests.k8s.kustomize import Unsupported, render

OVERLAY = REPO / "deploy" / "k8s" / "overlays" / "production"
BASE = REPO / "deploy" / "k8s" / "base"
# The newest Kubernetes the bundled schemas cover; the namespace's Pod Security version follows it.
KUBERNETES_VERSION = "1.37"
# checkov's own venv (Makefile: .venv/.checkov), beside the one running the tests.
CHECKOV = VENV_BIN.parent / "checkov" / "bin" / "checkov"
SCALING = (REPO / "docs" / "scaling.md").read_text()
DOCKERFILE = (REPO / "Dockerfile").read_text()
# The image's user (Dockerfile: USER 10001:10001).
IMAGE_UID, IMAGE_GID = map(int, re.search(r"^USER (\d+):(\d+)$", DOCKERFILE, re.M).groups())
PINNED = re.compile(r"[a-z0-9.-]+(:\d+)?(/[a-z0-9._-]+)+:sha-[0-9a-f]{40}@sha256:[0-9a-f]{64}")
SECRET_NAMES = re.compile(r"SECRET|PASSWORD|TOKEN|_URL$|DSN")


# --- the render ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def manifests() -> list[dict]:
    return render(OVERLAY)


def kubectl_render(directory: Path) -> list[dict]:
    result = subprocess.run([shutil.which("kubectl"), "kustomize", str(directory)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc is not None]


def by_identity(objects: list[dict]) -> dict[tuple, dict]:
    """Objects by kind, namespace and name: kustomize sorts by kind, the Python render keeps
    the resources' order, and neither order matters to the API server."""
    keyed = {(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]): o for o in objects}
    assert len(keyed) == len(objects), "two objects share a kind, namespace and name"
    return keyed


def one(manifests: list[dict], kind: str, name: str) -> dict:
    (found,) = [o for o in manifests if o["kind"] == kind and o["metadata"]["name"] == name]
    return found


def pod_spec(workload: dict) -> dict:
    return workload["spec"]["template"]["spec"]


def pod_labels(workload: dict) -> dict:
    return workload["spec"]["template"]["metadata"]["labels"]


def container(workload: dict) -> dict:
    (only,) = pod_spec(workload)["containers"]
    return only


def workloads(manifests: list[dict]) -> list[dict]:
    return [o for o in manifests if o["kind"] in ("Deployment", "Job")]


def selects(selector: dict, labels: dict) -> bool:
    """A Kubernetes label selector (matchLabels and matchExpressions); {} selects everything."""
    if any(labels.get(key) != value for key, value in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
        present = key in labels
        if not {"In": present and labels[key] in values, "NotIn": not present or labels[key] not in values,
                "Exists": present, "DoesNotExist": not present}[operator]:
            return False
    return True


def quantity(value: str | int | float) -> float:
    """A Kubernetes quantity: CPUs ("1", "500m") or bytes ("512Mi")."""
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    number, unit = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(value)).groups()
    return float(number) * units.get(unit, 1)


# A small overlay that uses each feature the Python render has, with what kubectl kustomize
# (v5.5) renders from it: a named list merged (the patch's items first), a key deleted by null,
# an unnamed list replaced, the namespace, and images pinned by tag and digest, and by a digest
# alone (which drops the tag; the registry's port stays).
CASE_BASE = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, annotations: {keep: "1", drop: "2"}}
spec:
  template:
    spec:
      containers:
        - name: web
          image: flask-kit-web
          env: [{name: A, value: "1"}, {name: X, value: x}]
          args: [one, two]
        - {name: side, image: "registry.local:5000/side:1"}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings}
data: {A: "1"}
"""
CASE_PATCH = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, annotations: {drop: null, new: "3"}}
spec:
  template:
    spec:
      containers:
        - name: web
          env: [{name: C, value: "3"}, {name: A, value: "9"}]
          args: [three]
"""
CASE_OVERLAY = """\
namespace: case
resources: [namespace.yaml, ../base]
patches: [{path: patch.yaml}]
images:
  - {name: flask-kit-web, newName: ghcr.io/acme/flask-kit-web, newTag: sha-1, digest: "sha256:%s"}
  - {name: registry.local:5000/side, digest: "sha256:%s"}
""" % ("a" * 64, "b" * 64)
CASE_RENDERED = [
    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "case"}},
    {"apiVersion": "apps/v1", "kind": "Deployment",
     "metadata": {"name": "web", "namespace": "case", "annotations": {"keep": "1", "new": "3"}},
     "spec": {"template": {"spec": {"containers": [
         {"name": "web", "image": f"ghcr.io/acme/flask-kit-web:sha-1@sha256:{'a' * 64}",
          "env": [{"name": "C", "value": "3"}, {"name": "A", "value": "9"}, {"name": "X", "value": "x"}],
          "args": ["three"]},
         {"name": "side", "image": f"registry.local:5000/side@sha256:{'b' * 64}"}]}}}},
    {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings", "namespace": "case"},
     "data": {"A": "1"}},
]


def write_case(root: Path) -> Path:
    (root / "base").mkdir()
    (root / "base" / "kustomization.yaml").write_text("resources: [objects.yaml]\n")
    (root / "base" / "objects.yaml").write_text(CASE_BASE)
    overlay = root / "overlay"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(CASE_OVERLAY)
    (overlay / "patch.yaml").write_text(CASE_PATCH)
    (overlay / "namespace.yaml").write_text("apiVersion: v1\nkind: Namespace\nmetadata: {name: case}\n")
    return overlay


def test_the_python_render_is_kustomizes(tmp_path, manifests):
    """Without kubectl (the documented branch), the Python render stands alone, held to what
    kustomize renders from a case that uses each of its features. With kubectl, as here and on
    CI, kubectl renders the case and the production overlay, and must print the same objects
    as the render every other test checks."""
    case = write_case(tmp_path)

    assert by_identity(render(case)) == by_identity(CASE_RENDERED)
    if shutil.which("kubectl"):
        assert by_identity(kubectl_render(case)) == by_identity(CASE_RENDERED)
        assert by_identity(kubectl_render(OVERLAY)) == by_identity(manifests)


@pytest.mark.parametrize("kustomization", [
    "resources: [objects.yaml]\ncommonLabels: {team: a}\n",
    "resources: [objects.yaml]\nconfigMapGenerator: [{name: a, literals: [A=1]}]\n",
    "resources: [objects.yaml]\npatches: [{path: patch.yaml, target: {kind: Deployment}}]\n",
    "resources: [objects.yaml]\nimages: [{name: flask-kit-web, newTag: '1', tagSuffix: x}]\n",
], ids=["labels", "generator", "patch target", "image field"])
def test_the_python_render_refuses_what_it_does_not_know(tmp_path, kustomization):
    (tmp_path / "objects.yaml").write_text(CASE_BASE)
    (tmp_path / "kustomization.yaml").write_text(kustomization)

    with pytest.raises(Unsupported):
        render(tmp_path)


# --- schemas and policy ---------------------------------------------------------------------------

def test_every_object_passes_the_kubernetes_schemas_in_strict_mode(manifests):
    newest = major_minor(all_versions()[-1])
    assert KUBERNETES_VERSION == newest, f"kubernetes-validate knows {newest}: move KUBERNETES_VERSION (and " \
                                         "the namespace's pod-security enforce-version) to it"
    errors = []
    for obj in manifests:
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            errors.append(f"{obj['kind']}/{obj['metadata']['name']}: {error.message} at {list(error.path)}")
    assert not errors, "\n".join(errors)
    # strict mode is on: a misspelt field is an error, not ignored
    typo = copy.deepcopy(one(manifests, "Deployment", "flask-kit-web"))
    container(typo)["readinessprobe"] = container(typo).pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(typo, KUBERNETES_VERSION, strict=True)


def test_checkov_passes_every_kubernetes_check(tmp_path, manifests):
    """Every check passes, or is skipped by an annotation that gives the reason. A loosened copy
    of web scanned alongside must fail, so a scan that read nothing cannot pass."""
    assert CHECKOV.exists(), f"{CHECKOV} is missing: make .venv/.dev builds it from requirements-checkov.txt"
    (tmp_path / "release").mkdir()
    (tmp_path / "control").mkdir()
    for index, obj in enumerate(manifests):
        (tmp_path / "release" / f"{index:02}-{obj['kind'].lower()}.yaml").write_text(yaml.safe_dump(obj))
    control = copy.deepcopy(one(manifests, "Deployment", "flask-kit-web"))
    control["metadata"]["name"] = "loosened"
    container(control)["securityContext"].update(readOnlyRootFilesystem=False, allowPrivilegeEscalation=True)
    (tmp_path / "control" / "deployment.yaml").write_text(yaml.safe_dump(control))

    result = subprocess.run([str(CHECKOV), "--skip-download", "--framework", "kubernetes", "--directory",
                             str(tmp_path), "--output", "json"],
                            capture_output=True, text=True, timeout=300)
    report = json.loads(result.stdout)
    report = report[0] if isinstance(report, list) else report
    checks = report["results"]["passed_checks"] + report["results"]["failed_checks"]
    failed = {(c["file_path"].split("/")[1], c["check_id"]) for c in report["results"]["failed_checks"]}

    assert report["summary"]["parsing_errors"] == 0, report["summary"]
    # every object and the control were read (checkov also counts each pod template as a Pod)
    assert report["summary"]["resource_count"] >= len(manifests) + 1
    assert not {check for where, check in failed if where == "release"}, sorted(failed)
    assert {("control", "CKV_K8S_20"), ("control", "CKV_K8S_22")} <= failed
    assert {c["check_id"] for c in checks if c["resource"].startswith("Deployment.flask-kit.flask-kit-web")} >= \
        {"CKV_K8S_8", "CKV_K8S_9", "CKV_K8S_20", "CKV_K8S_22", "CKV_K8S_28", "CKV_K8S_31", "CKV_K8S_37",
         "CKV_K8S_38", "CKV_K8S_40", "CKV_K8S_43"}
    skipped = {c["check_id"] for c in report["results"]["skipped_checks"]}
    annotated = {}
    for obj in manifests:
        for key, value in obj["metadata"].get("annotations", {}).items():
            if key.startswith("checkov.io/skip"):
                check, _, reason = value.partition("=")
                assert len(reason.split()) >= 3, f"{obj['kind']}/{obj['metadata']['name']}: {key} gives no reason"
                annotated[check] = reason
    assert skipped == set(annotated), (skipped, annotated)


# --- web ------------------------------------------------------------------------------------------

def test_web_probes_ask_the_health_paths_on_gunicorns_port(manifests):
    web = one(manifests, "Deployment", "flask-kit-web")
    ports = {port["name"]: port["containerPort"] for port in container(web)["ports"]}
    probes = {kind: container(web)[kind] for kind in ("startupProbe", "readinessProbe", "livenessProbe")}
    settings = one(manifests, "ConfigMap", "flask-kit-settings")["data"]
    healthcheck = dict(re.findall(r"--([a-z-]+)=(\d+)s?", re.search(r"^HEALTHCHECK (.*)$", DOCKERFILE, re.M).group(1)))
    compose_web = model(DEV)["services"]["web"]["healthcheck"]

    assert {kind: probe["httpGet"]["path"] for kind, probe in probes.items()} == \
        {"startupProbe": "/health", "readinessProbe": "/health/ready", "livenessProbe": "/health"}
    for probe in probes.values():
        assert ports[probe["httpGet"]["port"]] == 8000
    assert re.search(r"GUNICORN_BIND=0\.0\.0\.0:8000\b", DOCKERFILE) and "EXPOSE 8000" in DOCKERFILE
    # the entrypoint waits up to WAIT_TIMEOUT for Postgres, then again for Redis, before Gunicorn listens
    startup = probes["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] > 2 * int(settings["WAIT_TIMEOUT"])
    liveness = probes["livenessProbe"]
    assert (liveness["periodSeconds"], liveness["timeoutSeconds"], liveness["failureThreshold"]) == \
        (int(healthcheck["interval"]), int(healthcheck["timeout"]), int(healthcheck["retries"]))
    assert probes["readinessProbe"]["timeoutSeconds"] == int(compose_web["timeout"].rstrip("s"))


def test_web_drains_before_gunicorn_stops_and_never_loses_capacity(manifests):
    web = one(manifests, "Deployment", "flask-kit-web")
    settings = one(manifests, "ConfigMap", "flask-kit-settings")["data"]
    compose_web = model(DEV)["services"]["web"]
    sleep = container(web)["lifecycle"]["preStop"]["sleep"]["seconds"]
    graceful = int(settings["GUNICORN_GRACEFUL_TIMEOUT"])

    assert settings["GUNICORN_GRACEFUL_TIMEOUT"] == compose_web["environment"]["GUNICORN_GRACEFUL_TIMEOUT"]
    assert sleep >= 5
    # the grace period is counted from the start of preStop
    assert pod_spec(web)["terminationGracePeriodSeconds"] > sleep + graceful
    assert web["spec"]["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    # the image's entrypoint and command run, so Gunicorn is PID 1 and gets SIGTERM itself
    assert "command" not in container(web) and "args" not in container(web)
    assert "replicas" not in web["spec"], "the autoscaler owns the count"


@pytest.mark.parametrize("kind, name", [("Deployment", "flask-kit-web"), ("Job", "flask-kit-migrate")])
def test_pods_run_as_the_images_user_read_only_with_no_privilege(manifests, kind, name):
    workload = one(manifests, kind, name)
    spec, main = pod_spec(workload), container(workload)
    volumes = {volume["name"]: volume for volume in spec["volumes"]}
    mounts = {mount["mountPath"]: mount for mount in main["volumeMounts"]}
    account = one(manifests, "ServiceAccount", spec["serviceAccountName"])

    assert spec["securityContext"] == {"runAsNonRoot": True, "runAsUser": IMAGE_UID, "runAsGroup": IMAGE_GID,
                                       "fsGroup": IMAGE_GID, "seccompProfile": {"type": "RuntimeDefault"}}
    assert main["securityContext"] == {"runAsNonRoot": True, "runAsUser": IMAGE_UID, "runAsGroup": IMAGE_GID,
                                       "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                       "privileged": False, "capabilities": {"drop": ["ALL"]}}
    assert spec["automountServiceAccountToken"] is False and account["automountServiceAccountToken"] is False
    # every mount is a declared volume; every writable one is scratch space, never the image
    assert {mount["name"] for mount in mounts.values()} <= set(volumes)
    writable = {path for path, mount in mounts.items() if not mount.get("readOnly")}
    assert all("emptyDir" in volumes[mounts[path]["name"]] for path in writable)
    assert "/tmp" in writable
    if kind == "Deployment":
        # gunicorn.conf.py's worker_tmp_dir: heartbeats in memory
        assert volumes[mounts["/dev/shm"]["name"]]["emptyDir"]["medium"] == "Memory"
    namespace = one(manifests, "Namespace", workload["metadata"]["namespace"])["metadata"]["labels"]
    assert namespace["pod-security.kubernetes.io/enforce"] == "restricted"
    assert namespace["pod-security.kubernetes.io/enforce-version"] == f"v{KUBERNETES_VERSION}"


def test_workers_and_resources_follow_composes_limits(manifests):
    web = one(manifests, "Deployment", "flask-kit-web")
    compose_web = model(DEV, PROD, env=PROD_REQUIRED)["services"]["web"]
    resources = container(web)["resources"]
    (workers,) = [env for env in container(web)["env"] if env["name"] == "WEB_CONCURRENCY"]

    assert quantity(resources["limits"]["cpu"]) == compose_web["cpus"]
    assert quantity(resources["limits"]["memory"]) == int(compose_web["mem_limit"])
    assert resources["requests"] == resources["limits"], "Guaranteed QoS; the autoscaler counts from the request"
    # Gunicorn's workers come from the CPU limit itself (rounded up), as gunicorn.conf.py would
    # count them from the cgroup quota that limit sets
    assert workers["valueFrom"] == {"resourceFieldRef": {"containerName": container(web)["name"],
                                                         "resource": "limits.cpu", "divisor": "1"}}
    assert compose_web["environment"]["WEB_CONCURRENCY"] == str(math.ceil(compose_web["cpus"]))


# --- around web -----------------------------------------------------------------------------------

def test_the_service_budget_and_autoscaler_select_the_web_pods(manifests):
    web = one(manifests, "Deployment", "flask-kit-web")
    job = one(manifests, "Job", "flask-kit-migrate")
    service = one(manifests, "Service", "flask-kit-web")
    budget = one(manifests, "PodDisruptionBudget", "flask-kit-web")
    autoscaler = one(manifests, "HorizontalPodAutoscaler", "flask-kit-web")
    container_ports = {port["name"] for port in container(web)["ports"]}

    assert selects(web["spec"]["selector"], pod_labels(web))
    assert selects({"matchLabels": service["spec"]["selector"]}, pod_labels(web))
    assert not selects({"matchLabels": service["spec"]["selector"]}, pod_labels(job))
    assert {port["targetPort"] for port in service["spec"]["ports"]} <= container_ports
    assert selects(budget["spec"]["selector"], pod_labels(web)) and not selects(budget["spec"]["selector"],
                                                                                 pod_labels(job))
    assert autoscaler["spec"]["scaleTargetRef"] == {"apiVersion": web["apiVersion"], "kind": "Deployment",
                                                    "name": web["metadata"]["name"]}
    # a drain may take one pod of at least two, and CPU percentages need a CPU request
    assert budget["spec"]["maxUnavailable"] < autoscaler["spec"]["minReplicas"]
    assert autoscaler["spec"]["minReplicas"] >= 2
    (metric,) = autoscaler["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu" and "cpu" in container(web)["resources"]["requests"]


def test_network_policies_let_only_the_ingress_controller_in_and_only_app_pods_out(manifests):
    web = one(manifests, "Deployment", "flask-kit-web")
    job = one(manifests, "Job", "flask-kit-migrate")
    policies = [o for o in manifests if o["kind"] == "NetworkPolicy"]
    pods = {"web": pod_labels(web), "migrate": pod_labels(job), "other": {"app.kubernetes.io/name": "other"}}

    def selected(policy):
        return {name for name, labels in pods.items() if selects(policy["spec"]["podSelector"], labels)}

    # every pod of the namespace, whatever it is, is denied both ways unless a policy allows
    deny = [p for p in policies if selected(p) == set(pods)]
    assert [(p["spec"]["policyTypes"], "ingress" in p["spec"], "egress" in p["spec"]) for p in deny] == \
        [(["Ingress", "Egress"], False, False)]
    # into web: the ingress controller's pods in its namespace, on Gunicorn's port, nobody else
    ingress_rules = [rule for p in policies if "web" in selected(p) for rule in p["spec"].get("ingress", [])]
    assert ingress_rules == [{
        "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}},
                  "podSelector": {"matchLabels": {"app.kubernetes.io/name": "ingress-nginx"}}}],
        "ports": [{"protocol": "TCP", "port": container(web)["ports"][0]["containerPort"]}]}]
    assert not [p for p in policies if {"migrate", "other"} & selected(p) and p["spec"].get("ingress")]
    # out: DNS, Postgres and Redis, from web and the migration only
    egress = {}
    for policy in policies:
        for rule in policy["spec"].get("egress", []):
            for port in rule["ports"]:
                egress.setdefault(port["port"], set()).update(selected(policy))
                assert rule["to"], f"{policy['metadata']['name']}: egress to anywhere"
    assert egress == {53: {"web", "migrate"}, 5432: {"web", "migrate"}, 6379: {"web", "migrate"}}
    # the overlay gave the datastores' addresses; the base's never-routed stand-ins are gone
    datastores = one(manifests, "NetworkPolicy", "flask-kit-datastores")
    assert "192.0.2." not in json.dumps(datastores)


def test_the_connection_budget_fits_as_the_doctor_counts_it(manifests):
    """The doctor, run in a pod, reads WEB_REPLICAS and WEB_ROLLOUT_SURGE from the settings: they
    must be the autoscaler's ceiling and the rollout's surge, and the total must fit Postgres's
    default max_connections (the doctor assumes it when it cannot read the live one)."""
    web = one(manifests, "Deployment", "flask-kit-web")
    settings = one(manifests, "ConfigMap", "flask-kit-settings")["data"]
    autoscaler = one(manifests, "HorizontalPodAutoscaler", "flask-kit-web")
    workers = math.ceil(quantity(container(web)["resources"]["limits"]["cpu"]))
    offline = {name: value for name, value in settings.items() if not name.endswith("_FILE")}
    offline.update(WEB_CONCURRENCY=str(workers), DATABASE_URL=f"postgresql://flask@127.0.0.1:{free_port()}/flask")

    row = doctor.check_connection_budget(doctor.Target(settings=offline))

    assert int(settings["WEB_REPLICAS"]) == autoscaler["spec"]["maxReplicas"]
    assert int(settings["WEB_ROLLOUT_SURGE"]) == web["spec"]["strategy"]["rollingUpdate"]["maxSurge"]
    peak = autoscaler["spec"]["maxReplicas"] + int(settings["WEB_ROLLOUT_SURGE"])
    assert row.status == "warn" and "assumed Postgres's default" in row.detail, row
    assert f"{workers} worker x ({settings['DB_POOL_SIZE']} pool + 0 overflow) x {peak} replicas" in row.detail


def test_no_secret_value_is_in_any_manifest(manifests):
    text = json.dumps(manifests)
    assert not [o for o in manifests if o["kind"] == "Secret"]
    assert "dev-only" not in text and not re.search(r"://[^/\s\"@]*:[^/\s\"@]+@", text), "credentials in a URL"
    for workload in workloads(manifests):
        for env in container(workload).get("env", []):
            assert not (SECRET_NAMES.search(env["name"]) and "value" in env), env
            assert "secretKeyRef" not in env.get("valueFrom", {}), "secrets are files, not variables"
        secrets = [v["secret"] for v in pod_spec(workload)["volumes"] if "secret" in v]
        assert [s["secretName"] for s in secrets] == ["flask-kit-secrets"]
    for config in (o for o in manifests if o["kind"] == "ConfigMap"):
        assert not [name for name in config["data"] if SECRET_NAMES.search(name) and not name.endswith("_FILE")]


def test_every_container_runs_the_release_pinned_by_the_overlay(manifests):
    overlay = yaml.safe_load((OVERLAY / "kustomization.yaml").read_text())
    pinned = {image["name"] for image in overlay["images"]}
    base_images = {c["image"] for o in workloads(render(BASE)) for c in pod_spec(o)["containers"]}

    assert base_images <= pinned, "every image the base names, the overlay pins"
    assert not [image for image in base_images if ":" in image or "@" in image], "the base pins nothing itself"
    for workload in workloads(manifests):
        for each in pod_spec(workload)["containers"] + pod_spec(workload).get("initContainers", []):
            assert PINNED.fullmatch(each["image"]), each["image"]


def test_web_and_migrate_get_the_settings_compose_gives_them(manifests, tmp_path):
    """The values docker-compose.prod.yml with docker-compose.secrets.yml sets for web, the same
    here; what differs is named, and why is in settings.yaml."""
    env = {k: v for k, v in PROD_REQUIRED.items() if k not in SECRET_VARIABLES}
    compose = model(DEV, PROD, SECRETS, env={**env, "SECRETS_DIR": str(tmp_path)})["services"]
    web, job = one(manifests, "Deployment", "flask-kit-web"), one(manifests, "Job", "flask-kit-migrate")
    settings = one(manifests, "ConfigMap", "flask-kit-settings")["data"]
    (mount,) = [m["mountPath"] for m in container(web)["volumeMounts"] if m["name"] == "secrets"]
    (secret,) = [v["secret"] for v in pod_spec(web)["volumes"] if "secret" in v]

    for name, value in compose["web"]["environment"].items():
        if name.endswith("_FILE"):
            assert settings[name] == f"{mount}/{Path(value).name}", name
        elif name == "WEB_CONCURRENCY":
            assert name not in settings, "from the CPU limit (test_workers_and_resources_follow_composes_limits)"
        elif value in ("", None):
            assert name not in settings, f"{name}: empty under Compose, so unset here"
        else:
            assert settings.get(name) == value, name
    assert set(settings) - set(compose["web"]["environment"]) == {"DB_POOL_SIZE", "WEB_REPLICAS", "WEB_ROLLOUT_SURGE"}
    # the mounted keys are exactly the files the settings name
    assert sorted(item["path"] for item in secret["items"]) == \
        sorted(Path(v).name for k, v in settings.items() if k.endswith("_FILE"))
    assert compose["migrate"]["environment"] == compose["web"]["environment"]
    # the Job: the same settings and secret files; no Gunicorn, so no heartbeat directory
    for part in ("envFrom", "volumeMounts"):
        assert container(job)[part] == [m for m in container(web)[part] if m.get("name") != "shm"], part
    assert pod_spec(job)["volumes"] == [v for v in pod_spec(web)["volumes"] if v["name"] != "shm"]


def test_the_migration_job_runs_composes_command_from_webs_image(manifests):
    web, job = one(manifests, "Deployment", "flask-kit-web"), one(manifests, "Job", "flask-kit-migrate")
    settings = one(manifests, "ConfigMap", "flask-kit-settings")["data"]
    compose = model(DEV)["services"]

    # args, not command: the image's entrypoint still waits for Postgres first
    assert container(job)["args"] == compose["migrate"]["command"] and "command" not in container(job)
    assert container(job)["image"] == container(web)["image"]
    assert pod_spec(job)["restartPolicy"] == "Never" and job["spec"]["backoffLimit"] == 0
    assert job["spec"]["activeDeadlineSeconds"] > 2 * int(settings["WAIT_TIMEOUT"])
    assert "readinessProbe" not in container(job), "nothing listens in the migration"


# --- the edge -------------------------------------------------------------------------------------

def nginx_security_headers() -> dict[str, str]:
    snippet = (REPO / "nginx" / "snippets" / "security-headers.conf").read_text()
    return dict(re.findall(r'^add_header ([\w-]+) "([^"]*)" always;$', snippet, re.M))


def test_the_ingresses_carry_nginxs_limits_timeouts_and_headers(manifests):
    main, api = one(manifests, "Ingress", "flask-kit-web"), one(manifests, "Ingress", "flask-kit-web-api")
    service = one(manifests, "Service", "flask-kit-web")
    headers = one(manifests, "ConfigMap", "flask-kit-security-headers")
    nginx_env = model(DEV)["services"]["nginx"]["environment"]
    proxy_conf = (REPO / "nginx" / "snippets" / "proxy.conf").read_text()
    prefix = "nginx.ingress.kubernetes.io/"
    annotations = api["metadata"]["annotations"]

    # the same edge for both, but /api/'s rate limit, and one certificate request
    only_api = {prefix + "limit-rps", prefix + "limit-burst-multiplier"}
    assert {k: v for k, v in annotations.items() if k not in only_api} == \
        {k: v for k, v in main["metadata"]["annotations"].items() if k != "cert-manager.io/cluster-issuer"}
    assert main["metadata"]["annotations"]["cert-manager.io/cluster-issuer"]
    assert "cert-manager.io/cluster-issuer" not in annotations
    for ingress in (main, api):
        hosts = {rule["host"] for rule in ingress["spec"]["rules"]}
        assert ingress["spec"]["tls"] == [{"hosts": sorted(hosts), "secretName": "flask-kit-tls"}]
        assert not [host for host in hosts if host.endswith(".invalid")], "the overlay names the site"
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                assert path["backend"]["service"]["name"] == service["metadata"]["name"]
                assert path["backend"]["service"]["port"]["name"] in {p["name"] for p in service["spec"]["ports"]}
    assert {p["path"] for r in api["spec"]["rules"] for p in r["http"]["paths"]} == {"/api/"}
    # nginx's values: body size (the app's MAX_CONTENT_LENGTH), timeouts, retries, limits
    assert annotations[prefix + "proxy-body-size"] == "1m"
    assert quantity("1Mi") == load_config({"APP_ENV": "testing", "DATABASE_URL": "sqlite://"})["MAX_CONTENT_LENGTH"]
    assert f"proxy_read_timeout {annotations[prefix + 'proxy-read-timeout']}s;" in proxy_conf
    assert f"proxy_next_upstream {annotations[prefix + 'proxy-next-upstream']};" in proxy_conf
    assert f"proxy_next_upstream_tries {annotations[prefix + 'proxy-next-upstream-tries']};" in proxy_conf
    assert annotations[prefix + "limit-connections"] == nginx_env["NGINX_CONN_LIMIT"]
    assert f"{annotations[prefix + 'limit-rps']}r/s" == nginx_env["NGINX_API_RATE"]
    rps, multiplier = int(annotations[prefix + "limit-rps"]), int(annotations[prefix + "limit-burst-multiplier"])
    assert rps * multiplier == int(nginx_env["NGINX_API_BURST"])
    # the headers nginx adds, but HSTS (the controller's own); the annotation names their namespace
    assert headers["data"] == {k: v for k, v in nginx_security_headers().items() if k != "Strict-Transport-Security"}
    assert annotations[prefix + "custom-headers"] == \
        f"{headers['metadata']['namespace']}/{headers['metadata']['name']}"


# --- the guide ------------------------------------------------------------------------------------

def test_the_guides_commands_match_the_manifests(manifests):
    web, job = one(manifests, "Deployment", "flask-kit-web"), one(manifests, "Job", "flask-kit-migrate")
    (secret,) = [v["secret"] for v in pod_spec(web)["volumes"] if "secret" in v]
    namespace = web["metadata"]["namespace"]
    headers = one(manifests, "ConfigMap", "flask-kit-security-headers")["data"]

    # the Secret the guide creates holds exactly the keys the pods mount
    created = re.search(r"kubectl -n (\S+) create secret generic (\S+) ((?:\\\n|.)*?)\n(?!  )", SCALING)
    assert created.group(1) == namespace and created.group(2) == secret["secretName"]
    assert sorted(re.findall(r"--from-file=(\w+)=", created.group(3))) == sorted(i["key"] for i in secret["items"])
    # the first apply of a release selects everything but web's rollout, the Job included
    key, value = re.search(r'kubectl apply -k "\$overlay" -l \'([\w./-]+)!=([\w-]+)\'', SCALING).groups()
    excluded = [o for o in manifests if o["metadata"].get("labels", {}).get(key) == value]
    assert excluded == [web] and job["metadata"]["labels"].get(key) != value
    assert f"delete job {job['metadata']['name']} " in SCALING and f"kubectl -n {namespace} " in SCALING
    # the controller setting the guide gives allows every header the Ingresses send
    allowed = re.search(r"^global-allowed-response-headers: (\S+)$", SCALING, re.M).group(1).split(",")
    assert sorted(allowed) == sorted(headers)
