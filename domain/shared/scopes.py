"""API-key scopes (pure): what a scope string means, which one a request needs, and whether a key's
scopes cover it.

A scope is ``<resource>:<access>`` with ``access`` one of ``read``, ``write`` or ``*`` (both), or a
wildcard: ``*:read`` (read everything), ``*:write`` (write everything), ``*`` or ``*:*`` (all).
Reading (GET, HEAD) needs ``read``, every other method ``write``; ``write`` does not imply ``read``
(grant ``<resource>:*`` for both). Resources are the names routes declare; a route that declares
none needs the full ``*``, so a forgotten declaration fails closed.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Literal

Access = Literal["read", "write"]
ALL = "*"
_ACCESS = ("read", "write", "*")
_READ_METHODS = frozenset({"GET", "HEAD"})


def access_of(method: str) -> Access:
    return "read" if method.upper() in _READ_METHODS else "write"


def required(resource: str | None, method: str) -> str:
    """The scope a request needs: ``<resource>:<access>``, or ``*`` when the route declares no resource."""
    return ALL if resource is None else f"{resource}:{access_of(method)}"


def is_known(scope: str, resources: Collection[str]) -> bool:
    """Whether ``scope`` is well-formed and names a declared resource (or a wildcard)."""
    if scope == ALL:
        return True
    resource, sep, access = scope.partition(":")
    return bool(sep) and access in _ACCESS and (resource == ALL or resource in resources)


def allows(granted: Iterable[str], resource: str | None, access: Access) -> bool:
    """Whether any of ``granted`` covers ``access`` on ``resource`` (None: an undeclared route,
    which only the full ``*`` covers)."""
    for scope in granted:
        if scope in (ALL, "*:*"):
            return True
        if resource is None:
            continue
        res, _, acc = scope.partition(":")
        if res in (ALL, resource) and acc in ("*", access):
            return True
    return False


def effective(stored: Iterable[str]) -> tuple[str, ...]:
    """A stored key's scopes; an empty list (keys created before scopes were enforced) means ``*``."""
    scopes = tuple(stored)
    return scopes or (ALL,)
