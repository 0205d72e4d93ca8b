"""The approval policy of MCP tool calls: per-tool overrides, and the stricter of server and conversation."""

from __future__ import annotations

import itertools

import pytest

from domain.mcp.approval import effective_approval, strictest
from domain.mcp.types import Approval

ALL: tuple[Approval, ...] = ("auto", "manual", "deny")


def test_strictness_order() -> None:
    assert strictest(["auto", "manual"]) == "manual"
    assert strictest(["manual", "deny", "auto"]) == "deny"
    assert strictest(["auto"]) == "auto"
    assert strictest([]) == "auto"


def test_without_a_conversation_setting_the_server_decides() -> None:
    assert effective_approval("auto", {}, "echo", None) == "auto"
    assert effective_approval("manual", {}, "echo", None) == "manual"
    assert effective_approval("deny", {}, "echo", None) == "deny"


def test_a_tool_override_replaces_the_servers_policy_for_that_tool_only() -> None:
    overrides: dict[str, Approval] = {"echo": "auto", "rm": "deny"}
    assert effective_approval("manual", overrides, "echo", None) == "auto"
    assert effective_approval("manual", overrides, "rm", None) == "deny"
    assert effective_approval("manual", overrides, "other", None) == "manual"


@pytest.mark.parametrize(("server", "conversation"), list(itertools.product(ALL, ALL)))
def test_the_stricter_of_server_and_conversation_wins(server: Approval, conversation: Approval) -> None:
    got = effective_approval(server, {}, "t", conversation)
    rank = {"auto": 0, "manual": 1, "deny": 2}
    assert rank[got] == max(rank[server], rank[conversation])
    assert got in (server, conversation)


def test_a_conversation_cannot_loosen_a_tool_override_nor_the_reverse() -> None:
    assert effective_approval("auto", {"rm": "deny"}, "rm", "auto") == "deny"
    assert effective_approval("deny", {"echo": "auto"}, "echo", "manual") == "manual"
    assert effective_approval("auto", {"echo": "auto"}, "echo", "manual") == "manual"
