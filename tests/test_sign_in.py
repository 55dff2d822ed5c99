"""Sign-in with Entra ID (`auth: entra`, issue 13) under Pulumi mocks: the application the program
registers, what the charts receive, the exports, and the settings that guard it; and that `auth: basic`
(the default) declares and renders what it did before.

Each configuration runs the whole program once in a fresh mock runtime (tests/pulumi_mocks.py). Expected
values come from the configuration, from other recorded resources (client id, scope id, secret) and from
Azure's documented constants, never from a recorded run.
"""

from __future__ import annotations

import copy
import dataclasses
from datetime import UTC, datetime
from typing import Any

import pytest
from pulumi_mocks import (
    DEPLOYING_USER_OBJECT_ID,
    OIDC_ISSUER_URL,
    TENANT_ID,
    ProgramRun,
    RecordingMocks,
    contains_secret,
    is_secret,
    plain,
    run_program,
)
from test_wiring_helm import helm_template

from components import chart_values
from components.password_expiry import PasswordExpiryProvider, end_date
from settings import SettingsError

APPLICATION = "azuread:index/application:Application"
SERVICE_PRINCIPAL = "azuread:index/servicePrincipal:ServicePrincipal"
IDENTIFIER_URI = "azuread:index/applicationIdentifierUri:ApplicationIdentifierUri"
PRE_AUTHORIZED = "azuread:index/applicationPreAuthorized:ApplicationPreAuthorized"
APP_PASSWORD = "azuread:index/applicationPassword:ApplicationPassword"
UUID = "random:index/randomUuid:RandomUuid"
EXPIRY = "pulumi-python:dynamic/mlflow-aks:PasswordExpiry"
RELEASE = "kubernetes:helm.sh/v3:Release"
SIGN_IN_TYPES = (IDENTIFIER_URI, PRE_AUTHORIZED, APP_PASSWORD, UUID)

# The Azure CLI's public client id (Microsoft's list of first-party application ids).
AZURE_CLI = "04b07795-8ddb-461a-bbee-02f9e1bf7b46"
DATA_SCIENTISTS = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
ML_ENGINEERS = "6c1a3e0b-27f4-4d8e-9b5a-1f0e2d3c4b5a"
PLATFORM_ADMINS = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"
TRAIN = {"name": "train-demo", "entryPoint": "train", "experiment": "demo", "parameters": {"C": 0.5}}
ENTRA = {
    "auth": "entra",
    # As pasted from the portal: upper case, and one twice. The token's groups claim is lower case.
    "entraAllowedGroups": [DATA_SCIENTISTS.upper(), ML_ENGINEERS, DATA_SCIENTISTS],
    "entraAdminGroups": [PLATFORM_ADMINS],
    "runs": [TRAIN],
}
CONFIGURATIONS: dict[str, dict[str, Any]] = {
    "entra-private": ENTRA,
    "entra-public": {
        **ENTRA,
        "exposure": "public",
        "allowedSourceRanges": ["203.0.113.0/24"],
        "namePrefix": "mlteam",
        "runsNamespace": "team-runs",
        "defaultPermission": "NO_PERMISSIONS",
        "signInSecretLifetimeDays": 30,
    },
}
ALLOWED = [DATA_SCIENTISTS, ML_ENGINEERS]
ADMINS = [PLATFORM_ADMINS]


def expiry_from_the_provider(args) -> dict[str, Any]:
    """What the PasswordExpiry resource computes when it is created (the mocks skip dynamic providers)."""
    if args.typ == EXPIRY:
        return PasswordExpiryProvider().create({"lifetime_days": args.inputs["lifetime_days"]}).outs
    return {}


@pytest.fixture(scope="module", params=list(CONFIGURATIONS))
def case(request) -> tuple[dict[str, Any], ProgramRun, tuple[datetime, datetime]]:
    before = datetime.now(UTC)
    run = run_program(
        CONFIGURATIONS[request.param], mocks=RecordingMocks(extra_outputs=expiry_from_the_provider)
    )
    return CONFIGURATIONS[request.param], run, (before, datetime.now(UTC))


def sign_in_app(run: ProgramRun):
    return run.named("sign-in-app")


