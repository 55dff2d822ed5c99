"""The deployer password's expiry (components/password_expiry.py): fixed at creation, stable afterwards.

A second `pulumi up` must not rotate the password (the project's convergence rule, see
tests/test_convergence.py): the date is computed by the resource when it is created, kept in the state,
and only a new lifetime computes a new one.
"""

from __future__ import annotations

from datetime import UTC, datetime

from components.password_expiry import PasswordExpiryProvider, end_date

CREATED = datetime(2026, 11, 30, 9, 15, 42, 123456, tzinfo=UTC)
A_MONTH_LATER = datetime(2026, 12, 30, 17, 0, 0, tzinfo=UTC)


def test_the_end_date_is_the_lifetime_after_creation_in_rfc3339_utc():
    assert end_date(CREATED, 180) == "2027-05-29T09:15:42Z"
    assert end_date(CREATED, 365) == "2027-11-30T09:15:42Z"


def test_the_same_lifetime_later_is_no_change_so_the_password_is_kept():
    created = PasswordExpiryProvider(clock=lambda: CREATED).create({"lifetime_days": 180})
    assert created.outs == {"lifetime_days": 180, "end_date": "2027-05-29T09:15:42Z"}
    later = PasswordExpiryProvider(clock=lambda: A_MONTH_LATER)
    assert later.diff(created.id, created.outs, {"lifetime_days": 180}).changes is False
    # The value from the stack config arrives as an integer or as its string: no change either way.
    assert later.diff(created.id, created.outs, {"lifetime_days": "180"}).changes is False


def test_a_new_lifetime_counts_from_the_update_and_rotates():
    created = PasswordExpiryProvider(clock=lambda: CREATED).create({"lifetime_days": 180})
    later = PasswordExpiryProvider(clock=lambda: A_MONTH_LATER)
    diff = later.diff(created.id, created.outs, {"lifetime_days": 90})
    assert diff.changes is True and diff.replaces == []
    updated = later.update(created.id, created.outs, {"lifetime_days": 90})
    assert updated.outs == {"lifetime_days": 90, "end_date": "2027-03-30T17:00:00Z"}


def test_without_a_clock_it_uses_the_current_time():
    before = datetime.now(UTC)
    outs = PasswordExpiryProvider().create({"lifetime_days": 1}).outs
    after = datetime.now(UTC)
    assert end_date(before, 1) <= outs["end_date"] <= end_date(after, 1)
