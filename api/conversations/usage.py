"""``GET /api/v1/conversations/{id}/usage``: the tokens and cost of a conversation's model calls (its
turns and its generated title), in total and per model, summed in SQL from the usage ledger
(``usage_records.conversation_id``) with the conventions of /api/v1/usage: costs are exact decimal
strings in ``currency``; with more than one currency each model group names its own and the total
cost is null. Viewers of the conversation may read it; anyone else gets 404 ``conversation_not_found``.
"""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Annotated, Literal

import msgspec
from litestar import Controller, get
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import PathParameter
from sqlalchemy import func, select

from api.services import Services
from api.usage.controller import UsageController, _keys
from api.usage.controller import _text as cost_text
from api.usage.schemas import UsageGroup, UsageTotals
from domain.chat.errors import ConversationNotFound
from domain.shared.principal import Principal
from infra.access import acl
from infra.db.tables.chat import conversations as ct
from infra.db.tables.llm import usage_records as t

ENTITY = "conversation"

ConversationId = Annotated[uuid.UUID, PathParameter(description="The conversation's id (UUID).")]


class ConversationUsage(msgspec.Struct, kw_only=True):
    """A conversation's model calls summed: ``models`` has one group per model (``model_id``,
    ``model_name``), ``totals`` all of them."""

    object: Literal["conversation_usage"] = "conversation_usage"
    conversation_id: uuid.UUID
    currency: str | None
    """The currency of every cost here; null when there are none or more than one (then each
    group names its own and ``totals.cost`` is null)."""
    totals: UsageTotals
    models: list[UsageGroup]


class ConversationUsageController(Controller):
    path = "/conversations"
    tags = ["conversations"]
    opt = {"scope": "conversations"}

    @get(
        "/{conversation_id:str}/usage",
        operation_id="GetConversationUsage",
        summary="Summarise the conversation's token usage and cost, in total and per model",
        responses={404: ResponseSpec(None, description="No conversation with this id (`conversation_not_found`).")},
    )
    async def get_conversation_usage(
        self,
        services: NamedDependency[Services],
        principal: NamedDependency[Principal],
        conversation_id: ConversationId,
    ) -> ConversationUsage:
        """Every call made for the conversation, whoever made it (the tenant's own ledger only)."""
        condition = (t.c.tenant_id == principal.tenant_id) & (t.c.conversation_id == conversation_id)
        async with services.db.read() as session:
            await acl.require(session, principal, ENTITY, conversation_id, "read", ConversationNotFound)
            exists = (
                await session.execute(select(ct.c.id).where(ct.c.id == conversation_id, ct.c.status != "deleted"))
            ).one_or_none()
            if exists is None:
                raise ConversationNotFound()
            currencies = (
                (
                    await session.execute(
                        select(t.c.currency).where(condition, t.c.currency.is_not(None)).distinct().limit(2)
                    )
                )
                .scalars()
                .all()
            )
            by_currency = len(currencies) > 1
            keys = _keys(["model"], by_currency)
            query = (
                select(
                    *keys,
                    func.coalesce(func.sum(t.c.input_tokens), 0).label("input_tokens"),
                    func.coalesce(func.sum(t.c.output_tokens), 0).label("output_tokens"),
                    func.coalesce(func.sum(t.c.cached_input_tokens), 0).label("cached_input_tokens"),
                    func.sum(t.c.cost).label("cost"),
                    func.count().label("calls"),
                    func.count().filter(t.c.status == "failed").label("failed"),
                )
                .where(condition)
                .group_by(*keys)
                .order_by(*(k.asc().nulls_first() for k in keys))
            )
            rows = (await session.execute(query)).all()
        models = [UsageController._group(row, ["model"], by_currency) for row in rows]
        costs = [row.cost for row in rows if row.cost is not None]
        totals = UsageTotals(
            input_tokens=sum(g.input_tokens for g in models),
            output_tokens=sum(g.output_tokens for g in models),
            cached_input_tokens=sum(g.cached_input_tokens for g in models),
            cost=None if by_currency or not costs else cost_text(sum(costs, Decimal(0))),
            calls=sum(g.calls for g in models),
            failed=sum(g.failed for g in models),
        )
        currency = None if by_currency or not currencies else currencies[0]
        return ConversationUsage(conversation_id=conversation_id, currency=currency, totals=totals, models=models)
