"""Audit events of the prompt library, one stream per prompt (``prompt-<uuid>``)."""

from __future__ import annotations

import uuid

from domain.shared.events import Event, event_type


def stream_id(prompt_id: uuid.UUID) -> str:
    return f"prompt-{prompt_id}"


@event_type("prompts.prompt_created.v1")
class PromptCreated(Event, frozen=True, kw_only=True):
    prompt_id: uuid.UUID
    name: str
    description: str | None
    body: str
    tags: list[str]
    version: int


@event_type("prompts.prompt_updated.v1")
class PromptUpdated(Event, frozen=True, kw_only=True):
    """The prompt after the change; ``changed`` names the fields the change touched."""

    prompt_id: uuid.UUID
    changed: list[str]
    name: str
    description: str | None
    body: str
    tags: list[str]
    version: int


@event_type("prompts.prompt_deleted.v1")
class PromptDeleted(Event, frozen=True, kw_only=True):
    prompt_id: uuid.UUID
    version: int
    """The version the prompt had when it was deleted."""
