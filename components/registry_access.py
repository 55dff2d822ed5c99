"""Wait, before the images are pushed, until the deployer's credential can really push to the registry.

The deployer service principal's password and its AcrPush assignment are created seconds before the
first push. Both take a while to become effective: a new credential replicates through Entra ID, and
"role assignment changes can take up to 10 minutes to take effect"
(https://learn.microsoft.com/azure/role-based-access-control/troubleshooting). Pushing at once fails
with 401 or 403 (the race of hashicorp/terraform-provider-azurerm#11434 and Azure/acr#258), and the
first `pulumi up` needed a second one.

`RegistryPushAccess` is a dynamic resource that polls the registry's token endpoint with that
credential, the exchange `docker push` itself starts with (Basic auth against `/oauth2/token`, see
Azure/acr docs/AAD-OAuth.md), until the token it returns grants `push` on every repository the images
go to. The registry answers 401 while the password is not valid yet, and a token without `push` while
the role is not effective (the Docker token spec grants the subset of the requested actions the
identity holds). No blind sleep: it returns at the first token that grants push, and fails after
`timeout_seconds` with an error naming what is still not effective. A new password (rotation) or
registry checks again.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi
from pulumi import dynamic

# Entra ID replication of a new secret plus Azure RBAC's documented "up to 10 minutes", with margin.
PUSH_ACCESS_TIMEOUT_SECONDS = 900
FIRST_POLL_SECONDS = 5.0
MAX_POLL_SECONDS = 30.0
REQUEST_TIMEOUT_SECONDS = 20.0


class RegistryAccessError(RuntimeError):
    """The credential could still not push when the time ran out; the message says what is missing."""


@dataclass
class TokenAnswer:
    """One answer of the registry's token endpoint."""

    status: int | None
    """HTTP status, None when the registry did not answer at all."""
    granted: dict[str, set[str]] = field(default_factory=dict)
    """Repository -> actions the token grants."""
    detail: str = ""
    """What went wrong, when something did."""


