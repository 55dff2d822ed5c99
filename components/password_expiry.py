"""The expiry of the deployer's password: fixed when the password is made, `lifetime_days` later.

A password's end date has to be a date, and the program cannot compute "now + lifetime" itself: that
input would change on every `pulumi up` and rotate the password each time. azuread's
`end_date_relative` does it in the provider, but pulumi-azuread 6.11 marks it deprecated, to be removed.
`PasswordExpiry` is a dynamic resource that computes the date once, at creation, and keeps it in the
state: the same lifetime is no change, so a second `pulumi up` leaves the password alone. A new lifetime
computes a new date from that moment, which replaces (rotates) the password; so does
`pulumi up --replace <this resource's URN>` with the same lifetime.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pulumi
from pulumi import dynamic


def end_date(now: datetime, lifetime_days: int) -> str:
    """RFC 3339 UTC, whole seconds: `now` plus `lifetime_days`."""
    return (now + timedelta(days=lifetime_days)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class PasswordExpiryProvider(dynamic.ResourceProvider):
    """Create/update compute the date from the clock; only a new lifetime is a change."""

    serialize_as_secret_always = False

    def __init__(self, clock: Callable[[], datetime] | None = None):
        super().__init__()
        self._clock = clock

    def _outs(self, props: dict[str, Any]) -> dict[str, Any]:
        now = self._clock() if self._clock else datetime.now(UTC)
        days = int(props["lifetime_days"])
        return {"lifetime_days": days, "end_date": end_date(now, days)}

    def create(self, props: dict[str, Any]) -> dynamic.CreateResult:
        return dynamic.CreateResult(id_="password-expiry", outs=self._outs(props))

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> dynamic.DiffResult:
        changed = int(olds.get("lifetime_days", -1)) != int(news["lifetime_days"])
        return dynamic.DiffResult(changes=changed, replaces=[], delete_before_replace=False)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> dynamic.UpdateResult:
        return dynamic.UpdateResult(outs=self._outs(news))


class PasswordExpiry(dynamic.Resource, module="mlflow-aks", name="PasswordExpiry"):
    """`end_date`: when the password made with it expires (RFC 3339 UTC)."""

    end_date: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        *,
        lifetime_days: int,
        provider: PasswordExpiryProvider | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ):
        props = {"lifetime_days": lifetime_days, "end_date": None}
        super().__init__(provider or PasswordExpiryProvider(), name, props, opts)
