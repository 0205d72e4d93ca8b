"""Cursor pagination for every list route: ``?limit=&cursor=``, the list envelope and the ``Link`` header.

A cursor is the sort key of the last row a page returned, as msgspec JSON in unpadded base64url.
It is opaque to clients (they only echo it back) but not secret: a forged cursor can only move the
starting point of a query the caller may already run. Routes fetch ``limit + 1`` rows and let
``paginate`` turn the extra row into ``has_more``.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Callable, Sequence
from typing import Annotated, Any, Generic, Literal, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import msgspec
from litestar import Request, Response
from litestar.params import QueryParameter

from api.errors import ApiError
from api.problem import FieldError

T = TypeVar("T")
K = TypeVar("K")
R = TypeVar("R")

DEFAULT_LIMIT = 20
MAX_LIMIT = 100
MAX_CURSOR_CHARS = 1024

LimitParam = Annotated[
    int,
    QueryParameter(
        name="limit", ge=1, le=MAX_LIMIT, description=f"Items per page (1-{MAX_LIMIT}, default {DEFAULT_LIMIT})."
    ),
]
CursorParam = Annotated[
    str | None,
    QueryParameter(name="cursor", description="Opaque cursor from the previous page's `next_cursor`."),
]


class Page(msgspec.Struct, Generic[T], kw_only=True):
    """The list envelope. Subclass it per item type (``class PromptList(Page[Prompt])``, restating
    ``data: list[Prompt]``) so the OpenAPI component gets a readable name and a typed ``data``."""

    object: Literal["list"] = "list"
    data: list[T]
    has_more: bool
    next_cursor: str | None


class IdCursor(msgspec.Struct, array_like=True, frozen=True):
    """The position after a row of a list ordered by its UUIDv7 id (newest first)."""

    id: uuid.UUID


def encode_cursor(key: Any) -> str:
    return base64.urlsafe_b64encode(msgspec.json.encode(key)).rstrip(b"=").decode("ascii")


def decode_cursor(raw: str, type: type[K]) -> K:
    """The sort key inside ``raw``; anything that is not a cursor of this list is a 400 ``invalid_cursor``."""
    try:
        if not raw or len(raw) > MAX_CURSOR_CHARS:
            raise ValueError("bad length")
        data = base64.b64decode(raw + "=" * (-len(raw) % 4), altchars=b"-_", validate=True)
        return msgspec.json.decode(data, type=type)
    except (ValueError, binascii.Error, msgspec.DecodeError, msgspec.ValidationError):
        raise ApiError(
            400,
            "invalid_cursor",
            "The cursor is not valid for this list; start again without one.",
            errors=[FieldError(detail="Not a cursor of this list", code="invalid_cursor", parameter="cursor")],
        ) from None


def paginate(rows: Sequence[R], limit: int, key: Callable[[R], Any]) -> tuple[list[R], bool, str | None]:
    """Split ``limit + 1`` fetched rows into (page, has_more, next_cursor)."""
    has_more = len(rows) > limit
    page = list(rows[:limit])
    next_cursor = encode_cursor(key(page[-1])) if has_more and page else None
    return page, has_more, next_cursor


def next_link(request: Request[Any, Any, Any], cursor: str, limit: int, public_url: str | None = None) -> str:
    """The request's own URL with ``cursor`` and ``limit`` replaced; other query parameters kept."""
    url = urlsplit(str(request.url))
    query = [(k, v) for k, v in parse_qsl(url.query, keep_blank_values=True) if k not in ("cursor", "limit")]
    query += [("cursor", cursor), ("limit", str(limit))]
    if public_url:
        base = urlsplit(public_url.rstrip("/"))
        # public_url names where the app is mounted; request paths already start with /api/v1.
        return urlunsplit((base.scheme, base.netloc, base.path + url.path, urlencode(query), ""))
    return urlunsplit((url.scheme, url.netloc, url.path, urlencode(query), ""))


P = TypeVar("P", bound=Page[Any])


def page_response(page: P, request: Request[Any, Any, Any], limit: int, public_url: str | None = None) -> Response[P]:
    """``page`` (a ``Page`` subclass) as a response, with ``Link: <...>; rel="next"`` when there is more."""
    headers: dict[str, str] = {}
    if page.next_cursor:
        headers["Link"] = f'<{next_link(request, page.next_cursor, limit, public_url)}>; rel="next"'
    return Response(page, headers=headers)
