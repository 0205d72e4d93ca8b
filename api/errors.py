"""One table from exceptions to problem responses: status, stable ``code`` and field errors.

Every error the app can produce passes through here, including Litestar's own (unknown route,
wrong method, validation, body too large) and anything unexpected (500, no details leaked).
"""

from __future__ import annotations

import logging
import re
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException

from api.problem import FieldError, make_problem, problem_response
from domain.shared import errors as d

log = logging.getLogger("liteskill.api")

# Domain error class -> HTTP status. Subclasses inherit their parent's status unless listed.
DOMAIN_STATUS: dict[type[d.DomainError], int] = {
    d.Unauthenticated: 401,
    d.Forbidden: 403,
    d.NotFound: 404,
    d.Conflict: 409,
    d.PreconditionFailed: 412,
    d.Invalid: 422,
    d.PreconditionRequired: 428,
}

# Litestar/HTTP status -> default problem code when nothing more specific is known.
STATUS_CODES: dict[int, str] = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    410: "gone",
    412: "precondition_failed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "unprocessable",
    428: "precondition_required",
    429: "rate_limited",
    500: "internal_error",
    503: "service_unavailable",
}


class ApiError(HTTPException):
    """An HTTP-level error raised by the edge itself (not by the domain), with a problem ``code``."""

    def __init__(
        self,
        status_code: int,
        code: str,
        detail: str,
        *,
        errors: list[FieldError] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail=detail, status_code=status_code, headers=headers)
        self.code = code
        self.errors = errors


def status_for(exc: d.DomainError) -> int:
    for cls in type(exc).__mro__:
        status = DOMAIN_STATUS.get(cls)
        if status is not None:
            return int(status)
    return 400


_SEGMENT = re.compile(r"\[(\d+)\]|\.?([^.\[\]]+)")


def to_pointer(key: str) -> str:
    """``items[0].name`` or ``items.0.name`` -> ``/items/0/name`` (RFC 6901 escaping)."""
    parts = []
    for index, name in _SEGMENT.findall(key.removeprefix("$")):
        part = index or name
        parts.append(part.replace("~", "~0").replace("/", "~1"))
    return "/" + "/".join(parts) if parts else ""


_MISSING_FIELD = re.compile(r"^Object missing required field `([^`]+)`$")


def _validation_errors(exc: ValidationException) -> list[FieldError]:
    out: list[FieldError] = []
    extra = exc.extra if isinstance(exc.extra, list) else []
    for item in extra:
        if not isinstance(item, dict):
            continue
        message = str(item.get("message", "invalid value"))
        key = str(item.get("key", ""))
        source = item.get("source")
        # msgspec puts the location in the message: "Expected `str`, got `int` - at `$.name`"
        if " - at `" in message:
            message, _, loc = message.partition(" - at `")
            key = key or loc.rstrip("`")
            loc_key = loc.rstrip("`")
            if loc_key.startswith("$"):
                key = loc_key
        code = "invalid"
        missing = _MISSING_FIELD.match(message)
        if missing is not None:
            # msgspec names the missing field in the message and locates its parent object.
            parent = key if key.startswith("$") else "$"
            key, code = f"{parent}.{missing.group(1)}", "missing"
            source = source or "body"
        if source == "body" or (source is None and key.startswith("$")):
            out.append(FieldError(detail=message, pointer=to_pointer(key), code=code))
        elif source is None and not key:
            out.append(FieldError(detail=message, pointer="", code="invalid"))
        else:
            out.append(FieldError(detail=message, parameter=key or None, code="invalid"))
    return out


def handle_domain_error(request: Request[Any, Any, Any], exc: d.DomainError) -> Response[bytes]:
    status = status_for(exc)
    errors = exc.extra.get("errors") if isinstance(exc.extra.get("errors"), list) else None
    headers = exc.extra.get("headers") if isinstance(exc.extra.get("headers"), dict) else None
    return problem_response(make_problem(status, exc.code, exc.detail, request=request, errors=errors), headers)


def handle_http_exception(request: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
    status = exc.status_code
    if isinstance(exc, ApiError):
        problem = make_problem(status, exc.code, exc.detail, request=request, errors=exc.errors)
        return problem_response(problem, exc.headers)
    if isinstance(exc, ValidationException) or (status == 400 and exc.extra):
        errors = _validation_errors(exc) if isinstance(exc, ValidationException) else []
        detail = "The request is not valid." if errors else _client_detail(exc)
        problem = make_problem(400, "validation_error", detail, request=request, errors=errors)
        return problem_response(problem)
    if status >= 500:
        log.error("http error %s", status, extra={"path": request.url.path})
        detail = "The server could not handle this request." if status == 500 else exc.detail
        return problem_response(make_problem(status, STATUS_CODES.get(status, "server_error"), detail, request=request))
    code = STATUS_CODES.get(status, "client_error")
    if status == 400 and "json" in exc.detail.lower():
        code = "invalid_json"
    detail = _client_detail(exc)
    headers = dict(exc.headers) if exc.headers else None
    return problem_response(make_problem(status, code, detail, request=request), headers)


def _client_detail(exc: HTTPException) -> str:
    detail = exc.detail or ""
    if exc.status_code == 404:
        return "No resource at this path."
    if exc.status_code == 405:
        return "This method is not allowed on this path."
    if exc.status_code == 413:
        return "The request body is larger than this server accepts."
    return detail


def handle_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    log.exception("unhandled error", extra={"path": request.url.path, "method": request.method})
    problem = make_problem(500, "internal_error", "The server could not handle this request.", request=request)
    return problem_response(problem)


exception_handlers: dict[type[Exception] | int, Any] = {
    d.DomainError: handle_domain_error,
    HTTPException: handle_http_exception,
    Exception: handle_unexpected,
}
