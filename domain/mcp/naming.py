"""Qualified tool names: ``<slug(server name)>__<tool>``, valid as a provider tool name
([A-Za-z0-9_-]{1,64}), so two servers can both offer ``search`` without clashing.

Names are recomputed from the servers' tool lists, never parsed back: sanitising and shortening are
lossy. Within one listing a clash (two servers with the same slug, or shortening) is resolved by
naming every clashing tool with its server's id prefix (``<slug>-<id6>__<tool>``), which does not
depend on the selection, and, should that still clash, a numeric suffix.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Iterable

MAX_NAME = 64
MAX_SLUG = 24
_NOT_SLUG = re.compile(r"[^a-z0-9]+")
_NOT_NAME = re.compile(r"[^A-Za-z0-9_-]")
VALID_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def slug(server_name: str) -> str:
    """Lower-case letters, digits and dashes, at most 24 characters; ``mcp`` if nothing is left."""
    value = _NOT_SLUG.sub("-", server_name.lower()).strip("-")[:MAX_SLUG].strip("-")
    return value or "mcp"


def _join(prefix: str, tool: str) -> str:
    part = _NOT_NAME.sub("_", tool) or "tool"
    name = f"{prefix}__{part}"
    if len(name) <= MAX_NAME:
        return name
    digest = hashlib.sha256(tool.encode()).hexdigest()[:6]
    keep = MAX_NAME - len(prefix) - 2 - 7
    return f"{prefix}__{part[:keep]}_{digest}"


def base_name(server_name: str, tool: str) -> str:
    """The preferred qualified name: ``<slug>__<tool>``."""
    return _join(slug(server_name), tool)


def server_name_with_id(server_id: uuid.UUID, server_name: str, tool: str) -> str:
    """The name used when the preferred one clashes: ``<slug>-<server id prefix>__<tool>``."""
    return _join(f"{slug(server_name)}-{server_id.hex[:6]}", tool)


def qualify(tools: Iterable[tuple[uuid.UUID, str, str]]) -> list[str]:
    """A qualified name for each ``(server id, server name, tool)``, unique within the answer, in order."""
    items = list(tools)
    bases = [base_name(name, tool) for _, name, tool in items]
    counts: dict[str, int] = {}
    for b in bases:
        counts[b] = counts.get(b, 0) + 1
    names = [
        server_name_with_id(sid, name, tool) if counts[b] > 1 else b
        for (sid, name, tool), b in zip(items, bases, strict=True)
    ]
    seen: set[str] = set()
    out: list[str] = []
    for name in names:
        candidate, n = name, 2
        while candidate in seen:
            suffix = f"_{n}"
            candidate = name[: MAX_NAME - len(suffix)] + suffix
            n += 1
        seen.add(candidate)
        out.append(candidate)
    return out


def candidates(server_id: uuid.UUID, server_name: str, tool: str) -> tuple[str, str]:
    """The names a call may use for this tool: the preferred one and the id-qualified one."""
    return base_name(server_name, tool), server_name_with_id(server_id, server_name, tool)
