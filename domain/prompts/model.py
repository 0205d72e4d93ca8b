"""The rules of a prompt template: limits, normalisation and validation (pure, no I/O)."""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from domain.shared.errors import NotFound

NAME_MAX = 200
BODY_MAX = 100_000
DESCRIPTION_MAX = 2_000
TAG_MAX = 50
TAGS_MAX = 20


class PromptNotFound(NotFound):
    """No prompt with this id."""

    code = "prompt_not_found"


@dataclass(frozen=True, slots=True)
class Violation:
    """One broken rule; ``pointer`` is a JSON Pointer into the request body (``/tags/1``)."""

    pointer: str
    detail: str


class PromptFields(msgspec.Struct, frozen=True, kw_only=True):
    """The editable content of a prompt, already normalised."""

    name: str
    description: str | None
    body: str
    tags: list[str]


EDITABLE = ("name", "description", "body", "tags")


def _clean_text(value: str, pointer: str, *, max_len: int, required: bool, out: list[Violation]) -> None:
    if "\x00" in value:
        out.append(Violation(pointer, "Must not contain NUL characters"))
    elif required and not value.strip():
        out.append(Violation(pointer, "Must not be blank"))
    elif len(value) > max_len:
        out.append(Violation(pointer, f"Must be at most {max_len} characters"))


def normalize(fields: PromptFields) -> PromptFields:
    """Trim the name, turn a blank description into none, trim tags and drop duplicates (first wins)."""
    tags: list[str] = []
    for tag in fields.tags:
        clean = tag.strip()
        if clean not in tags:
            tags.append(clean)
    description = fields.description.strip() if fields.description is not None else None
    return PromptFields(name=fields.name.strip(), description=description or None, body=fields.body, tags=tags)


def validate(fields: PromptFields) -> list[Violation]:
    """Every rule ``fields`` breaks (empty: valid). Call on the fields as sent, before ``normalize``,
    so pointers index the request body."""
    out: list[Violation] = []
    _clean_text(fields.name, "/name", max_len=NAME_MAX, required=True, out=out)
    _clean_text(fields.body, "/body", max_len=BODY_MAX, required=True, out=out)
    if fields.description is not None:
        _clean_text(fields.description, "/description", max_len=DESCRIPTION_MAX, required=False, out=out)
    if len(fields.tags) > TAGS_MAX:
        out.append(Violation("/tags", f"At most {TAGS_MAX} tags"))
    for i, tag in enumerate(fields.tags):
        _clean_text(tag, f"/tags/{i}", max_len=TAG_MAX, required=True, out=out)
    return out


def apply_changes(current: PromptFields, changes: dict[str, object]) -> tuple[PromptFields, list[str], list[Violation]]:
    """``current`` with ``changes`` (a subset of ``EDITABLE``) applied and normalised, the fields
    whose value actually changed (in ``EDITABLE`` order), and the rules the change breaks."""
    unknown = set(changes) - set(EDITABLE)
    if unknown:
        raise ValueError(f"not editable: {sorted(unknown)}")
    merged = msgspec.structs.replace(current, **changes)
    violations = validate(merged)
    updated = normalize(merged)
    changed = [name for name in EDITABLE if getattr(updated, name) != getattr(current, name)]
    return updated, changed, violations
