"""Strong ETags from a resource's version, ``If-Match`` on changes (412) and ``If-None-Match`` on reads (304).

``If-Match`` is optional by default: a client that sends it gets lost-update protection, one that
does not (a curl script, a simple SDK call) gets last-writer-wins. CONTRACT.md asks for 412 on a
mismatch but does not require the header; a route can demand it with ``required=True`` (428).
"""

from __future__ import annotations

import re
from typing import Annotated

from litestar.params import HeaderParameter

from api.errors import ApiError

_ENTITY_TAG = re.compile(r'\s*(W/)?("[^"]*")\s*(?:,|$)')

IfMatchHeader = Annotated[
    str | None,
    HeaderParameter(
        name="If-Match",
        description="The ETag the change is based on; a stale one is refused with 412.",
    ),
]
IfNoneMatchHeader = Annotated[
    str | None,
    HeaderParameter(name="If-None-Match", description="An ETag the client holds; unchanged resources answer 304."),
]


def etag(version: int) -> str:
    """The strong ETag of a resource at ``version``."""
    return f'"{version}"'


def parse_entity_tags(header: str) -> list[tuple[bool, str]] | None:
    """``(weak, opaque_tag)`` pairs of an If-Match / If-None-Match value, ``None`` for ``*``.
    Malformed members are skipped (they can never match)."""
    if header.strip() == "*":
        return None
    return [(bool(weak), tag) for weak, tag in _ENTITY_TAG.findall(header)]


def check_if_match(header: str | None, version: int, *, required: bool = False) -> None:
    """Raise 412 ``precondition_failed`` unless ``header`` names the current version (strong
    comparison, RFC 9110 13.1.1). A missing header passes unless ``required`` (then 428)."""
    current = etag(version)
    if header is None:
        if required:
            raise ApiError(428, "precondition_required", "Send If-Match with the resource's current ETag.")
        return
    tags = parse_entity_tags(header)
    if tags is None or any(not weak and tag == current for weak, tag in tags):
        return
    raise ApiError(
        412,
        "precondition_failed",
        "The resource changed since the ETag in If-Match; fetch it again and retry.",
        headers={"ETag": current},
    )


def is_not_modified(header: str | None, version: int) -> bool:
    """Whether a GET with ``If-None-Match: header`` may answer 304 (weak comparison)."""
    if header is None:
        return False
    tags = parse_entity_tags(header)
    return tags is None or any(tag == etag(version) for _, tag in tags)
