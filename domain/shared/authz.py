"""The authorization policy (pure): what each entity role may do, and who may grant or revoke what.

Roles are ordered owner > manager > editor > viewer. Viewers read; editors change content; managers
share (grant up to manager, revoke anyone but the owner); owners also delete and transfer ownership.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal, get_args

Role = Literal["owner", "manager", "editor", "viewer"]
Action = Literal["read", "update", "share", "delete", "transfer"]
GranteeType = Literal["user", "group"]

ROLES: tuple[Role, ...] = get_args(Role)
RANK: dict[Role, int] = {"viewer": 1, "editor": 2, "manager": 3, "owner": 4}
# The least role that may perform each action.
_NEEDS: dict[Action, Role] = {
    "read": "viewer",
    "update": "editor",
    "share": "manager",
    "delete": "owner",
    "transfer": "owner",
}


def is_role(value: str) -> bool:
    return value in RANK


def can(role: Role | None, action: Action) -> bool:
    return role is not None and RANK[role] >= RANK[_NEEDS[action]]


def highest(roles: Iterable[Role]) -> Role | None:
    return max(roles, key=RANK.__getitem__, default=None)


def may_grant(granter: Role | None, role: Role) -> bool:
    """Sharing hands out at most the granter's own role and never ``owner`` (that is a transfer)."""
    return can(granter, "share") and role != "owner" and granter is not None and RANK[role] <= RANK[granter]


def may_change(granter: Role | None, current: Role, new: Role) -> bool:
    """Changing an existing grant: the owner's grant is fixed, and a manager may not touch a role above theirs."""
    return current != "owner" and granter is not None and RANK[current] <= RANK[granter] and may_grant(granter, new)


def may_revoke(granter: Role | None, target: Role) -> bool:
    """Managers and owners revoke any grant but the owner's; the owner cannot be revoked."""
    return can(granter, "share") and target != "owner"


def may_transfer(granter: Role | None) -> bool:
    return can(granter, "transfer")
