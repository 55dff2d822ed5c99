"""The push-access wait (components/registry_access.py) against a registry token endpoint on loopback.

The fake registry answers `/oauth2/token` the way ACR does for Basic credentials (Azure/acr
docs/AAD-OAuth.md): 401 while the password is not valid, then a JWT whose `access` claim holds the
actions granted on each requested repository. It plays the propagation of a new password and AcrPush
as a script of answers, and records what the client sent.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from components.registry_access import (
    RegistryAccessError,
    RegistryPushAccessProvider,
    wait_for_push_access,
)

USER, PASSWORD = "0f1e2d3c-aaaa-bbbb-cccc-000000000001", "sp-password-~x.y"
REPOSITORIES = ["mlflow-tracking-server", "mlflow-project"]


def _jwt(claims: dict) -> str:
    def part(data: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    return f"{part({'alg': 'RS256'})}.{part(claims)}.c2lnbmF0dXJl"


class FakeRegistry:
    """Answers token requests from a script: "401", or a list of actions granted on every repository."""

    def __init__(self, script: list[str | list[str]]):
        self.script = script
        self.requests: list[dict] = []
        registry = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                url = urllib.parse.urlparse(self.path)
                query = urllib.parse.parse_qs(url.query)
                registry.requests.append(
                    {"path": url.path, "query": query, "authorization": self.headers.get("Authorization")}
                )
                step = registry.script[min(len(registry.requests), len(registry.script)) - 1]
                if step == "401":
                    self.send_response(401)
                    self.end_headers()
                    self.wfile.write(b'{"errors":[{"code":"UNAUTHORIZED"}]}')
                    return
                scopes = [s.split(":") for s in query.get("scope", [])]
                access = [{"type": "repository", "name": name, "actions": step} for _, name, _ in scopes]
                body = json.dumps({"access_token": _jwt({"access": access})}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.login_server = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def registry() -> Iterator[callable]:
    started: list[FakeRegistry] = []

    def start(script):
        started.append(FakeRegistry(script))
        return started[-1]

    yield start
    for fake in started:
        fake.server.shutdown()


def wait(fake: FakeRegistry, timeout: float = 10.0) -> int:
    return wait_for_push_access(
        fake.login_server, USER, PASSWORD, REPOSITORIES, timeout_seconds=timeout, first_poll_seconds=0.05,
        scheme="http",
    )  # fmt: skip


def test_waits_through_rejection_and_a_pull_only_token_until_push_is_granted(registry):
    """A password not yet valid (401), then AcrPush not yet effective (pull only): it waits, then returns
    at the first token that grants push on both repositories, and asks no more."""
    fake = registry(["401", "401", ["pull"], ["pull", "push"], ["pull", "push"]])
    assert wait(fake) == 4
    assert len(fake.requests) == 4
    expected_auth = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    for request in fake.requests:
        assert request["path"] == "/oauth2/token"
        assert request["authorization"] == expected_auth
        assert request["query"]["service"] == [fake.login_server]
        assert request["query"]["scope"] == [f"repository:{r}:pull,push" for r in REPOSITORIES]


def test_an_effective_credential_is_checked_once(registry):
    fake = registry([["*"]])
    assert wait(fake) == 1


def test_a_password_never_accepted_fails_in_bounded_time_naming_it(registry):
    fake = registry(["401"])
    started = time.monotonic()
    with pytest.raises(RegistryAccessError) as failure:
        wait(fake, timeout=1.0)
    assert time.monotonic() - started < 5
    message = str(failure.value)
    assert "password is still rejected" in message and "HTTP 401" in message
    assert fake.login_server in message and "Nothing was pushed" in message
    assert PASSWORD not in message
    assert len(fake.requests) >= 3, "it polled, it did not sleep through the whole bound"


def test_a_role_never_effective_fails_naming_the_grants(registry):
    fake = registry([["pull"]])
    with pytest.raises(RegistryAccessError) as failure:
        wait(fake, timeout=0.5)
    message = str(failure.value)
    assert "AcrPush" in message and "not effective" in message
    assert all(f"{r}: pull" in message for r in REPOSITORIES)


def test_an_unreachable_registry_fails_naming_it():
    with pytest.raises(RegistryAccessError, match=r"did not hand out a push token \(no answer"):
        wait_for_push_access(
            "127.0.0.1:9", USER, PASSWORD, REPOSITORIES, timeout_seconds=0.2, first_poll_seconds=0.05,
            scheme="http",
        )  # fmt: skip


def test_the_dynamic_provider_waits_on_create_and_again_on_a_new_password(registry):
    fake = registry(["401", ["pull", "push"]])
    provider = RegistryPushAccessProvider(scheme="http", first_poll_seconds=0.05)
    props = {
        "login_server": fake.login_server,
        "username": USER,
        "password": PASSWORD,
        "repositories": REPOSITORIES,
        "timeout_seconds": 10,
    }
    created = provider.create(props)
    assert created.outs["attempts"] == 2
    assert PASSWORD not in json.dumps(created.outs), "the state keeps no usable password"
    assert provider.diff(created.id, created.outs, props).changes is False
    rotated = {**props, "password": PASSWORD + "-rotated"}
    assert provider.diff(created.id, created.outs, rotated).changes is True
    fake.script, fake.requests = ["401", ["push"]], []
    updated = provider.update(created.id, created.outs, rotated)
    assert updated.outs["attempts"] == 2 and len(fake.requests) == 2
