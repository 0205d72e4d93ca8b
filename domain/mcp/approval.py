"""Which approval a tool call needs: the server's policy, overridden per tool, and the conversation's
setting; the strictest wins (deny > manual > auto), so no setting can loosen another."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from domain.mcp.types import Approval

STRICTNESS: dict[Approval, int] = {"auto": 0, "manual": 1, "deny": 2}


def strictest(policies: Iterable[Approval]) -> Approval:
    """The strictest of ``policies``; ``auto`` when there are none."""
    return max(policies, key=STRICTNESS.__getitem__, default="auto")


def server_approval(server: Approval, tool_overrides: Mapping[str, Approval], tool: str) -> Approval:
    """The server's own policy for ``tool``: its per-tool override if one is set, else the server's."""
    return tool_overrides.get(tool, server)


def effective_approval(
    server: Approval, tool_overrides: Mapping[str, Approval], tool: str, conversation: Approval | None
) -> Approval:
    """The approval a call of ``tool`` needs: the stricter of the server's (per-tool) policy and the
    conversation's setting (``None``: the conversation sets none)."""
    own = server_approval(server, tool_overrides, tool)
    return own if conversation is None else strictest((own, conversation))
