"""Pod Security Standards: every pod the charts render meets the `restricted` profile, which the
Pulumi program then enforces on both namespaces (components/mlflow_releases.py, issue 10.4).

The checks are the profile's, as the Kubernetes documentation lists them
(https://kubernetes.io/docs/concepts/security/pod-security-standards/), baseline ones included: a
rejection by the admission controller would surface only on the cluster, as a failed `pulumi up`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from components.chart_values import project_values, setup_values
from tests import chart_render as cr

RESTRICTED_VOLUMES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected",
    "secret",
}  # fmt: skip
SAFE_SYSCTLS = {
    "kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
}  # fmt: skip


def restricted_violations(pod: dict) -> list[str]:
    """What in `pod` (a pod spec) the `restricted` profile refuses; empty when it is admitted."""
    found = []
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(field):
            found.append(f"{field} is set")
    context = pod.get("securityContext") or {}
    if (context.get("windowsOptions") or {}).get("hostProcess"):
        found.append("hostProcess")
    for sysctl in context.get("sysctls") or []:
        if sysctl["name"] not in SAFE_SYSCTLS:
            found.append(f"unsafe sysctl {sysctl['name']}")
    for volume in pod.get("volumes") or []:
        kinds = set(volume) - {"name"}
        if not kinds <= RESTRICTED_VOLUMES:
            found.append(f"volume {volume['name']} of type {sorted(kinds)}")
    pod_non_root = context.get("runAsNonRoot") is True
    pod_seccomp = (context.get("seccompProfile") or {}).get("type")
    if context.get("runAsUser") == 0:
        found.append("pod runAsUser 0")
    containers = [
        *(pod.get("initContainers") or []),
        *pod["containers"],
        *(pod.get("ephemeralContainers") or []),
    ]
    for container in containers:
        name = container["name"]
        security = container.get("securityContext") or {}
        if security.get("privileged"):
            found.append(f"{name}: privileged")
        if security.get("allowPrivilegeEscalation") is not False:
            found.append(f"{name}: allowPrivilegeEscalation is not false")
        capabilities = security.get("capabilities") or {}
        if "ALL" not in (capabilities.get("drop") or []):
            found.append(f"{name}: capabilities do not drop ALL")
        if set(capabilities.get("add") or []) - {"NET_BIND_SERVICE"}:
            found.append(f"{name}: adds capabilities {capabilities['add']}")
        if not (
            security.get("runAsNonRoot") is True or (pod_non_root and security.get("runAsNonRoot") is None)
        ):
            found.append(f"{name}: runAsNonRoot is not true")
        if security.get("runAsUser") == 0:
            found.append(f"{name}: runAsUser 0")
        seccomp = (security.get("seccompProfile") or {}).get("type") or pod_seccomp
        if seccomp not in ("RuntimeDefault", "Localhost"):
            found.append(f"{name}: seccompProfile {seccomp!r}")
        if security.get("procMount", "Default") != "Default":
            found.append(f"{name}: procMount")
        for port in container.get("ports") or []:
            if port.get("hostPort"):
                found.append(f"{name}: hostPort {port['hostPort']}")
    return found


def _renders(helm_bin: str, tmp_dir: Path) -> dict[str, list[dict]]:
    renders = {
        f"setup:{name}": cr.render(helm_bin, cr.SETUP_CHART, cr.SETUP_RELEASE, setup_values(ctx), tmp_dir)
        for name, ctx in cr.SETUP_CONTEXTS.items()
    }
    for run_name, run in cr.RUNS.items():
        for pool in (False, True):
            values = project_values(cr.project_context(run, pool))
            renders[f"run:{run_name}:{pool}"] = cr.render(
                helm_bin, cr.PROJECT_CHART, run.name, values, tmp_dir
            )
    return renders


@pytest.fixture(scope="module")
def renders(helm_bin, tmp_path_factory) -> dict[str, list[dict]]:
    return _renders(helm_bin, tmp_path_factory.mktemp("pss"))


def test_every_rendered_pod_meets_restricted(renders):
    checked = set()
    for name, objects in renders.items():
        for obj, pod in cr.pod_specs(objects):
            assert restricted_violations(pod) == [], f"{name}: {obj['kind']}/{obj['metadata']['name']}"
            checked.add((obj["kind"], "tls" in [c["name"] for c in pod["containers"]]))
    # The tracking Deployment with and without the TLS terminator, MySQL, the CronJobs, the helm test
    # pod, and the run Jobs.
    assert checked == {
        ("Deployment", False),
        ("Deployment", True),
        ("StatefulSet", False),
        ("CronJob", False),
        ("Pod", False),
        ("Job", False),
    }


@pytest.mark.parametrize(
    "change, violation",
    [
        (
            lambda pod: pod["containers"][0]["securityContext"].pop("allowPrivilegeEscalation"),
            "allowPrivilegeEscalation",
        ),
        (
            lambda pod: pod["containers"][0]["securityContext"].update(
                capabilities={"add": ["NET_ADMIN"], "drop": ["ALL"]}
            ),
            "adds capabilities",
        ),
        (lambda pod: pod["volumes"].append({"name": "host", "hostPath": {"path": "/"}}), "hostPath"),
        (lambda pod: pod.update(hostNetwork=True), "hostNetwork"),
        (lambda pod: pod["containers"][0]["securityContext"].update(runAsNonRoot=False), "runAsNonRoot"),
        (lambda pod: pod["securityContext"].update(seccompProfile={"type": "Unconfined"}), "seccompProfile"),
    ],
    ids=["escalation", "capability", "hostPath", "hostNetwork", "root", "unconfined"],
)
def test_the_check_catches_what_restricted_refuses(renders, change, violation):
    import copy

    [(_, pod)] = [
        (obj, pod)
        for obj, pod in cr.pod_specs(renders["setup:private"])
        if obj["kind"] == "Deployment" and obj["metadata"]["name"].endswith("-tracking")
    ]
    pod = copy.deepcopy(pod)
    change(pod)
    assert any(violation in v for v in restricted_violations(pod)), restricted_violations(pod)


# --- ephemeral storage (issue 18.6) ----------------------------------------------------------------


def _bytes(quantity: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
    return int(quantity[:-2]) * units[quantity[-2:]] if quantity[-2:] in units else int(quantity)


def scratch_violations(pod: dict) -> list[str]:
    """Scratch space a pod may fill without having asked for it: a disk-backed emptyDir without a size
    limit, a container whose `ephemeral-storage` request is below the size limits of the emptyDirs it
    mounts (or whose limit is below its request), a pod whose effective request (the larger of its
    biggest init container and its containers' sum) is below all of them. In-memory volumes count as
    memory, not here."""
    found = []
    scratch = {}
    for volume in pod.get("volumes") or []:
        empty = volume.get("emptyDir")
        if empty is None or empty.get("medium") == "Memory":
            continue
        if "sizeLimit" not in empty:
            found.append(f"emptyDir {volume['name']} has no sizeLimit")
            continue
        scratch[volume["name"]] = _bytes(str(empty["sizeLimit"]))

    def request(container: dict) -> int:
        value = ((container.get("resources") or {}).get("requests") or {}).get("ephemeral-storage")
        return _bytes(value) if value else 0

    for container in cr.containers(pod):
        mounted = {m["name"] for m in container.get("volumeMounts") or []} & set(scratch)
        need = sum(scratch[name] for name in mounted)
        if request(container) < need:
            found.append(f"{container['name']}: requests {request(container)} B, mounts {need} B of scratch")
        limit = ((container.get("resources") or {}).get("limits") or {}).get("ephemeral-storage")
        if mounted and (limit is None or _bytes(limit) < request(container)):
            found.append(f"{container['name']}: ephemeral-storage limit {limit} below its request")
    effective = max(
        [sum(request(c) for c in pod["containers"]), *(request(c) for c in pod.get("initContainers") or [])]
    )
    if effective < sum(scratch.values()):
        found.append(f"pod requests {effective} B for {sum(scratch.values())} B of scratch volumes")
    return found


def test_every_scratch_volume_is_requested_as_ephemeral_storage(renders):
    checked = 0
    for name, objects in renders.items():
        for obj, pod in cr.pod_specs(objects):
            assert scratch_violations(pod) == [], f"{name}: {obj['kind']}/{obj['metadata']['name']}"
            checked += any("emptyDir" in v for v in pod.get("volumes") or [])
    # The tracking server, MySQL, the maintenance Jobs and CronJobs, the run Jobs.
    assert checked >= len(renders) * 2


@pytest.mark.parametrize(
    "change, violation",
    [
        (lambda pod: pod["volumes"].append({"name": "new", "emptyDir": {}}), "no sizeLimit"),
        (
            lambda pod: (
                pod["volumes"].append({"name": "new", "emptyDir": {"sizeLimit": "1Gi"}}),
                pod["containers"][0]["volumeMounts"].append({"name": "new", "mountPath": "/new"}),
            ),
            "mounts",
        ),
        (lambda pod: pod["containers"][0]["resources"]["limits"].pop("ephemeral-storage"), "limit"),
    ],
    ids=["unbounded", "unrequested", "no-limit"],
)
def test_the_scratch_check_catches_what_it_should(renders, change, violation):
    import copy

    [(_, pod)] = [
        (obj, pod)
        for obj, pod in cr.pod_specs(renders["setup:private"])
        if obj["kind"] == "Deployment" and obj["metadata"]["name"].endswith("-tracking")
    ]
    pod = copy.deepcopy(pod)
    assert scratch_violations(pod) == []
    change(pod)
    assert any(violation in v for v in scratch_violations(pod)), scratch_violations(pod)
