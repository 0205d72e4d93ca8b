"""Where API-key scopes meet routes: the resource each handler declares (``opt={"scope": ...}`` on
its controller or itself), whether a handler depends on the caller, and the scope vocabulary.

The vocabulary is the set of declared resources, read from the app's routes once and cached on the
app, so a new controller's resource becomes a valid key scope by declaring it.
"""

from __future__ import annotations

from typing import Any

from litestar import Litestar
from litestar.handlers.http_handlers import HTTPRouteHandler
from litestar.routes import HTTPRoute

PRINCIPAL = "principal"
_CACHE = "scope_vocabulary"


def resource_of(handler: Any) -> str | None:
    resource = handler.opt.get("scope")
    return resource if isinstance(resource, str) else None


def http_handlers(app: Litestar) -> list[HTTPRouteHandler]:
    found: list[HTTPRouteHandler] = []
    for route in app.routes:
        if isinstance(route, HTTPRoute):
            found.extend(route.route_handlers)
    return found


def uses_principal(handler: HTTPRouteHandler) -> bool:
    """Whether the handler needs the caller, directly or through another dependency."""
    dependencies = handler.resolve_dependencies()
    seen: set[str] = set()
    pending = list(handler.parsed_fn_signature.parameters)
    while pending:
        name = pending.pop()
        if name == PRINCIPAL:
            return True
        if name in seen or name not in dependencies:
            continue
        seen.add(name)
        pending.extend(dependencies[name].parsed_fn_signature.parameters)
    return False


def vocabulary(app: Litestar) -> frozenset[str]:
    """Every resource a route declares: the names a key scope may use."""
    cached = app.state.get(_CACHE)
    if isinstance(cached, frozenset):
        return cached
    found = frozenset(r for r in map(resource_of, http_handlers(app)) if r is not None)
    app.state[_CACHE] = found
    return found