def _claims(token: str) -> dict[str, Any]:
    """The (unverified) claims of a JWT: we only read what the registry says it granted."""
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def request_push_token(
    login_server: str,
    username: str,
    password: str,
    repositories: Sequence[str],
    *,
    scheme: str = "https",
    timeout: float = REQUEST_TIMEOUT_SECONDS,
) -> TokenAnswer:
    """Ask the registry for a token with pull and push on `repositories`, as `docker push` does."""
    query = urllib.parse.urlencode(
        [("service", login_server), *(("scope", f"repository:{r}:pull,push") for r in repositories)]
    )
    request = urllib.request.Request(f"{scheme}://{login_server}/oauth2/token?{query}")  # noqa: S310
    basic = base64.b64encode(f"{username}:{password}".encode()).decode()
    request.add_header("Authorization", f"Basic {basic}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - https in use
            body = json.loads(response.read())
    except urllib.error.HTTPError as error:
        return TokenAnswer(error.code, detail=error.read()[:200].decode(errors="replace"))
    except (OSError, ValueError) as error:
        return TokenAnswer(None, detail=str(error))
    try:
        access = _claims(body.get("access_token") or body["token"]).get("access") or []
    except (KeyError, IndexError, ValueError) as error:
        return TokenAnswer(200, detail=f"unreadable token ({error})")
    granted: dict[str, set[str]] = {}
    for entry in access:
        if entry.get("type") == "repository":
            granted.setdefault(entry.get("name", ""), set()).update(entry.get("actions") or [])
    return TokenAnswer(200, granted)


def missing_push(answer: TokenAnswer, repositories: Sequence[str]) -> list[str]:
    """Repositories the answer does not grant push on (all of them unless it is a token)."""
    if answer.status != 200 or answer.detail:
        return list(repositories)
    return [r for r in repositories if not {"push", "*"} & answer.granted.get(r, set())]


def describe(answer: TokenAnswer, login_server: str, repositories: Sequence[str]) -> str:
    """What is still not effective, in the words of someone who has to act on it."""
    if answer.status == 401:
        return (
            f"the deployer service principal's password is still rejected by {login_server} (HTTP 401): "
            "the new credential is not effective in Entra ID yet, or the password has expired "
            "(deployerPasswordLifetimeDays; see docs/operations.md, Deployer password)"
        )
    if answer.status == 200 and not answer.detail:
        grants = "; ".join(
            f"{r}: {', '.join(sorted(answer.granted.get(r, set()))) or 'nothing'}" for r in repositories
        )
        return (
            f"the deployer service principal's AcrPush on {login_server} is not effective yet: the registry "
            f"grants {grants} (role assignments can take up to 10 minutes)"
        )
    status = f"HTTP {answer.status}" if answer.status else "no answer"
    return f"the registry {login_server} did not hand out a push token ({status}: {answer.detail})"


def wait_for_push_access(
    login_server: str,
    username: str,
    password: str,
    repositories: Sequence[str],
    *,
    timeout_seconds: float = PUSH_ACCESS_TIMEOUT_SECONDS,
    first_poll_seconds: float = FIRST_POLL_SECONDS,
    scheme: str = "https",
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    log: Callable[[str], None] = lambda _: None,
) -> int:
    """Poll until the credential may push to every repository; return the number of requests made.

    Raises RegistryAccessError naming what is still not effective once `timeout_seconds` have passed.
    """
    started = clock()
    interval = first_poll_seconds
    attempts = 0
    while True:
        attempts += 1
        answer = request_push_token(login_server, username, password, repositories, scheme=scheme)
        if not missing_push(answer, repositories):
            return attempts
        waited = clock() - started
        if waited >= timeout_seconds:
            raise RegistryAccessError(
                f"{describe(answer, login_server, repositories)}; still so after {waited:.0f}s "
                f"and {attempts} attempts. Nothing was pushed."
            )
        log(f"waiting for push access to {login_server}: {describe(answer, login_server, repositories)}")
        sleep(min(interval, max(0.0, timeout_seconds - waited)))
        interval = min(interval * 1.5, MAX_POLL_SECONDS)


def _fingerprint(password: str) -> str:
    """What the state keeps of the password: enough to notice a rotation, nothing to use."""
    return hashlib.sha256(password.encode()).hexdigest()


_CHECKED = ("login_server", "username", "password_sha256", "repositories")


class RegistryPushAccessProvider(dynamic.ResourceProvider):
    """Create/update wait for push access; a new password, user, registry or repository checks again."""

    serialize_as_secret_always = False

    def __init__(self, scheme: str = "https", first_poll_seconds: float = FIRST_POLL_SECONDS):
        super().__init__()
        self._scheme = scheme
        self._first_poll_seconds = first_poll_seconds

    def _wait(self, props: dict[str, Any]) -> dict[str, Any]:
        attempts = wait_for_push_access(
            props["login_server"],
            props["username"],
            props["password"],
            props["repositories"],
            timeout_seconds=float(props["timeout_seconds"]),
            first_poll_seconds=self._first_poll_seconds,
            scheme=self._scheme,
        )
        outputs = {key: props[key] for key in ("login_server", "username", "repositories", "timeout_seconds")}
        return {**outputs, "password_sha256": _fingerprint(props["password"]), "attempts": attempts}

    def create(self, props: dict[str, Any]) -> dynamic.CreateResult:
        return dynamic.CreateResult(id_=f"{props['login_server']}/push-access", outs=self._wait(props))

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> dynamic.DiffResult:
        new = {**news, "password_sha256": _fingerprint(news["password"])} if "password" in news else news
        changed = [key for key in _CHECKED if olds.get(key) != new.get(key)]
        return dynamic.DiffResult(changes=bool(changed), replaces=[], delete_before_replace=False)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> dynamic.UpdateResult:
        return dynamic.UpdateResult(outs=self._wait(news))


class RegistryPushAccess(dynamic.Resource, module="mlflow-aks", name="RegistryPushAccess"):
    """Exists once `username`/`password` may push to `repositories` of `login_server`."""

    attempts: pulumi.Output[int]

    def __init__(
        self,
        name: str,
        *,
        login_server: pulumi.Input[str],
        username: pulumi.Input[str],
        password: pulumi.Input[str],
        repositories: Sequence[str],
        timeout_seconds: int = PUSH_ACCESS_TIMEOUT_SECONDS,
        provider: RegistryPushAccessProvider | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ):
        props = {
            "login_server": login_server,
            "username": username,
            "password": pulumi.Output.secret(password),
            "repositories": list(repositories),
            "timeout_seconds": timeout_seconds,
            "attempts": None,
        }
        super().__init__(provider or RegistryPushAccessProvider(), name, props, opts)
