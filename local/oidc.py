"""Single sign-on on the local stack: a mock OpenID provider in place of Entra ID, and the cluster's
ServiceAccount token issuer in place of AKS's.

**People** sign in through `oidc-provider-mock` (PyPI, pinned in pyproject.toml), bound to 127.0.0.1.
It is a real OpenID provider for this purpose: discovery, signing keys, the authorization-code flow,
ID tokens signed with its own key. The stack predefines its users with their `groups` claim (what Entra
ID puts in tokens when the application asks for group claims), and `bearer_token` runs the same
authorization-code flow a browser runs to get one of them a token, as `az account get-access-token`
gets one from Entra ID.

**Run Jobs** present a projected ServiceAccount token. On AKS the kubelet asks the API server for one,
signed with the cluster's key and published at the cluster's OIDC issuer. Here the stack is that issuer:
`service_account_token` signs the same claims with a key generated once per working directory (kept
with the other local secrets, 0600), and the server trusts that key's public half (the chart's
`tracking.auth.oidc.runTokens.jwks`), as on AKS it trusts the issuer's published keys.
"""

from __future__ import annotations

import json
import secrets
import shutil
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from local.procs import Proc, StackError, spawn, wait_until

#: The issuer of the local run tokens (on AKS, the cluster's OIDC issuer URL).
RUN_TOKEN_ISSUER = "https://kubernetes.default.svc.cluster.local"  # noqa: S105 - a URL
#: The client id the local stack's server signs people in with.
CLIENT_ID = "mlflow-local"
#: Groups of the local users (on Entra ID, group object ids).
USERS_GROUP = "mlflow-users"
ADMINS_GROUP = "mlflow-admins"
#: The predefined local users: subject -> claims. `outsider` signs in at the provider but is in no
#: group the server allows.
USERS: dict[str, dict[str, Any]] = {
    "admin@local": {"email": "admin@local", "name": "Local Admin", "groups": [ADMINS_GROUP, USERS_GROUP]},
    "alice@local": {"email": "alice@local", "name": "Alice", "groups": [USERS_GROUP]},
    "bob@local": {"email": "bob@local", "name": "Bob", "groups": [USERS_GROUP]},
    "outsider@local": {"email": "outsider@local", "name": "Outsider", "groups": ["another-team"]},
}
INSTALL_HINT = "pip install oidc-provider-mock (pinned in pyproject.toml; run scripts/bootstrap)"


def binary(python: str | None = None) -> str | None:
    return shutil.which("oidc-provider-mock", path=str(Path(python or sys.executable).parent))


def issuer(port: int) -> str:
    return f"http://127.0.0.1:{port}"


def discovery_url(port: int) -> str:
    return f"{issuer(port)}/.well-known/openid-configuration"


def start(location: Path, port: int, python: str | None = None, token_max_age: int = 3600) -> Proc:
    """The mock provider on 127.0.0.1:`port`, with the local users predefined."""
    mock = binary(python)
    if mock is None:
        raise StackError(f"oidc-provider-mock not found: {INSTALL_HINT}")
    argv = [mock, "--host", "127.0.0.1", "--port", str(port), "--token-max-age", str(token_max_age)]
    for sub, claims in USERS.items():
        argv += ["--user-claims", json.dumps({"sub": sub, **claims})]
    location.mkdir(parents=True, exist_ok=True, mode=0o700)
    return spawn("oidc", argv, env={"PATH": "/usr/bin:/bin"}, log=location / "oidc.log")


def wait_ready(proc: Proc, port: int) -> None:
    def answers() -> bool:
        try:
            with urllib.request.urlopen(discovery_url(port), timeout=3) as response:  # noqa: S310 - http://127.0.0.1
                return response.status == 200
        except OSError:
            return False

    wait_until("the local OpenID provider to answer", answers, timeout=30, proc=proc, interval=0.2)