def setup_values(run: ProgramRun) -> dict[str, Any]:
    return plain(run.named("mlflow-setup").inputs["values"])


def public_hostname(run: ProgramRun) -> str:
    return setup_values(run)["exposure"]["hostname"]


def test_the_application_signs_in_members_of_this_tenant_by_code_flow_only(case):
    config, run, _ = case
    app = sign_in_app(run)
    inputs = app.inputs
    assert inputs["displayName"] == f"{config.get('namePrefix', 'mlflow')}-mlflow"
    assert inputs["signInAudience"] == "AzureADMyOrg"
    assert inputs["owners"] == [DEPLOYING_USER_OBJECT_ID]
    web = inputs["web"]
    local = "http://localhost:5000/callback"  # the port-forward of the portForward output
    if config.get("exposure") == "public":
        assert web["redirectUris"] == [f"https://{public_hostname(run)}/callback", local]
    else:
        assert web["redirectUris"] == [local]
    assert web["implicitGrant"] == {"accessTokenIssuanceEnabled": False, "idTokenIssuanceEnabled": False}
    # Like the deployer's application: created only once the data guard let the update go ahead.
    assert any(urn.endswith("::data-guard") for urn in app.options["dependencies"])
    # Every sign-in resource belongs to the SignIn component.
    for type_ in (APPLICATION, SERVICE_PRINCIPAL, *SIGN_IN_TYPES, EXPIRY):
        for resource in run.of_type(type_):
            if resource.name.startswith("sign-in-"):
                assert "mlflow-aks:app:SignIn" in resource.options["parent"], resource.name


def test_id_and_access_tokens_carry_the_users_security_groups(case):
    _, run, _ = case
    inputs = sign_in_app(run).inputs
    assert inputs["groupMembershipClaims"] == ["SecurityGroup"]
    assert inputs["optionalClaims"] == {
        "idTokens": [{"name": "groups"}],
        "accessTokens": [{"name": "groups"}],
    }


def test_the_api_issues_v2_tokens_for_one_user_impersonation_scope(case):
    _, run, _ = case
    api = sign_in_app(run).inputs["api"]
    # v2: `iss` is https://login.microsoftonline.com/<tenant>/v2.0 and `aud` the client id.
    assert api["requestedAccessTokenVersion"] == 2
    scope_id = run.one(UUID).outputs["result"]
    (scope,) = api["oauth2PermissionScopes"]
    assert scope["id"] == scope_id
    assert scope["value"] == "user_impersonation"
    assert scope["type"] == "User" and scope["enabled"] is True
    assert scope["adminConsentDisplayName"] and scope["userConsentDisplayName"]


def test_identifier_uri_and_scope_name_the_client_id(case):
    _, run, _ = case
    app = sign_in_app(run)
    client_id = app.outputs["clientId"]
    uri = run.one(IDENTIFIER_URI)
    assert uri.inputs == {"applicationId": app.id, "identifierUri": f"api://{client_id}"}
    # The resource owns the URI; the application must not remove it on its next update.
    assert "identifierUris" in app.options["ignoreChanges"]
    assert run.exports["signInClientId"] == client_id
    assert run.exports["signInScope"] == f"api://{client_id}/user_impersonation"
    assert {"signInClientId", "signInScope"}.isdisjoint(run.secret_exports)


def test_the_azure_cli_is_pre_authorized_for_that_scope(case):
    _, run, _ = case
    (grant,) = run.of_type(PRE_AUTHORIZED)
    assert grant.inputs == {
        "applicationId": sign_in_app(run).id,
        "authorizedClientId": AZURE_CLI,
        "permissionIds": [run.one(UUID).outputs["result"]],
    }


def test_the_application_has_a_service_principal_in_the_tenant(case):
    _, run, _ = case
    sp = run.named("sign-in-sp")
    assert sp.inputs["clientId"] == sign_in_app(run).outputs["clientId"]
    assert sp.inputs["owners"] == [DEPLOYING_USER_OBJECT_ID]


