"""Single sign-on as the charts render it (issue 13): `tracking.auth.mode: oidc` in mlflow_setup and
`tracking.auth: serviceAccountToken` in mlflow_project.

The server runs the mlflow-oidc-auth app with every setting it needs from the chart (secrets by
reference only), the session cookie Secure/HttpOnly/SameSite, groups by id, bearer tokens held to the
same groups, run Jobs accepted only from the runs namespace with the audience their projected token
carries; the sign-in database is migrated and backed up with the others; the runs namespace holds no
password; and basic mode renders as before. The same env runs for real in tests/e2e/test_sign_in_e2e.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import kubernetes_validate
import pytest

from components import chart_values
from components.chart_values import project_values, setup_values
from local.chart import deep_merge
from tests import chart_render as cr
from tests.test_pod_security import restricted_violations

TENANT = "8f2c54a1-0d7e-4c3b-9a51-2b6f1e9d7c40"
ISSUER = f"https://login.microsoftonline.com/{TENANT}/v2.0"
CLIENT_ID = "3c1d9e57-7a42-4e0b-8f6d-91a2b4c5d6e7"
CLIENT_SECRET = "s3cr3t~sign-in~client~value"
USERS = "0b6e2f4a-1c3d-4e5f-8a9b-0c1d2e3f4a5b"
ADMINS = "7d8e9f0a-1b2c-4d3e-9f4a-5b6c7d8e9f0a"
AKS_ISSUER = "https://westeurope.oic.prod-aks.azure.com/tenant/cluster-guid/"
SIGN_IN = {
    "tracking": {
        "auth": {
            "mode": "oidc",
            "oidc": {
                "discoveryUrl": f"{ISSUER}/.well-known/openid-configuration",
                "issuer": ISSUER,
                "clientId": CLIENT_ID,
                "clientSecret": CLIENT_SECRET,
                "allowedGroups": [USERS],
                "adminGroups": [ADMINS],
                "runTokens": {"issuer": AKS_ISSUER},
            },
        }
    }
}


@pytest.fixture(scope="module")
def tmp_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("sign-in-charts")


def _values(ctx_name: str, overlay: dict | None = None) -> dict:
    return deep_merge(setup_values(cr.SETUP_CONTEXTS[ctx_name]), overlay if overlay is not None else SIGN_IN)


def _render(helm_bin: str, tmp_dir: Path, values: dict) -> list[dict]:
    return cr.render(helm_bin, cr.SETUP_CHART, cr.SETUP_RELEASE, values, tmp_dir)


@pytest.fixture(scope="module")
def public(helm_bin, tmp_dir) -> list[dict]:
    return _render(helm_bin, tmp_dir, _values("public-one-range"))


@pytest.fixture(scope="module")
def private(helm_bin, tmp_dir) -> list[dict]:
    return _render(helm_bin, tmp_dir, _values("private"))


def _pod(objects: list[dict]) -> dict:
    return cr.one(objects, "Deployment", chart_values.TRACKING_SERVICE)["spec"]["template"]["spec"]


def _server(objects: list[dict]) -> dict:
    return next(c for c in _pod(objects)["containers"] if c["name"] == "mlflow")


def _env(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env") or []}


def _secret_key(entry: dict) -> str:
    return entry["valueFrom"]["secretKeyRef"]["key"]


def test_server_runs_the_sign_in_app_with_its_settings(public):
    server = _server(public)
    args = server["args"]
    assert args[args.index("--app-name") + 1] == "oidc-auth"
    env = _env(server)
    plain = {name: e["value"] for name, e in env.items() if "value" in e}
    assert plain["OIDC_DISCOVERY_URL"] == f"{ISSUER}/.well-known/openid-configuration"
    assert plain["OIDC_ISSUER"] == ISSUER and plain["OIDC_CLIENT_ID"] == CLIENT_ID
    # Entra ID v2 tokens for the application's own scope carry its client id as audience.
    assert plain["OIDC_AUDIENCE"] == CLIENT_ID
    assert plain["OIDC_REDIRECT_URI"] == f"https://{cr.PUBLIC_HOSTNAME}/callback"
    assert plain["OIDC_GROUP_NAME"] == USERS and plain["OIDC_ADMIN_GROUP_NAME"] == ADMINS
    # The UPN names the user in ID and access tokens alike; Entra's optional, unverified email only second.
    assert plain["OIDC_USERNAME_FIELD"] == "preferred_username,email"
    assert plain["DEFAULT_MLFLOW_PERMISSION"] == "READ"
    # Signing keys cached for an hour: an outage of the provider that long leaves issued tokens valid.
    assert plain["OIDC_JWKS_CACHE_TTL_SECONDS"] == "3600"
    # The session cookie: HTTPS only, out of scripts' reach, not sent cross-site.
    assert plain["SESSION_COOKIE_SECURE"] == "true" and plain["SESSION_COOKIE_SAMESITE"] == "lax"
    assert int(plain["SESSION_COOKIE_MAX_AGE_SECONDS"]) == 43200
    # Bearer tokens create users and are held to the same groups as a browser sign-in.
    assert (
        plain["OIDC_PROVISION_ON_BEARER_AUTH"] == "true" and plain["OIDC_TRUST_BEARER_GROUP_CLAIMS"] == "true"
    )
    # Secrets only by reference.
    assert _secret_key(env["OIDC_CLIENT_SECRET"]) == "oidc-client-secret"
    assert _secret_key(env["OIDC_USERS_DB_URI"]) == "oidc-users-db-uri"
    assert _secret_key(env["SECRET_KEY"]) == "flask-secret-key"
    rendered = json.dumps(public)
    assert rendered.count(CLIENT_SECRET) == 1  # in the tracking Secret, nowhere else


def test_the_secret_holds_the_client_secret_and_the_sign_in_database(public):
    secret = cr.secret_data(cr.one(public, "Secret", f"{chart_values.TRACKING_SERVICE}"))
    assert secret["oidc-client-secret"] == CLIENT_SECRET
    uri = secret["oidc-users-db-uri"]
    assert uri.startswith("mysql+pymysql://") and uri.endswith("/mlflow_oidc")
    assert secret["backend-store-uri"].rsplit("/", 1)[0] == uri.rsplit("/", 1)[0]  # same server and user


def test_run_tokens_are_accepted_only_from_the_runs_namespace_with_their_audience(public):
    providers = json.loads(_env(_server(public))["AUTH_PROVIDERS"]["value"])
    people, runs = providers
    assert people == {
        "id": "default", "type": "oidc", "discovery_url": f"{ISSUER}/.well-known/openid-configuration",
        "client_id": CLIENT_ID, "audience": CLIENT_ID, "issuer": ISSUER,
    }  # fmt: skip
    assert runs == {
        "id": "runs", "type": "k8s", "issuer": AKS_ISSUER, "audience": "mlflow-tracking",
        "namespace_allowlist": [cr.RUNS_NAMESPACE],
        # AKS publishes the issuer's discovery document anonymously.
        "discovery_url": AKS_ISSUER + ".well-known/openid-configuration",
    }  # fmt: skip


def _jobs(objects: list[dict]) -> dict:
    deployment = cr.one(objects, "Deployment", f"{chart_values.FULLNAME}-jobs")
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    return container


def test_judges_gateway_calls_count_as_the_gateway_account_with_the_servers_token(helm_bin, tmp_dir, public):
    """The serving pods accept the internal gateway token as `gatewayAccount` (serve.py change 11), and
    the jobs pod sends it with that name; both read the token from the tracking Secret."""
    server, jobs = _env(_server(public)), _env(_jobs(public))
    assert server["MLFLOW_AKS_GATEWAY_ACCOUNT"]["value"] == "mlflow-jobs"
    assert jobs["MLFLOW_TRACKING_USERNAME"]["value"] == "mlflow-jobs"
    assert "MLFLOW_AKS_GATEWAY_ACCOUNT" not in jobs
    for env in (server, jobs):
        assert _secret_key(env["_MLFLOW_INTERNAL_GATEWAY_AUTH_TOKEN"]) == "gateway-token"
    assert _secret_key(jobs["MLFLOW_TRACKING_PASSWORD"]) == "gateway-token"
    # Another name reaches both; without jobs there is no token and no account.
    oidc = {**SIGN_IN["tracking"]["auth"]["oidc"], "gatewayAccount": "judges.team-a"}
    named = _render(
        helm_bin, tmp_dir, _values("public-one-range", {"tracking": {"auth": {"mode": "oidc", "oidc": oidc}}})
    )
    assert _env(_server(named))["MLFLOW_AKS_GATEWAY_ACCOUNT"]["value"] == "judges.team-a"
    assert _env(_jobs(named))["MLFLOW_TRACKING_USERNAME"]["value"] == "judges.team-a"
    off = _render(helm_bin, tmp_dir, deep_merge(_values("public-one-range"), {"jobs": {"enabled": False}}))
    assert not {"MLFLOW_AKS_GATEWAY_ACCOUNT", "_MLFLOW_INTERNAL_GATEWAY_AUTH_TOKEN"} & set(_env(_server(off)))


def test_private_exposure_signs_in_through_port_forward(private):
    env = _env(_server(private))
    assert env["OIDC_REDIRECT_URI"]["value"] == "http://localhost:5000/callback"


def test_the_runs_namespace_holds_no_password(public):
    in_runs = [
        o for o in public if o["metadata"].get("namespace") == cr.RUNS_NAMESPACE and o["kind"] == "Secret"
    ]
    # No Secret at all: not even the project share's mount key, which stays in the platform's namespace.
    assert in_runs == []
    [migrate] = _pod(public)["initContainers"]
    env = _env(migrate)
    assert "MLFLOW_RUN_PASSWORD" not in env
    assert _secret_key(env["OIDC_USERS_DB_URI"]) == "oidc-users-db-uri"


def test_backups_and_the_helm_test_cover_the_sign_in_mode(public):
    for cronjob in cr.of_kind(public, "CronJob"):
        [container] = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
        assert _secret_key(_env(container)["OIDC_USERS_DB_URI"]) == "oidc-users-db-uri", cronjob["metadata"]
    [test_pod] = [
        o for o in cr.of_kind(public, "Pod") if "helm.sh/hook" in o["metadata"].get("annotations", {})
    ]
    env = _env(test_pod["spec"]["containers"][0])
    # No password: the readiness identity (and telemetry off, as in every MLflow container).
    assert set(env) == {"MLFLOW_FLASK_SERVER_SECRET_KEY", "MLFLOW_DISABLE_TELEMETRY"}
    assert _secret_key(env["MLFLOW_FLASK_SERVER_SECRET_KEY"]) == "flask-secret-key"


def test_every_object_is_valid_and_every_pod_restricted(public, private):
    for obj in [*public, *private]:
        kubernetes_validate.validate(obj, cr.KUBERNETES_VERSION, strict=True)
    pods = list(cr.pod_specs([*public, *private]))
    assert len(pods) >= 8
    for owner, pod in pods:
        assert restricted_violations(pod) == [], owner["metadata"]["name"]


def test_basic_mode_renders_as_before(helm_bin, tmp_dir):
    basic = _render(helm_bin, tmp_dir, _values("public-one-range", {}))
    explicit = _render(
        helm_bin, tmp_dir, _values("public-one-range", {"tracking": {"auth": {"mode": "basic"}}})
    )
    assert basic == explicit
    server = _server(basic)
    assert server["args"][server["args"].index("--app-name") + 1] == "basic-auth"
    assert not [name for name in _env(server) if name.startswith(("OIDC_", "SESSION_", "AUTH_PROVIDERS"))]
    # Basic auth knows the internal gateway token itself: no gateway account; online scoring calls as admin.
    assert "MLFLOW_AKS_GATEWAY_ACCOUNT" not in _env(server)
    admin = _values("public-one-range", {})["tracking"]["auth"]["adminUsername"]
    assert _env(_jobs(basic))["MLFLOW_TRACKING_USERNAME"]["value"] == admin
    assert "oidc-client-secret" not in cr.secret_data(cr.one(basic, "Secret", chart_values.TRACKING_SERVICE))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"clientId": ""}, "tracking.auth.oidc.clientId is required"),
        ({"issuer": ""}, "tracking.auth.oidc.issuer is required"),
        ({"clientSecret": ""}, "tracking.auth.oidc.clientSecret is required"),
        ({"allowedGroups": []}, "allowedGroups must name at least one group"),
        ({"adminGroups": []}, "adminGroups must name at least one group"),
        ({"allowedGroups": ["a group, with a comma"]}, "allowedGroups"),
        ({"redirectUri": "https://elsewhere.example/oops"}, "redirectUri"),
        ({"scope": "email profile"}, "scope"),
        # Never a person's user name (theirs are UPNs), and the plugin's are lower case.
        ({"gatewayAccount": "judge@contoso.com"}, "gatewayAccount"),
        ({"gatewayAccount": "Judges"}, "gatewayAccount"),
    ],
)
def test_incomplete_sign_in_settings_are_refused(helm_bin, tmp_dir, change, message):
    values = _values(
        "public-one-range",
        {"tracking": {"auth": {"mode": "oidc", "oidc": {**SIGN_IN["tracking"]["auth"]["oidc"], **change}}}},
    )
    result = cr.template(helm_bin, cr.SETUP_CHART, cr.SETUP_RELEASE, values, tmp_dir)
    assert result.returncode != 0 and message in result.stderr, result.stderr


def test_notes_tell_people_how_to_sign_in(helm_bin, tmp_dir):
    text = cr.notes(helm_bin, _values("public-one-range"), tmp_dir, "sign-in")
    assert f"https://{cr.PUBLIC_HOSTNAME}" in text and "Single sign-on" in text
    assert f"--scope api://{CLIENT_ID}/user_impersonation" in text and "MLFLOW_TRACKING_TOKEN" in text
    assert "admin-password" not in text and "MLFLOW_TRACKING_PASSWORD" not in text


def test_one_extra_database_is_still_valid_but_not_for_sign_in(helm_bin, tmp_dir):
    """A values file from before the sign-in database (one extraDatabases entry) renders as before in basic
    mode; the sign-in mode names what it is missing."""
    one = {"mysql": {"auth": {"extraDatabases": ["mlflow_auth"]}}}
    basic = cr.template(helm_bin, cr.SETUP_CHART, cr.SETUP_RELEASE, _values("private", one), tmp_dir)
    assert basic.returncode == 0, basic.stderr
    sign_in = deep_merge(_values("private"), one)
    result = cr.template(helm_bin, cr.SETUP_CHART, cr.SETUP_RELEASE, sign_in, tmp_dir)
    assert result.returncode != 0 and "a second entry of mysql.auth.extraDatabases" in result.stderr


# ------------------------------------------------------------------------------ run Jobs


@pytest.fixture(scope="module")
def token_job(helm_bin, tmp_dir) -> dict:
    values = deep_merge(
        project_values(cr.project_context(cr.RUNS["train"], jobs_pool=False)),
        {"tracking": {"auth": "serviceAccountToken", "credentialsSecret": ""}},
    )
    return cr.one(cr.render(helm_bin, cr.PROJECT_CHART, "train", values, tmp_dir), "Job")


def test_run_job_presents_a_short_lived_token_for_the_server_only(token_job):
    pod = token_job["spec"]["template"]["spec"]
    [container] = pod["containers"]
    env = _env(container)
    assert env["MLFLOW_TRACKING_AUTH"]["value"] == "kubernetes"
    assert not {"MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN"} & set(env)
    # mlflow.user (getpass.getuser(), LOGNAME first) names the user the plugin signs this token in as.
    from mlflow_oidc_auth.kubernetes import USERNAME_TEMPLATE

    namespace, account = token_job["metadata"]["namespace"], pod["serviceAccountName"]
    assert env["LOGNAME"]["value"] == USERNAME_TEMPLATE.format(name=account, namespace=namespace)
    # No API token: the only token is the projected one, whose audience the API server refuses.
    assert pod["automountServiceAccountToken"] is False
    mount = next(m for m in container["volumeMounts"] if m["name"] == "tracking-token")
    assert mount == {
        "name": "tracking-token",
        "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
        "readOnly": True,
    }
    volume = next(v for v in pod["volumes"] if v["name"] == "tracking-token")
    [source] = volume["projected"]["sources"]
    assert source == {
        "serviceAccountToken": {"audience": "mlflow-tracking", "expirationSeconds": 3600, "path": "token"}
    }
    # MLflow's provider reads exactly that file.
    from mlflow.tracking.request_auth import kubernetes_request_auth_provider as provider

    assert (
        str(provider._SERVICE_ACCOUNT_TOKEN_PATH)
        == f"{mount['mountPath']}/{source['serviceAccountToken']['path']}"
    )
    kubernetes_validate.validate(token_job, cr.KUBERNETES_VERSION, strict=True)
    assert restricted_violations(pod) == []


def test_password_runs_still_need_their_credentials_secret(helm_bin, tmp_dir):
    values = deep_merge(
        project_values(cr.project_context(cr.RUNS["train"], jobs_pool=False)),
        {"tracking": {"credentialsSecret": ""}},
    )
    result = cr.template(helm_bin, cr.PROJECT_CHART, "train", values, tmp_dir)
    assert result.returncode != 0 and "credentialsSecret" in result.stderr
