"""deploy/kubernetes: every manifest valid against the Kubernetes schemas
(kubernetes-validate ships them: no cluster, no network), and consistent with
the node it runs (its options, probes, drain, admission defaults)."""

from __future__ import annotations

import re
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from engine import defaults, options
from engine.secret_env import SECRET_ENV

DEPLOY = Path(__file__).resolve().parents[1] / "deploy" / "kubernetes"
KUBERNETES_VERSION = "1.30.0"  # the oldest minor still supported upstream when this was written
FORCED_EXIT_MARGIN_S = 5  # engine.cli: a node gives up this long after the drain deadline
WORKER_MEMORY_MIB = 31  # a WHIP worker's USS (README, benchmarks); plain RTP takes less
NODE_MEMORY_MIB = 256  # the node and its worker template

MANIFESTS = sorted(DEPLOY.rglob("*.yaml"))


def documents(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def resources() -> dict[tuple[str, str], dict]:
    return {(doc["kind"], doc["metadata"]["name"]): doc for path in MANIFESTS for doc in documents(path)}


@pytest.fixture(scope="module")
def statefulset() -> dict:
    return resources()[("StatefulSet", "recnode")]


@pytest.fixture(scope="module")
def container(statefulset) -> dict:
    [container] = statefulset["spec"]["template"]["spec"]["containers"]
    return container


def env_of(container: dict) -> dict[str, dict]:
    return {entry["name"]: entry for entry in container["env"]}


@pytest.mark.parametrize("path", MANIFESTS, ids=[str(p.relative_to(DEPLOY)) for p in MANIFESTS])
def test_every_manifest_is_valid_for_kubernetes(path):
    for doc in documents(path):
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_the_schemas_do_refuse_a_mistake(statefulset):
    """The check above can fail: a misspelt field is refused."""
    broken = yaml.safe_load(yaml.safe_dump(statefulset))
    broken["spec"]["template"]["spec"]["terminationGracePeriod"] = 60
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_every_variable_is_an_option_and_every_secret_comes_from_the_secret(container):
    known = {option.env for option in options.SERVE_OPTIONS}
    env = env_of(container)
    assert {name for name in env if name.startswith("RECNODE_")} <= known
    for name in SECRET_ENV:
        if name in env:
            assert "value" not in env[name] and env[name]["valueFrom"]["secretKeyRef"]["name"] == "recnode", name
    assert "RECNODE_STORE_URL" in env and "RECNODE_SERVER_SECRET" in env
    example = resources()[("Secret", "recnode")]["stringData"]
    used = {entry["valueFrom"]["secretKeyRef"]["key"] for entry in env.values()
            if "secretKeyRef" in entry.get("valueFrom", {})}
    assert used <= set(example)


def test_each_value_passes_its_options_check(container):
    """What the manifest sets is what the node would accept (a literal, not from the downward API)."""
    by_env = {option.env: option for option in options.SERVE_OPTIONS}
    for name, entry in env_of(container).items():
        if name in by_env and "value" in entry and "$(" not in entry["value"]:
            option = by_env[name]
            option.check([entry["value"]] if option.kind == "list" else entry["value"])


def test_a_replaced_pod_keeps_its_identity_its_volume_and_finishes_its_drain(statefulset, container):
    spec = statefulset["spec"]
    env = env_of(container)
    # identity: the pod's name (under hostNetwork the host name is the host's)
    assert env["RECNODE_NODE_ID"]["value"] == "$(POD_NAME)"
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    # its data directory (spool) on the pod's own claim
    [claim] = spec["volumeClaimTemplates"]
    mounts = {mount["name"]: mount["mountPath"] for mount in container["volumeMounts"]}
    assert mounts[claim["metadata"]["name"]] == env["RECNODE_DATA_DIR"]["value"]
    # drain: SIGTERM, then RECNODE_DRAIN_TIMEOUT, then the node's own forced exit, all before SIGKILL
    drain = options.seconds(env["RECNODE_DRAIN_TIMEOUT"]["value"])
    assert spec["template"]["spec"]["terminationGracePeriodSeconds"] > drain + FORCED_EXIT_MARGIN_S


def test_probes_ask_the_nodes_own_endpoints(container):
    [port] = container["ports"]
    assert port["containerPort"] == int(env_of(container)["RECNODE_PORT"]["value"])
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": port["name"]}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": port["name"]}
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] > defaults.STORE_CONNECT_TIMEOUT_S


def _quantity(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(m|Mi|Gi)?", str(text)).groups()
    return float(number) * {None: 1, "m": 1e-3, "Mi": 1, "Gi": 1024}[unit]


def test_resources_match_the_admission_defaults(container):
    """Admission takes 40 streams per core of the CPU quota (limits.cpu); the
    memory asked for holds that many workers."""
    requests, limits = container["resources"]["requests"], container["resources"]["limits"]
    assert requests == limits  # Guaranteed: the quota admission counts is the CPU the pod is given
    cores = _quantity(limits["cpu"])
    streams = int(defaults.MAX_STREAMS_PER_CORE * cores)
    assert _quantity(limits["memory"]) >= streams * WORKER_MEMORY_MIB + NODE_MEMORY_MIB
    assert "RECNODE_MAX_STREAMS" not in env_of(container)  # the default, from the quota


def test_media_ports_are_the_hosts_and_answers_carry_its_address(statefulset, container):
    pod = statefulset["spec"]["template"]["spec"]
    env = env_of(container)
    assert pod["hostNetwork"] is True and pod["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert env["RECNODE_ADVERTISED_ADDRESS"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.hostIP"
    anti = pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert anti[0]["topologyKey"] == "kubernetes.io/hostname"


def test_services_and_budget_select_the_nodes(statefulset):
    labels = statefulset["spec"]["template"]["metadata"]["labels"]
    assert statefulset["spec"]["selector"]["matchLabels"].items() <= labels.items()
    found = resources()
    headless = found[("Service", statefulset["spec"]["serviceName"])]
    assert headless["spec"]["clusterIP"] == "None"
    api = found[("Service", "recnode")]
    budget = found[("PodDisruptionBudget", "recnode")]
    for selector in (headless["spec"]["selector"], api["spec"]["selector"], budget["spec"]["selector"]["matchLabels"]):
        assert selector.items() <= labels.items()
    assert budget["spec"]["maxUnavailable"] == 1
