"""/api/v1/usage: tokens, cost and call counts from the usage ledger (``usage_records``), summed in
SQL by UTC day, user, model and purpose.

Users see their own calls only; admins and holders of ``view_audit`` see their whole tenant (and may
narrow it to one user). Nothing crosses tenants: every query is bound to the caller's tenant.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any

from litestar import Controller, get
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import QueryParameter
from sqlalchemy import ColumnElement, Date, and_, cast, func, select

from api.errors import ApiError
from api.problem import FieldError
from api.services import Services
from api.usage.schemas import DIMENSIONS, Dimension, UsageGroup, UsageSummary, UsageTotals
from domain.llm.usage import Purpose
from domain.shared.principal import Principal
from infra.db.tables.llm import usage_records as t

DEFAULT_RANGE = timedelta(days=30)
MAX_RANGE = timedelta(days=366)
MAX_GROUPS = 10_000

SinceParam = Annotated[
    datetime | None,
    QueryParameter(name="since", description="Calls at or after this RFC 3339 time (default: `until` - 30 days)."),
]
UntilParam = Annotated[
    datetime | None, QueryParameter(name="until", description="Calls before this RFC 3339 time (default: now).")
]
GroupByParam = Annotated[
    str | None,
    QueryParameter(
        name="group_by",
        description="Comma-separated dimensions among `day`, `user`, `model`, `purpose` (default `day`).",
        max_length=64,
    ),
]
UserParam = Annotated[
    uuid.UUID | None,
    QueryParameter(name="user_id", description="Only this user's calls (admins; others may name only themselves)."),
]
PurposeParam = Annotated[Purpose | None, QueryParameter(name="purpose", description="Only calls made for this.")]

_RESPONSES = {
    403: ResponseSpec(None, description="`user_id` names another user and the caller is not an admin (`forbidden`)."),
}


def _invalid(parameter: str, detail: str) -> ApiError:
    return ApiError(
        400,
        "validation_error",
        "The request is not valid.",
        errors=[FieldError(detail=detail, code="invalid", parameter=parameter)],
    )


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _dimensions(raw: str | None) -> list[Dimension]:
    if raw is None or not raw.strip():
        return ["day"]
    asked: list[Dimension] = []
    for part in raw.split(","):
        name = part.strip()
        found = next((d for d in DIMENSIONS if d == name), None)
        if found is None:
            raise _invalid("group_by", f"Unknown dimension {name!r}: use day, user, model or purpose.")
        if found not in asked:
            asked.append(found)
    return sorted(asked, key=DIMENSIONS.index)


def _range(since: datetime | None, until: datetime | None) -> tuple[datetime, datetime]:
    end = _utc(until) if until is not None else datetime.now(UTC)
    start = _utc(since) if since is not None else end - DEFAULT_RANGE
    if start >= end:
        raise _invalid("since", "`since` must be before `until`.")
    if end - start > MAX_RANGE:
        raise _invalid("since", "The range spans at most 366 days.")
    return start, end


def _text(cost: Decimal | None) -> str | None:
    if cost is None:
        return None
    return format(cost.normalize(), "f") if cost else "0"


_DAY = cast(func.timezone("UTC", t.c.created_at), Date)


def _keys(dimensions: list[Dimension], by_currency: bool) -> list[Any]:
    keys: list[Any] = []
    for dimension in dimensions:
        if dimension == "day":
            keys.append(_DAY.label("day"))
        elif dimension == "user":
            keys.append(t.c.user_id)
        elif dimension == "model":
            keys.extend([t.c.model_id, t.c.model_name])
        else:
            keys.append(t.c.purpose)
    if by_currency:
        keys.append(t.c.currency)
    return keys


class UsageController(Controller):
    path = "/usage"
    tags = ["usage"]
    opt = {"scope": "usage"}

    @get(
        "",
        operation_id="GetUsage",
        summary="Summarise token usage and cost by day, user, model or purpose",
        responses=_RESPONSES,
    )
    async def get_usage(
        self,
        services: NamedDependency[Services],
        principal: NamedDependency[Principal],
        since: SinceParam = None,
        until: UntilParam = None,
        group_by: GroupByParam = None,
        user_id: UserParam = None,
        purpose: PurposeParam = None,
    ) -> UsageSummary:
        """Users get their own calls; admins (or holders of `view_audit`) get the tenant's."""
        dimensions = _dimensions(group_by)
        start, end = _range(since, until)
        tenant_wide = principal.has("view_audit")
        if user_id is not None and user_id != principal.user_id and not tenant_wide:
            raise ApiError(403, "forbidden", "Only admins read the usage of other users.")
        where: list[ColumnElement[bool]] = [
            t.c.tenant_id == principal.tenant_id,
            t.c.created_at >= start,
            t.c.created_at < end,
        ]
        if not tenant_wide:
            where.append(t.c.user_id == principal.user_id)
        if user_id is not None:
            where.append(t.c.user_id == user_id)
        if purpose is not None:
            where.append(t.c.purpose == purpose)
        condition = and_(*where)
        async with services.db.read() as session:
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
            keys = _keys(dimensions, by_currency)
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
                .limit(MAX_GROUPS + 1)
            )
            rows = (await session.execute(query)).all()
        if len(rows) > MAX_GROUPS:
            raise ApiError(400, "usage_too_large", "Too many groups: narrow the range or group by fewer dimensions.")
        data = [self._group(row, dimensions, by_currency) for row in rows]
        costs = [row.cost for row in rows if row.cost is not None]
        totals = UsageTotals(
            input_tokens=sum(g.input_tokens for g in data),
            output_tokens=sum(g.output_tokens for g in data),
            cached_input_tokens=sum(g.cached_input_tokens for g in data),
            cost=None if by_currency or not costs else _text(sum(costs, Decimal(0))),
            calls=sum(g.calls for g in data),
            failed=sum(g.failed for g in data),
        )
        currency = None if by_currency or not currencies else currencies[0]
        return UsageSummary(currency=currency, since=start, until=end, group_by=dimensions, data=data, totals=totals)

    @staticmethod
    def _group(row: Any, dimensions: list[Dimension], by_currency: bool) -> UsageGroup:
        group = UsageGroup(
            input_tokens=int(row.input_tokens),
            output_tokens=int(row.output_tokens),
            cached_input_tokens=int(row.cached_input_tokens),
            cost=_text(row.cost),
            calls=int(row.calls),
            failed=int(row.failed),
        )
        if "day" in dimensions:
            group.day = row.day
        if "user" in dimensions:
            group.user_id = row.user_id
        if "model" in dimensions:
            group.model_id = row.model_id
            group.model_name = row.model_name
        if "purpose" in dimensions:
            group.purpose = row.purpose
        if by_currency:
            group.currency = row.currency
        return group
