"""Event payload codec: msgspec JSON by registered type id, with upcasters applied on read.

An upcaster maps an old type id's raw payload to a newer type id and payload
(``"chat.message_posted.v1"`` -> ``("chat.message_posted.v2", {...})``); chains are followed until
a type id has no upcaster. Stored rows are never rewritten.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import msgspec

from domain.shared.events import Event, lookup

Upcaster = Callable[[dict[str, Any]], tuple[str, dict[str, Any]]]

_UPCASTERS: dict[str, Upcaster] = {}


class UnknownEventType(LookupError):
    """A stored type id has neither a registered event class nor an upcaster."""


def upcaster(old_type_id: str) -> Callable[[Upcaster], Upcaster]:
    """Register ``fn`` as the upcaster of ``old_type_id`` in the default registry."""

    def register(fn: Upcaster) -> Upcaster:
        existing = _UPCASTERS.get(old_type_id)
        if existing is not None and existing is not fn:
            raise ValueError(f"upcaster for {old_type_id!r} already registered")
        _UPCASTERS[old_type_id] = fn
        return fn

    return register


def default_upcasters() -> dict[str, Upcaster]:
    return dict(_UPCASTERS)


_ENCODER = msgspec.json.Encoder()


class EventCodec:
    """Encodes payloads to JSON bytes and decodes (type id, JSON) back to registered ``Event`` classes."""

    def __init__(self, upcasters: Mapping[str, Upcaster] | None = None, *, max_upcasts: int = 32) -> None:
        self._upcasters = dict(_UPCASTERS if upcasters is None else upcasters)
        self._decoders: dict[str, msgspec.json.Decoder[Any]] = {}
        self._max_upcasts = max_upcasts

    def type_id(self, payload: Event) -> str:
        """The registered type id of ``payload``'s class (``UnknownEventType`` if unregistered)."""
        type_id: str | None = getattr(type(payload), "type_id", None)
        if type_id is None or lookup(type_id) is not type(payload):
            raise UnknownEventType(f"{type(payload).__qualname__} is not registered with @event_type")
        return type_id

    def encode(self, payload: Event) -> bytes:
        self.type_id(payload)
        return _ENCODER.encode(payload)

    def _decoder(self, type_id: str) -> msgspec.json.Decoder[Any]:
        decoder = self._decoders.get(type_id)
        if decoder is None:
            cls = lookup(type_id)
            if cls is None:
                raise UnknownEventType(f"no event class registered for {type_id!r}")
            decoder = self._decoders[type_id] = msgspec.json.Decoder(cls)
        return decoder

    def decode(self, type_id: str, data: bytes | str) -> Event:
        """The payload as its current class; upcasts first when ``type_id`` is an old schema."""
        if type_id not in self._upcasters:
            payload: Event = self._decoder(type_id).decode(data)
            return payload
        raw: dict[str, Any] = msgspec.json.decode(data, type=dict[str, Any])
        current = type_id
        for _ in range(self._max_upcasts):
            fn = self._upcasters.get(current)
            if fn is None:
                break
            current, raw = fn(raw)
        else:
            raise ValueError(f"upcaster chain from {type_id!r} does not terminate")
        cls = lookup(current)
        if cls is None:
            raise UnknownEventType(f"no event class registered for {current!r} (upcast from {type_id!r})")
        result: Event = msgspec.convert(raw, cls)
        return result
