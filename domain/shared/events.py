"""Domain events: msgspec payloads with stable, explicitly registered type ids, plus metadata.

A type id names a schema version (``"chat.message_posted.v1"``); a new incompatible schema gets a
new id and an upcaster from the old one (see ``infra.eventstore.codec``). Ids are never module paths.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime
from typing import ClassVar, TypeVar

import msgspec

from domain.shared.ids import new_id


class Event(msgspec.Struct, frozen=True, kw_only=True):
    """Base of every event payload. Subclasses are registered with ``@event_type("ctx.name.v1")``."""

    type_id: ClassVar[str]


E = TypeVar("E", bound=type[Event])

_REGISTRY: dict[str, type[Event]] = {}


def event_type(type_id: str) -> Callable[[E], E]:
    """Register ``cls`` under ``type_id`` (``<context>.<past_tense_name>.v<N>``); duplicates are errors."""
    parts = type_id.split(".")
    if len(parts) < 3 or not parts[-1].startswith("v") or not parts[-1][1:].isdigit():
        raise ValueError(f"event type id {type_id!r} must look like 'context.name.v1'")

    def register(cls: E) -> E:
        existing = _REGISTRY.get(type_id)
        if existing is not None and existing is not cls:
            raise ValueError(f"event type id {type_id!r} already registered by {existing.__qualname__}")
        cls.type_id = type_id
        _REGISTRY[type_id] = cls
        return cls

    return register


def registered_types() -> dict[str, type[Event]]:
    return dict(_REGISTRY)


def lookup(type_id: str) -> type[Event] | None:
    return _REGISTRY.get(type_id)


class EventMetadata(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Who caused an event and within what: the audit facts carried by every event."""

    tenant_id: str | None = None
    actor: str | None = None
    """``user:<id>``, ``api_key:<id>``, ``system`` or ``worker:<actor name>``."""
    request_id: str | None = None
    causation_id: str | None = None
    """The id of the event or command that directly caused this one."""
    correlation_id: str | None = None
    """The id shared by every event of one logical operation."""
    ip: str | None = None
    user_agent: str | None = None


class NewEvent(msgspec.Struct, frozen=True, kw_only=True):
    """An event about to be appended."""

    payload: Event
    metadata: EventMetadata = EventMetadata()
    event_id: uuid.UUID = msgspec.field(default_factory=new_id)


class RecordedEvent(msgspec.Struct, frozen=True, kw_only=True):
    """An event as stored: its place in its stream (``version``) and in the global order (``position``)."""

    event_id: uuid.UUID
    stream_id: str
    version: int
    position: int
    type_id: str
    payload: Event
    metadata: EventMetadata
    recorded_at: datetime
