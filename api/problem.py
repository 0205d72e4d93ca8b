"""RFC 9457 problem details: the one error body every 4xx/5xx of the API carries."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import msgspec
from litestar import Request, Response

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_TYPE_BASE = "https://liteskill.dev/problems/"


class FieldError(msgspec.Struct, omit_defaults=True, kw_only=True):
    """One invalid input: ``pointer`` (JSON Pointer into the body) or ``parameter`` (query/header/path)."""

    detail: str
    code: str
    pointer: str | None = None
    parameter: str | None = None


class Problem(msgspec.Struct, omit_defaults=True, kw_only=True):
    """An RFC 9457 problem document; ``code`` is stable and meant for clients to switch on."""

    type: str
    title: str
    status: int
    code: str
    detail: str | None = None
    instance: str | None = None
    request_id: str | None = None
    errors: list[FieldError] | None = None


def problem_type(code: str) -> str:
    return PROBLEM_TYPE_BASE + code.replace("_", "-")


def _request_id(request: Request[Any, Any, Any] | None) -> str | None:
    if request is None:
        return None
    rid = dict(request.scope).get("request_id")
    return rid if isinstance(rid, str) else None


def make_problem(
    status: int,
    code: str,
    detail: str | None = None,
    *,
    request: Request[Any, Any, Any] | None = None,
    errors: list[FieldError] | None = None,
    title: str | None = None,
) -> Problem:
    rid = _request_id(request)
    return Problem(
        type=problem_type(code),
        title=title or HTTPStatus(status).phrase,
        status=status,
        code=code,
        detail=detail,
        instance=request.url.path if request is not None else None,
        request_id=rid,
        errors=errors or None,
    )


def problem_response(problem: Problem, headers: dict[str, str] | None = None) -> Response[bytes]:
    return Response(
        content=msgspec.json.encode(problem),
        status_code=problem.status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers=headers,
    )
