"""/api/v1/runs/{run_id}/approvals: the tool calls of a chat run that need (or needed) a person's
approval, and deciding one.

Anyone who may read the run's conversation sees its approvals; deciding needs the editor role on it
(viewers get 403, everyone else the run's 404). A decision is recorded in the conversation's stream
(``domain.chat.turns.decide_approval``, one write transaction, audited with the request's metadata)
and then nudges the waiting run (``infra.chat.approvals``), which publishes ``approval.decided`` and
runs or refuses the call. Deciding twice, or after the run ended, is 409 ``approval_decided``.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import JSONBody, PathParameter
from msgspec import Meta

from api.context import event_metadata
from api.pagination import Page
from api.runs.controller import RunId, visible_run
from api.services import Services
from domain.chat import turns
from domain.chat.errors import ToolCallNotFound, ToolCallNotPending
from domain.shared.errors import Conflict, NotFound
from domain.shared.principal import Principal
from infra.chat import commands
from infra.chat.approvals import run_tool_calls
from infra.runs import runner as rr

ApprovalStatus = Literal["pending", "approved", "denied"]
ApprovalId = Annotated[uuid.UUID, PathParameter(description="The approval's id (UUID), from `approval.requested`.")]


class ApprovalNotFound(NotFound):
    """This run has no approval with this id."""

    code = "approval_not_found"


class ApprovalDecided(Conflict):
    """The approval was already decided (or timed out), or its run has ended."""

    code = "approval_decided"


class Approval(msgspec.Struct, kw_only=True):
    """A tool call waiting for (or given) a person's decision. ``decided_by`` is ``user:<id>`` or
    ``system`` (the approval timed out)."""

    id: uuid.UUID
    object: Literal["approval"] = "approval"
    run_id: uuid.UUID
    conversation_id: uuid.UUID
    message_id: uuid.UUID
    tool_call_id: str
    name: str
    arguments: dict[str, Any]
    status: ApprovalStatus
    decided_by: str | None = None
    reason: str | None = None


class ApprovalList(Page[Approval], kw_only=True):
    data: list[Approval]


class ApprovalDecision(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    decision: Literal["approve", "deny"]
    reason: Annotated[str, Meta(max_length=2000, description="Why; the model sees it on a denial.")] | None = None


def _status(call: dict[str, Any]) -> ApprovalStatus:
    status = call.get("status")
    if status == "awaiting_approval":
        return "pending"
    return "denied" if status == "denied" else "approved"


def _approval(run_id: uuid.UUID, conversation_id: uuid.UUID, message_id: uuid.UUID, call: dict[str, Any]) -> Approval:
    """An approval from a stored tool call (``domain.chat.events.ToolCallRecord`` as JSON)."""
    return Approval(
        id=uuid.UUID(str(call["approval_id"])),
        run_id=run_id,
        conversation_id=conversation_id,
        message_id=message_id,
        tool_call_id=str(call["tool_call_id"]),
        name=str(call["name"]),
        arguments=dict(call.get("arguments") or {}),
        status=_status(call),
        decided_by=call.get("decided_by"),
        reason=call.get("reason"),
    )


class RunApprovalController(Controller):
    path = "/runs"
    tags = ["runs"]
    opt = {"scope": "conversations"}

    @get(
        "/{run_id:str}/approvals",
        operation_id="ListRunApprovals",
        summary="The run's tool calls that need a person's approval (pending first, then decided)",
        responses={404: ResponseSpec(None, description="No run with this id visible to you (`run_not_found`).")},
    )
    async def list_approvals(
        self, services: NamedDependency[Services], principal: NamedDependency[Principal], run_id: RunId
    ) -> ApprovalList:
        async with services.db.read() as session:
            await visible_run(session, principal, run_id, "read")
            calls = await run_tool_calls(session, run_id)
        approvals = [_approval(run_id, cid, mid, call) for cid, mid, call in calls if call.get("approval_id")]
        approvals.sort(key=lambda a: a.status != "pending")
        return ApprovalList(data=approvals, has_more=False, next_cursor=None)

    @post(
        "/{run_id:str}/approvals/{approval_id:str}",
        operation_id="DecideRunApproval",
        summary="Approve or deny a pending tool call; the run continues with the decision",
        status_code=200,
        responses={
            404: ResponseSpec(
                None, description="No run (`run_not_found`) or approval (`approval_not_found`) with this id."
            ),
            403: ResponseSpec(None, description="Your role on the conversation does not allow this (`forbidden`)."),
            409: ResponseSpec(None, description="Already decided, timed out, or the run ended (`approval_decided`)."),
        },
    )
    async def decide_approval(
        self,
        request: Request[Any, Any, Any],
        services: NamedDependency[Services],
        principal: NamedDependency[Principal],
        run_id: RunId,
        approval_id: ApprovalId,
        data: JSONBody[ApprovalDecision],
    ) -> Approval:
        meta = event_metadata(request, principal)
        async with services.db.write() as session:
            run = await visible_run(session, principal, run_id, "update")
            calls = await run_tool_calls(session, run_id)
            if not any(str(call.get("approval_id")) == str(approval_id) for _, _, call in calls):
                raise ApprovalNotFound()
            if run.conversation_id is None or run.finished:
                raise ApprovalDecided()
            loaded = await commands.load_conversation(session, run.conversation_id)
            try:
                events = turns.decide_approval(
                    loaded.state,
                    approval_id=approval_id,
                    approve=data.decision == "approve",
                    decided_by=f"user:{principal.user_id}",
                    reason=data.reason,
                )
            except (ToolCallNotFound, ToolCallNotPending):
                raise ApprovalDecided() from None
            applied = await commands.append(session, run.conversation_id, loaded, events, meta)
        if services.runner is None or not services.runner.nudge_local(run_id):
            await rr.notify_nudge(services.redis, run_id)  # the run lives in another process
        decided = turns.approval_call(applied.state, approval_id)
        return _approval(run_id, run.conversation_id, decided.message_id, msgspec.to_builtins(decided))