def set_user(port: int, sub: str, claims: Mapping[str, Any]) -> None:
    """Create or change a user at the provider (e.g. their groups), as an Entra ID admin would."""
    request = urllib.request.Request(  # noqa: S310 - http://127.0.0.1
        f"{issuer(port)}/users/{urllib.parse.quote(sub)}",
        data=json.dumps(dict(claims)).encode(),
        headers={"Content-Type": "application/json"},
        method="PUT",
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        if response.status != 204:
            raise StackError(f"the local OpenID provider did not store {sub}: HTTP {response.status}")


def sign_in_at_provider(authorize_url: str, sub: str) -> str:
    """Submit the provider's sign-in form for `sub` (what a person does in the browser); the URL the
    provider then redirects to (the application's callback, with the code and state)."""
    data = urllib.parse.urlencode({"sub": sub}).encode()
    request = urllib.request.Request(authorize_url, data=data, method="POST")  # noqa: S310 - 127.0.0.1

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect)
    try:
        opener.open(request, timeout=10)
    except urllib.error.HTTPError as redirect:
        if redirect.code in (302, 303) and (location := redirect.headers.get("Location")):
            return location
        raise StackError(f"the local OpenID provider refused the sign-in: HTTP {redirect.code}") from None
    raise StackError("the local OpenID provider did not redirect after the sign-in")


def bearer_token(port: int, client_secret: str, sub: str, redirect_uri: str) -> str:
    """A token for `sub` from the provider, through the authorization-code flow (the application's
    client credentials): the ID token, a JWT the server validates against the provider's keys."""
    query = urllib.parse.urlencode(
        {
            "response_type": "code",
            "client_id": CLIENT_ID,
            "redirect_uri": redirect_uri,
            "scope": "openid email profile",
            "state": secrets.token_urlsafe(8),
        }
    )
    location = sign_in_at_provider(f"{issuer(port)}/oauth2/authorize?{query}", sub)
    code = urllib.parse.parse_qs(urllib.parse.urlparse(location).query)["code"][0]
    body = urllib.parse.urlencode(
        {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "client_id": CLIENT_ID,
            "client_secret": client_secret,
        }
    ).encode()
    request = urllib.request.Request(f"{issuer(port)}/oauth2/token", data=body, method="POST")  # noqa: S310
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - http://127.0.0.1
        return json.loads(response.read())["id_token"]


# ------------------------------------------------------------------------------- run tokens


def new_signing_key() -> str:
    """A private RSA key (JWK JSON) for the local ServiceAccount issuer."""
    from joserfc.jwk import RSAKey

    key = RSAKey.generate_key(2048, parameters={"kid": secrets.token_hex(8), "use": "sig", "alg": "RS256"})
    return json.dumps(key.as_dict(private=True))


def public_jwks(private_jwk: str) -> str:
    """The JWKS the server trusts run tokens with: the public half of the issuer's key."""
    from joserfc.jwk import RSAKey

    return json.dumps({"keys": [RSAKey.import_key(json.loads(private_jwk)).as_dict(private=False)]})


def service_account_token(
    private_jwk: str,
    *,
    namespace: str,
    service_account: str,
    audience: str,
    expiration_seconds: int,
    issuer_url: str = RUN_TOKEN_ISSUER,
    now: float | None = None,
) -> str:
    """A projected ServiceAccount token as the kubelet gets one: signed by the cluster's issuer key, for
    one audience, bound to the pod's namespace and ServiceAccount, short-lived."""
    from joserfc import jwt
    from joserfc.jwk import RSAKey

    key = RSAKey.import_key(json.loads(private_jwk))
    issued = int(time.time() if now is None else now)
    claims = {
        "iss": issuer_url,
        "sub": f"system:serviceaccount:{namespace}:{service_account}",
        "aud": [audience],
        "iat": issued,
        "nbf": issued,
        "exp": issued + expiration_seconds,
        "kubernetes.io": {"namespace": namespace, "serviceaccount": {"name": service_account}},
    }
    return jwt.encode({"alg": "RS256", "kid": key.kid}, claims, key)


def users_summary(users: Mapping[str, Mapping[str, Any]] = USERS) -> Sequence[str]:
    return [f"{sub} (groups: {', '.join(claims['groups'])})" for sub, claims in users.items()]
