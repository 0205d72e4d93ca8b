"""Qualified MCP tool names (domain.mcp.naming) and what the tool-call ledger keeps (infra.mcp.ledger)."""

from __future__ import annotations

import uuid

from hypothesis import given
from hypothesis import strategies as st

from domain.mcp import naming
from infra.mcp.ledger import SUMMARY_CHARS, redact, stored_arguments, summary


def test_slug() -> None:
    assert naming.slug("My Search Server!") == "my-search-server"
    assert naming.slug("???") == "mcp"
    assert len(naming.slug("x" * 100)) == naming.MAX_SLUG


def test_two_servers_offering_the_same_tool_do_not_clash() -> None:
    a, b = uuid.uuid4(), uuid.uuid4()
    assert naming.qualify([(a, "Web", "search"), (b, "Docs", "search")]) == ["web__search", "docs__search"]
    same = naming.qualify([(a, "Search", "find"), (b, "search!", "find")])
    assert same == [f"search-{a.hex[:6]}__find", f"search-{b.hex[:6]}__find"]
    assert naming.candidates(a, "Search", "find") == ("search__find", same[0])


def test_invalid_characters_and_long_names() -> None:
    sid = uuid.uuid4()
    assert naming.base_name("srv", "files.read/all") == "srv__files_read_all"
    long_a, long_b = naming.qualify([(sid, "srv", "t" * 80 + "a"), (sid, "srv", "t" * 80 + "b")])
    assert long_a != long_b
    assert len(long_a) <= naming.MAX_NAME


@given(st.lists(st.tuples(st.text(max_size=40), st.text(min_size=1, max_size=90)), max_size=12))
def test_qualified_names_are_valid_and_unique(items: list[tuple[str, str]]) -> None:
    sid = uuid.UUID(int=7)
    names = naming.qualify([(sid, server, tool) for server, tool in items])
    assert len(set(names)) == len(names)
    assert all(naming.VALID_NAME.match(n) for n in names)


def test_ledger_redacts_secret_looking_keys_and_truncates() -> None:
    args = {"q": "x", "API_KEY": "sk", "nested": [{"password": "p", "ok": 1}], "authorization": "Bearer t"}
    assert redact(args) == {
        "q": "x",
        "API_KEY": "[redacted]",
        "nested": [{"password": "[redacted]", "ok": 1}],
        "authorization": "[redacted]",
    }
    huge = stored_arguments({"blob": "y" * 40_000})
    assert huge["_truncated"] is True
    assert len(huge["preview"]) == SUMMARY_CHARS
    assert summary("z" * 2_000, None) == "z" * (SUMMARY_CHARS - 1) + "…"
    assert summary("", {"a": 1}) == '{"a": 1}'
