"""The public endpoint's TLS terminator as charts/mlflow_setup renders it (issue 10.1).

Rendered with the values components/chart_values.py produces, for public and private exposure: the
sidecar runs images/tls-proxy/Caddyfile with every setting that file reads, certificates persist on the
shared claim the program makes outside the release (or, installed by hand, the chart's own), the public
Services and the NetworkPolicy admit what the security review asks for. The same Caddyfile and env run
for real in tests/e2e/test_tls_e2e.py.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from components import chart_values
from components.chart_values import setup_values
from tests import chart_render as cr

CADDYFILE = cr.REPO_ROOT / "images" / "tls-proxy" / "Caddyfile"
PUBLIC = cr.SETUP_CONTEXTS["public-one-range"]
# The tracking pod's user, which the program leaves at the chart's default: the certificate volume's files
# appear owned by it (components/certificate_volume.py, tests/test_certificate_storage.py).
TRACKING_RUN_AS_USER = yaml.safe_load((cr.SETUP_CHART / "values.yaml").read_text())["tracking"]["runAsUser"]


@pytest.fixture(scope="module")
def tmp_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tls-charts")


def _render(helm_bin: str, tmp_dir: Path, ctx) -> list[dict]:
    return cr.render(helm_bin, cr.SETUP_CHART, cr.SETUP_RELEASE, setup_values(ctx), tmp_dir)


@pytest.fixture(scope="module")
def public(helm_bin, tmp_dir) -> list[dict]:
    return _render(helm_bin, tmp_dir, PUBLIC)


def _pod(objects: list[dict]) -> dict:
    return cr.one(objects, "Deployment", chart_values.TRACKING_SERVICE)["spec"]["template"]["spec"]


def _container(objects: list[dict], name: str) -> dict:
    return next(c for c in _pod(objects)["containers"] if c["name"] == name)


def caddyfile_variables() -> set[str]:
    """Every `{$NAME}` the Caddyfile reads (Caddy substitutes them before parsing)."""
    return set(re.findall(r"\{\$([A-Z0-9_]+)\}", CADDYFILE.read_text()))


def test_sidecar_sets_every_variable_the_caddyfile_reads(public):
    tls = _container(public, "tls")
    env = {e["name"]: e["value"] for e in tls["env"]}
    assert caddyfile_variables() <= set(env), caddyfile_variables() - set(env)
    ports = {p["name"]: p["containerPort"] for p in tls["ports"]}
    server_port = {p["name"]: p["containerPort"] for p in _container(public, "mlflow")["ports"]}["http"]
    assert env["MLFLOW_AKS_HOSTNAME"] == cr.PUBLIC_HOSTNAME
    assert env["MLFLOW_AKS_ACME_DIRECTORY"] == chart_values.LETS_ENCRYPT_DIRECTORY
    assert env["MLFLOW_AKS_UPSTREAM"] == f"127.0.0.1:{server_port}"
    assert (env["MLFLOW_AKS_HTTP_PORT"], env["MLFLOW_AKS_HTTPS_PORT"]) == (
        str(ports["tls-http"]),
        str(ports["tls-https"]),
    )
    # Unprivileged ports: no capability, no sysctl; the Services map 80 and 443 onto them.
    assert min(ports.values()) >= 1024
    assert int(env["MLFLOW_AKS_HSTS_MAX_AGE"]) >= 31536000
    assert tls["command"] == ["caddy", "run", "--config", "/etc/caddy/Caddyfile", "--adapter", "caddyfile"]
    assert tls["image"] == cr.TLS_IMAGE


def _storage_claim(objects: list[dict]) -> str:
    """The claim the terminator keeps certificates, keys and the ACME account on (MLFLOW_AKS_TLS_STORAGE)."""
    tls = _container(objects, "tls")
    env = {e["name"]: e["value"] for e in tls["env"]}
    [mount] = [m for m in tls["volumeMounts"] if m["mountPath"] == env["MLFLOW_AKS_TLS_STORAGE"]]
    [volume] = [v for v in _pod(objects)["volumes"] if v["name"] == mount["name"]]
    return volume["persistentVolumeClaim"]["claimName"]


def test_certificates_persist_on_the_claim_made_outside_the_release(public):
    """The program's claim (components/certificate_volume.py) is mounted, and the release makes none: a
    rollback, an uninstall or a switch to private deletes only what the release made."""
    assert _storage_claim(public) == PUBLIC.tls_existing_claim == cr.TLS_CLAIM
    claims = cr.of_kind(public, "PersistentVolumeClaim")
    assert [c["metadata"]["name"] for c in claims if c["metadata"]["namespace"] == cr.NAMESPACE] == []
    assert cr.TLS_CLAIM not in {c["metadata"]["name"] for c in claims}
    assert cr.one(public, "Deployment", chart_values.TRACKING_SERVICE)["spec"]["replicas"] >= 2
    # The share's files appear owned by this user and group (the volume's mount options).
    pod, tls = _pod(public), _container(public, "tls")
    assert tls["securityContext"]["runAsUser"] == TRACKING_RUN_AS_USER
    assert pod["securityContext"]["runAsGroup"] == pod["securityContext"]["fsGroup"] == TRACKING_RUN_AS_USER
    # Caddy's own scratch is not the root filesystem (read-only) and not the certificate store.
    env = {e["name"]: e["value"] for e in tls["env"]}
    scratch = {m["mountPath"] for m in tls["volumeMounts"]} - {env["MLFLOW_AKS_TLS_STORAGE"]}
    assert scratch == {"/tmp"}
    assert env["XDG_CONFIG_HOME"].startswith("/tmp/") and env["XDG_DATA_HOME"].startswith("/tmp/")
    assert tls["securityContext"]["readOnlyRootFilesystem"] is True


def test_without_an_existing_claim_the_chart_makes_one_every_replica_shares(helm_bin, tmp_dir):
    """`helm install` by hand: a ReadWriteMany claim of the release's own (gone with the release)."""
    ctx = cr.SETUP_CONTEXTS["public-chart-tls-claim"]
    assert not ctx.tls_existing_claim
    objects = _render(helm_bin, tmp_dir, ctx)
    claim = cr.one(objects, "PersistentVolumeClaim", _storage_claim(objects))
    assert claim["metadata"]["namespace"] == cr.NAMESPACE
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    assert claim["spec"]["storageClassName"] == "azurefile-csi"


