"""components/server_password.py: an adopted flexible server's admin password is set through Azure
Resource Manager, and the operation is followed to its end; the password never appears in an error."""

from __future__ import annotations

import io
import json
import urllib.error

import pytest

from components import server_password as sp

SERVER_ID = (
    "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/mlflow-data"
    "/providers/Microsoft.DBforMySQL/flexibleServers/mlflow-mysql-7f3kq2zx"
)
OPERATION = (
    f"{sp.ARM}/subscriptions/0/providers/Microsoft.DBforMySQL/locations/westeurope/azureAsyncOperation/1"
)
PASSWORD = "Stack-Admin-Pass-41x"


class Answer(io.BytesIO):
    def __init__(self, status: int, body: dict | None = None, headers: dict | None = None):
        super().__init__(json.dumps(body).encode() if body is not None else b"")
        self.status, self.headers = status, headers or {}


class FakeArm:
    """Answers the PATCH, then the operation's state, one answer after another; records every request."""

    def __init__(self, patch: Answer, states: list[str]):
        self.patch, self.states, self.requests = patch, list(states), []

    def __call__(self, request, timeout):
        self.requests.append(request)
        if request.get_method() == "PATCH":
            return Answer(self.patch.status, json.loads(self.patch.getvalue() or b"null"), self.patch.headers)
        return Answer(200, {"status": self.states.pop(0), "error": {"code": "Boom"}})


def test_the_password_is_patched_and_the_operation_followed_until_it_succeeded():
    arm = FakeArm(Answer(202, headers={"Azure-AsyncOperation": OPERATION}), ["InProgress", "Succeeded"])
    sleeps = []
    sp.set_admin_password(SERVER_ID, PASSWORD, "token-1", opener=arm, sleep=sleeps.append)
    patch, *polls = arm.requests
    assert patch.get_method() == "PATCH"
    assert patch.full_url == f"{sp.ARM}{SERVER_ID}?api-version={sp.API_VERSION}"
    assert json.loads(patch.data) == {"properties": {"administratorLoginPassword": PASSWORD}}
    assert patch.get_header("Authorization") == "Bearer token-1"
    assert [p.full_url for p in polls] == [OPERATION, OPERATION] and len(sleeps) == 1


def test_an_immediate_answer_needs_no_polling():
    arm = FakeArm(Answer(200, {"id": SERVER_ID}), [])
    sp.set_admin_password(SERVER_ID, PASSWORD, "token-1", opener=arm, sleep=lambda _: None)
    assert len(arm.requests) == 1


@pytest.mark.parametrize("state", ["Failed", "Canceled"])
def test_a_failed_operation_fails_without_the_password(state):
    arm = FakeArm(Answer(202, headers={"azure-asyncoperation": OPERATION}), [state])
    with pytest.raises(sp.PasswordResetError, match=state) as failed:
        sp.set_admin_password(SERVER_ID, PASSWORD, "token-1", opener=arm, sleep=lambda _: None)
    assert PASSWORD not in str(failed.value) and "token-1" not in str(failed.value)


def test_a_refused_request_names_the_status_and_not_the_password():
    def refuse(request, timeout):
        raise urllib.error.HTTPError(
            request.full_url, 403, "Forbidden", {}, io.BytesIO(b'{"error": "denied"}')
        )

    with pytest.raises(sp.PasswordResetError, match="HTTP 403") as failed:
        sp.set_admin_password(SERVER_ID, PASSWORD, "token-1", opener=refuse, sleep=lambda _: None)
    assert PASSWORD not in str(failed.value)


def test_the_token_goes_to_azure_resource_manager_only():
    arm = FakeArm(Answer(202, headers={"Azure-AsyncOperation": "https://elsewhere.example/op"}), [])
    with pytest.raises(sp.PasswordResetError, match=r"not on https://management\.azure\.com"):
        sp.set_admin_password(SERVER_ID, PASSWORD, "token-1", opener=arm, sleep=lambda _: None)
    assert len(arm.requests) == 1


def test_the_provider_sets_on_create_and_on_a_new_password_only():
    arm = FakeArm(Answer(200, {}), [])
    provider = sp.ServerAdminPasswordProvider(token=lambda: "token-2", opener=arm)
    props = {"server_id": SERVER_ID, "password": PASSWORD}
    created = provider.create(props)
    assert created.id == f"{SERVER_ID}/administratorLoginPassword" and len(arm.requests) == 1
    assert provider.diff(created.id, props, dict(props)).changes is False
    rotated = {**props, "password": "Another-Pass-42y"}
    assert provider.diff(created.id, props, rotated).changes is True
    provider.update(created.id, props, rotated)
    assert json.loads(arm.requests[-1].data)["properties"]["administratorLoginPassword"] == "Another-Pass-42y"
