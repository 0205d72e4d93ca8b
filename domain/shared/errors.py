"""Domain error hierarchy; the API maps each class to a status and a stable problem ``code``."""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """Base of every error the product raises on purpose. ``code`` is stable for clients."""

    code: str = "domain_error"

    def __init__(self, detail: str | None = None, *, code: str | None = None, **extra: Any) -> None:
        super().__init__(detail or self.__class__.__doc__ or self.code)
        self.detail = detail or (self.__class__.__doc__ or self.code).strip()
        if code is not None:
            self.code = code
        self.extra = extra


class NotFound(DomainError):
    """The resource does not exist or is not visible to the caller."""

    code = "not_found"


class Conflict(DomainError):
    """The request conflicts with the current state of the resource."""

    code = "conflict"


class ConcurrencyConflict(Conflict):
    """A stream was changed by someone else since it was read."""

    code = "concurrency_conflict"

    def __init__(self, stream_id: str = "", expected: int = -1, actual: int | None = None) -> None:
        super().__init__(
            f"stream {stream_id!r} expected at version {expected}, found {actual}",
            stream_id=stream_id,
        )
        self.stream_id = stream_id
        self.expected = expected
        self.actual = actual


class PreconditionFailed(DomainError):
    """The resource changed since the version named in If-Match."""

    code = "precondition_failed"


class PreconditionRequired(DomainError):
    """This change needs an If-Match header with the resource's current ETag."""

    code = "precondition_required"


class Invalid(DomainError):
    """The request is well-formed but breaks a rule of the domain."""

    code = "invalid"


class Forbidden(DomainError):
    """The caller may see the resource but not perform this action on it."""

    code = "forbidden"


class Unauthenticated(DomainError):
    """Credentials are missing or not valid."""

    code = "unauthenticated"