def test_acme_directory_comes_from_config(helm_bin, tmp_dir):
    staging = "https://acme-staging-v02.api.letsencrypt.org/directory"
    objects = _render(helm_bin, tmp_dir, replace(PUBLIC, acme_directory=staging))
    env = {e["name"]: e["value"] for e in _container(objects, "tls")["env"]}
    assert env["MLFLOW_AKS_ACME_DIRECTORY"] == staging


def test_private_exposure_has_no_terminator_and_nothing_public(helm_bin, tmp_dir):
    objects = _render(helm_bin, tmp_dir, cr.SETUP_CONTEXTS["private"])
    assert [c["name"] for c in _pod(objects)["containers"]] == ["mlflow"]
    assert [s for s in cr.of_kind(objects, "Service") if s["spec"]["type"] != "ClusterIP"] == []
    claims = {c["metadata"]["name"] for c in cr.of_kind(objects, "PersistentVolumeClaim")}
    assert not any(name.endswith("-tls") for name in claims)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda v: v["exposure"].update(hostname=""), "hostname"),
        (lambda v: v["exposure"]["publicIP"].update(name=""), "publicIP"),
        (lambda v: v["tls"]["image"].update(digest=""), "digest"),
        (lambda v: v["tls"].update(acmeDirectory="http://acme.example/directory"), "acmeDirectory"),
        (lambda v: v["tls"].update(hstsMaxAgeSeconds=60), "hstsMaxAgeSeconds"),
        (lambda v: v["tls"]["storage"].update(existingClaim="TLS_claim"), "existingClaim"),
    ],
    ids=[
        "no hostname",
        "no public IP",
        "no image digest",
        "ACME over plain HTTP",
        "HSTS of a minute",
        "claim name not DNS-1123",
    ],
)
def test_schema_refuses_an_incomplete_public_endpoint(helm_bin, tmp_dir, change, message):
    values = setup_values(PUBLIC)
    change(values)
    result = cr.template(helm_bin, cr.SETUP_CHART, cr.SETUP_RELEASE, values, tmp_dir)
    assert result.returncode != 0
    assert message in result.stderr


@pytest.mark.parametrize(
    "field", ["public_hostname", "public_ip_name", "public_ip_resource_group", "tls_image"]
)
def test_values_refuse_a_public_endpoint_without_its_parts(field):
    with pytest.raises(ValueError, match=field):
        setup_values(replace(PUBLIC, **{field: ""}))


def test_tls_image_must_come_from_the_stack_registry():
    with pytest.raises(ValueError, match="not in the registry"):
        setup_values(replace(PUBLIC, tls_image=f"docker.io/library/caddy@sha256:{'ab' * 32}"))


@pytest.mark.parametrize("name", ["public-one-range", "private"])
def test_notes_give_the_url_users_reach(helm_bin, tmp_dir, name):
    """NOTES.txt as `helm install` prints it."""
    text = cr.notes(helm_bin, setup_values(cr.SETUP_CONTEXTS[name]), tmp_dir, name)
    assert f"Run Jobs go to namespace {cr.RUNS_NAMESPACE}" in text
    if name == "private":
        assert "port-forward service/mlflow-tracking" in text and "https://" not in text
    else:
        assert f"https://{cr.PUBLIC_HOSTNAME}" in text
        assert "203.0.113.0/24" in text and "cloudapp.azure.com:" not in text
