"""Request and response bodies of /api/v1/prompts. Length limits here are the domain's
(``domain.prompts.model``), so they appear in OpenAPI and fail as 400 with a JSON Pointer."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

import msgspec
from msgspec import UNSET, Meta, UnsetType

from api.pagination import Page
from domain.prompts.model import BODY_MAX, DESCRIPTION_MAX, NAME_MAX, TAG_MAX, TAGS_MAX

Name = Annotated[str, Meta(min_length=1, max_length=NAME_MAX, description="Display name, unique or not.")]
Body = Annotated[str, Meta(min_length=1, max_length=BODY_MAX, description="The template text.")]
Description = Annotated[str, Meta(max_length=DESCRIPTION_MAX)]
Tag = Annotated[str, Meta(min_length=1, max_length=TAG_MAX)]
Tags = Annotated[list[Tag], Meta(max_length=TAGS_MAX, description="Free-form labels; duplicates are dropped.")]


class Prompt(msgspec.Struct, kw_only=True):
    """A prompt template. ``version`` grows by one with every change and is the ETag."""

    id: uuid.UUID
    object: Literal["prompt"] = "prompt"
    name: str
    description: str | None
    body: str
    tags: list[str]
    version: int
    created_at: datetime
    updated_at: datetime


class PromptCreate(msgspec.Struct, kw_only=True):
    name: Name
    body: Body
    description: Description | None = None
    tags: Tags = msgspec.field(default_factory=list)


class PromptUpdate(msgspec.Struct, kw_only=True):
    """Only the fields present change; ``description: null`` clears it."""

    name: Name | UnsetType = UNSET
    body: Body | UnsetType = UNSET
    description: Description | UnsetType | None = UNSET
    tags: Tags | UnsetType = UNSET


class PromptList(Page[Prompt], kw_only=True):
    """A page of prompts, newest first."""

    data: list[Prompt]  # restated: Litestar's schema generation loses a subclassed generic's parameter
