"""The authorization policy: what each role may do, grant and revoke."""

from __future__ import annotations

import pytest

from domain.shared import authz
from domain.shared.authz import Action, Role

ALLOWED: dict[Role, set[Action]] = {
    "viewer": {"read"},
    "editor": {"read", "update"},
    "manager": {"read", "update", "share"},
    "owner": {"read", "update", "share", "delete", "transfer"},
}


@pytest.mark.parametrize("role", authz.ROLES)
@pytest.mark.parametrize("action", ["read", "update", "share", "delete", "transfer"])
def test_can_follows_the_role_ladder(role: Role, action: Action) -> None:
    assert authz.can(role, action) is (action in ALLOWED[role])


def test_no_role_can_do_nothing() -> None:
    assert not any(authz.can(None, a) for a in ("read", "update", "share", "delete", "transfer"))


def test_highest_role_wins() -> None:
    assert authz.highest(["viewer", "manager", "editor"]) == "manager"
    assert authz.highest([]) is None


def test_managers_grant_up_to_manager_and_never_owner() -> None:
    assert [r for r in authz.ROLES if authz.may_grant("manager", r)] == ["manager", "editor", "viewer"]
    assert [r for r in authz.ROLES if authz.may_grant("owner", r)] == ["manager", "editor", "viewer"]
    assert not any(authz.may_grant(r, "viewer") for r in ("editor", "viewer", None))


def test_the_owner_cannot_be_revoked_or_changed() -> None:
    assert authz.may_revoke("manager", "manager")
    assert authz.may_revoke("owner", "editor")
    assert not authz.may_revoke("owner", "owner")
    assert not authz.may_revoke("manager", "owner")
    assert not authz.may_revoke("editor", "viewer")
    assert not authz.may_change("owner", "owner", "viewer")
    assert authz.may_change("manager", "viewer", "manager")
    assert not authz.may_change("editor", "viewer", "editor")


def test_only_owners_delete_and_transfer() -> None:
    assert authz.may_transfer("owner")
    assert not authz.may_transfer("manager")