def test_the_client_secret_expires_its_lifetime_after_creation_and_stays_fixed(case):
    config, run, (before, after) = case
    days = config.get("signInSecretLifetimeDays", 180)
    expiry = run.named("sign-in-secret-expiry")
    assert plain(expiry.inputs)["lifetime_days"] == days
    assert any(urn.endswith("::sign-in-app") for urn in expiry.options["dependencies"])
    (secret,) = run.of_type(APP_PASSWORD)
    assert secret.inputs["applicationId"] == sign_in_app(run).id
    # The date the expiry resource computed when it was created, not one the program computes each run.
    assert secret.inputs["endDate"] == expiry.outputs["end_date"]
    assert end_date(before, days) <= secret.inputs["endDate"] <= end_date(after, days)
    assert "endDateRelative" not in secret.inputs
    assert any(urn.endswith(f"::{expiry.name}") for urn in secret.options["dependencies"])


def test_the_setup_chart_gets_the_oidc_section(case):
    config, run, _ = case
    values = setup_values(run)
    auth = values["tracking"]["auth"]
    client_id = sign_in_app(run).outputs["clientId"]
    issuer = f"https://login.microsoftonline.com/{TENANT_ID}/v2.0"
    assert auth["mode"] == "oidc"
    assert auth["defaultPermission"] == config.get("defaultPermission", "READ")
    redirect = f"https://{public_hostname(run)}/callback" if config.get("exposure") == "public" else ""
    assert auth["oidc"] == {
        "discoveryUrl": f"{issuer}/.well-known/openid-configuration",
        "issuer": issuer,
        "clientId": client_id,
        "clientSecret": run.one(APP_PASSWORD).outputs["value"],
        "audience": client_id,
        "redirectUri": redirect,
        "allowedGroups": ALLOWED,
        "adminGroups": ADMINS,
        # Run Jobs' projected tokens, checked against the cluster's own issuer.
        "runTokens": {"issuer": OIDC_ISSUER_URL, "audience": "mlflow-tracking"},
    }


def test_the_client_secret_stays_secret_end_to_end(case):
    _, run, _ = case
    secret = run.one(APP_PASSWORD).outputs["value"]
    setup = run.named("mlflow-setup")
    assert is_secret(setup.inputs["values"])
    for release in run.of_type(RELEASE):
        if release.name != "mlflow-setup":
            assert not contains_secret(release.inputs["values"])
            assert secret not in repr(release.inputs["values"])
    for key, value in run.exports.items():
        if key not in run.secret_exports:
            assert secret not in repr(value), key


def test_runs_sign_in_with_their_service_account_token(case):
    _, run, _ = case
    (release,) = [r for r in run.of_type(RELEASE) if r.name == "mlflow-run-train-demo"]
    tracking = plain(release.inputs["values"])["tracking"]
    assert tracking == {
        "uri": chart_values.tracking_url("mlflow"),
        "auth": "serviceAccountToken",
        "tokenAudience": "mlflow-tracking",
    }
    # One more run by hand gets the same.
    assert run.exports["runValues"]["tracking"] == tracking


def test_both_charts_take_the_programs_sign_in_values(case, helm_bin, tmp_path):
    """The releases' values pass both charts' schemas, and the token a run Job presents carries the
    audience the server was told to accept; the Job holds no password."""
    _, run, _ = case
    setup = run.named("mlflow-setup").inputs
    assert {obj["kind"] for obj in helm_template(helm_bin, setup, tmp_path)} >= {"Deployment", "Secret"}
    audience = setup_values(run)["tracking"]["auth"]["oidc"]["runTokens"]["audience"]
    objects = helm_template(helm_bin, run.named("mlflow-run-train-demo").inputs, tmp_path)
    (job,) = [obj for obj in objects if obj["kind"] == "Job"]
    pod = job["spec"]["template"]["spec"]
    tokens = [
        source["serviceAccountToken"]
        for volume in pod["volumes"]
        for source in volume.get("projected", {}).get("sources", [])
        if "serviceAccountToken" in source
    ]
    assert [token["audience"] for token in tokens] == [audience]
    env = {item["name"] for container in pod["containers"] for item in container.get("env", [])}
    assert "MLFLOW_TRACKING_PASSWORD" not in env


