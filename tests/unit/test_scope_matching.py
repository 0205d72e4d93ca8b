"""API-key scope matching: which scope a request needs and which granted scopes cover it."""

from __future__ import annotations

import pytest

from domain.shared import scopes
from domain.shared.scopes import Access


@pytest.mark.parametrize(
    ("method", "access"),
    [("GET", "read"), ("head", "read"), ("POST", "write"), ("PATCH", "write"), ("PUT", "write"), ("DELETE", "write")],
)
def test_reads_need_read_and_everything_else_write(method: str, access: Access) -> None:
    assert scopes.access_of(method) == access
    assert scopes.required("prompts", method) == f"prompts:{access}"


def test_an_undeclared_route_needs_everything() -> None:
    assert scopes.required(None, "GET") == "*"


@pytest.mark.parametrize(
    ("granted", "resource", "access", "expected"),
    [
        (["prompts:read"], "prompts", "read", True),
        (["prompts:read"], "prompts", "write", False),
        (["prompts:write"], "prompts", "write", True),
        (["prompts:write"], "prompts", "read", False),  # write does not imply read
        (["prompts:*"], "prompts", "read", True),
        (["prompts:*"], "prompts", "write", True),
        (["prompts:*"], "groups", "read", False),
        (["*:read"], "groups", "read", True),
        (["*:read"], "groups", "write", False),
        (["*:write"], "groups", "write", True),
        (["*:write"], "groups", "read", False),
        (["*"], "audit", "write", True),
        (["*:*"], "audit", "write", True),
        (["groups:read", "prompts:write"], "prompts", "write", True),
        ([], "prompts", "read", False),
        (["prompts"], "prompts", "read", False),  # not a scope: no access part
        (["promptsx:read"], "prompts", "read", False),
    ],
)
def test_allows(granted: list[str], resource: str, access: Access, expected: bool) -> None:
    assert scopes.allows(granted, resource, access) is expected


@pytest.mark.parametrize("granted", [["*:read"], ["*:write"], ["prompts:*"], ["me:read"]])
def test_only_the_full_wildcard_passes_an_undeclared_route(granted: list[str]) -> None:
    assert not scopes.allows(granted, None, "read")
    assert not scopes.allows(granted, None, "write")
    assert scopes.allows(["*"], None, "write")
    assert scopes.allows([*granted, "*"], None, "read")


@pytest.mark.parametrize(
    ("scope", "known"),
    [
        ("*", True),
        ("*:*", True),
        ("*:read", True),
        ("*:write", True),
        ("prompts:read", True),
        ("prompts:write", True),
        ("prompts:*", True),
        ("prompts", False),
        ("prompts:delete", False),
        ("chat:read", False),
        (":read", False),
        ("prompts:read:x", False),
        ("", False),
    ],
)
def test_is_known_accepts_declared_resources_and_wildcards_only(scope: str, known: bool) -> None:
    assert scopes.is_known(scope, {"prompts", "groups"}) is known


def test_an_empty_stored_list_means_everything() -> None:
    assert scopes.effective([]) == ("*",)
    assert scopes.effective(["prompts:read"]) == ("prompts:read",)
