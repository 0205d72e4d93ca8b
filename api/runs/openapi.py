"""The run event union as the OpenAPI document publishes it: every variant with its envelope
(``type``, ``seq``, ``run_id``, ``created_at``) required, as every frame carries it.

Producers build domain.runs.events payloads whose envelope the stream writer stamps (so it has
placeholder defaults there); these doc-only twins state the wire shape for generated clients.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from functools import reduce
from typing import Any, get_args

import msgspec

from domain.runs.events import AnyRunEvent

_ENVELOPE = ("seq", "run_id", "created_at")


def _wire_type(cls: type[msgspec.Struct]) -> Any:
    fields: list[Any] = [
        ("seq", int),
        ("run_id", uuid.UUID),
        ("created_at", datetime),
    ]
    for f in msgspec.structs.fields(cls):
        if f.name in _ENVELOPE:
            continue
        if f.default is not msgspec.NODEFAULT:
            fields.append((f.name, f.type, f.default))
        elif f.default_factory is not msgspec.NODEFAULT:
            fields.append((f.name, f.type, msgspec.field(default_factory=f.default_factory)))
        else:
            fields.append((f.name, f.type))
    config = cls.__struct_config__
    return msgspec.defstruct(
        f"{cls.__name__}Event",  # component names that cannot clash with resources (Usage, Message...)
        fields,
        tag=config.tag,
        tag_field=config.tag_field,
        kw_only=True,
        module=__name__,
    )


RUN_EVENT_VARIANTS: tuple[Any, ...] = tuple(_wire_type(cls) for cls in get_args(AnyRunEvent))
RunEventFrame: Any = reduce(lambda a, b: a | b, RUN_EVENT_VARIANTS)
"""The union of frames on ``GET /api/v1/runs/{run_id}/events`` (discriminated on ``type``)."""