BASIC_CONFIGURATIONS: dict[str, dict[str, Any]] = {
    "basic-private": {"runs": [TRAIN]},
    "basic-public-edit": {
        "exposure": "public",
        "allowedSourceRanges": ["203.0.113.0/24"],
        "defaultPermission": "EDIT",
        "runs": [TRAIN],
    },
}
# tracking.auth with basic auth: what it held before sign-in with Entra ID existed, and the default
# permission (config defaultPermission; READ, the chart's default, unless set).
BASIC_AUTH_KEYS = {"adminUsername", "adminPassword", "flaskSecretKey", "runUsername", "runPassword"}


@pytest.fixture(scope="module", params=list(BASIC_CONFIGURATIONS))
def basic(request) -> tuple[dict[str, Any], ProgramRun]:
    return BASIC_CONFIGURATIONS[request.param], run_program(BASIC_CONFIGURATIONS[request.param])


def test_basic_auth_registers_no_sign_in_application(basic):
    _, run = basic
    # The deployer's application only.
    assert [app.name for app in run.of_type(APPLICATION)] == ["deployer-app"]
    assert [sp.name for sp in run.of_type(SERVICE_PRINCIPAL)] == ["deployer-sp"]
    for type_ in SIGN_IN_TYPES:
        assert run.of_type(type_) == [], type_
    assert [r.name for r in run.of_type(EXPIRY)] == ["deployer-password-expiry"]
    assert {"signInClientId", "signInScope"}.isdisjoint(run.exports)


def test_basic_auth_renders_the_values_it_did_before(basic):
    config, run = basic
    auth = setup_values(run)["tracking"]["auth"]
    assert set(auth) == BASIC_AUTH_KEYS | {"defaultPermission"}
    assert auth["defaultPermission"] == config.get("defaultPermission", "READ")
    for release in run.of_type(RELEASE):
        if release.name.startswith("mlflow-run-"):
            assert plain(release.inputs["values"])["tracking"] == {
                "uri": chart_values.tracking_url("mlflow"),
                "credentialsSecret": chart_values.RUN_CREDENTIALS_SECRET,
            }


@pytest.mark.parametrize("exposure", ["private", "public"])
def test_entra_changes_only_the_sign_in_values(exposure):
    """The same stack with `auth: entra`: the setup values gain `mode` and `oidc` and nothing else moves;
    a run's values swap the run credentials for the token, and nothing else moves."""
    public = {"exposure": "public", "allowedSourceRanges": ["203.0.113.0/24"]} if exposure == "public" else {}
    basic_run = run_program({**public, "runs": [TRAIN]})
    entra_run = run_program({**ENTRA, **public})
    basic_setup, entra_setup = setup_values(basic_run), setup_values(entra_run)
    stripped = copy.deepcopy(entra_setup)
    assert stripped["tracking"]["auth"].pop("mode") == "oidc"
    assert stripped["tracking"]["auth"].pop("oidc")
    # MySQL restarts once with a connection limit that counts the sign-in store's pools too.
    annotation = "mlflow-aks/connection-limit-inputs"
    assert stripped["mysql"]["podAnnotations"].pop(annotation).endswith(",auth=oidc")
    assert basic_setup["mysql"]["podAnnotations"].pop(annotation).endswith(",auth=basic")
    assert stripped == basic_setup
    basic_project = plain(basic_run.named("mlflow-run-train-demo").inputs["values"])
    entra_project = plain(entra_run.named("mlflow-run-train-demo").inputs["values"])
    assert {**basic_project, "tracking": None} == {**entra_project, "tracking": None}
    assert basic_project["tracking"]["uri"] == entra_project["tracking"]["uri"]


# (config, the keys the problems name, what the first rule says). Each stops the program before any
# resource or invoke.
BAD_SIGN_IN_SETTINGS: dict[str, tuple[dict[str, Any], list[str], str]] = {
    "entra-without-groups": ({"auth": "entra"}, ["entraAllowedGroups", "entraAdminGroups"], "at least one"),
    "entra-without-admins": (
        {"auth": "entra", "entraAllowedGroups": [DATA_SCIENTISTS]},
        ["entraAdminGroups"],
        "at least one",
    ),
    "display-name": (
        {**ENTRA, "entraAllowedGroups": [DATA_SCIENTISTS, "Data Scientists"]},
        ["entraAllowedGroups[1]"],
        "object id",
    ),
    "admin-display-name": (
        {**ENTRA, "entraAdminGroups": ["mlflow-admins"]},
        ["entraAdminGroups[0]"],
        "object id",
    ),
    "braced-guid": (
        {**ENTRA, "entraAdminGroups": [f"{{{PLATFORM_ADMINS}}}"]},
        ["entraAdminGroups[0]"],
        "GUID",
    ),
    "not-a-string": ({**ENTRA, "entraAllowedGroups": [42]}, ["entraAllowedGroups[0]"], "object id"),
    "groups-not-a-list": ({**ENTRA, "entraAllowedGroups": DATA_SCIENTISTS}, ["entraAllowedGroups"], "array"),
    "groups-with-basic": ({"entraAllowedGroups": [DATA_SCIENTISTS]}, ["entraAllowedGroups"], "auth: entra"),
    "admins-with-basic": (
        {"auth": "basic", "entraAdminGroups": [PLATFORM_ADMINS]},
        ["entraAdminGroups"],
        "auth: entra",
    ),
    "lifetime-with-basic": ({"signInSecretLifetimeDays": 90}, ["signInSecretLifetimeDays"], "auth: entra"),
    "lifetime-zero": (
        {**ENTRA, "signInSecretLifetimeDays": 0},
        ["signInSecretLifetimeDays"],
        "between 1 and 365",
    ),
    "lifetime-over-a-year": (
        {**ENTRA, "signInSecretLifetimeDays": 366},
        ["signInSecretLifetimeDays"],
        "between 1 and 365",
    ),
    "lifetime-not-a-number": (
        {**ENTRA, "signInSecretLifetimeDays": "a year"},
        ["signInSecretLifetimeDays"],
        "integer",
    ),
    "unknown-auth": ({"auth": "oidc"}, ["auth"], "basic, entra"),
    "unknown-permission": ({"defaultPermission": "WRITE"}, ["defaultPermission"], "READ, EDIT, MANAGE"),
    "lower-case-permission": ({"defaultPermission": "read"}, ["defaultPermission"], "NO_PERMISSIONS"),
}


@pytest.mark.parametrize("case_name", list(BAD_SIGN_IN_SETTINGS))
def test_bad_sign_in_settings_are_refused_naming_the_key(case_name):
    config, keys, says = BAD_SIGN_IN_SETTINGS[case_name]
    mocks = RecordingMocks()
    with pytest.raises(SettingsError) as raised:
        run_program(config, mocks=mocks)
    assert [p.key for p in raised.value.problems] == keys
    assert says in raised.value.problems[0].rule
    for key in keys:
        assert key in str(raised.value)
    assert mocks.resources == []
    assert mocks.calls == []


def test_default_permission_reaches_the_chart_in_basic_mode_too():
    values = setup_values(run_program({"defaultPermission": "MANAGE"}))
    assert values["tracking"]["auth"]["defaultPermission"] == "MANAGE"
    assert "mode" not in values["tracking"]["auth"] and "oidc" not in values["tracking"]["auth"]


def test_chart_values_refuse_an_incomplete_sign_in():
    """components/chart_values.py on its own: an OIDC section without a client secret or groups, or a run
    auth the chart does not know, fails before Helm sees it."""
    from tests.chart_render import RUNS, project_context, setup_context

    oidc = chart_values.OidcContext(
        discovery_url="https://login.microsoftonline.com/t/v2.0/.well-known/openid-configuration",
        issuer="https://login.microsoftonline.com/t/v2.0",
        client_id="c",
        client_secret="",
        allowed_groups=(),
        admin_groups=(PLATFORM_ADMINS,),
        run_token_issuer=OIDC_ISSUER_URL,
    )
    base = setup_context()
    with pytest.raises(ValueError, match="client_secret, allowed_groups"):
        chart_values.setup_values(dataclasses.replace(base, oidc=oidc))
    with pytest.raises(ValueError, match="default permission"):
        chart_values.setup_values(dataclasses.replace(base, default_permission="ALL"))
    project = project_context(RUNS["train"], jobs_pool=False)
    with pytest.raises(ValueError, match="run auth"):
        chart_values.project_values(dataclasses.replace(project, auth="token"))
