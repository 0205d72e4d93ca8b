"""Cursor encoding and page splitting, without a database."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from api.errors import ApiError
from api.pagination import IdCursor, decode_cursor, encode_cursor, paginate
from domain.shared.ids import new_id


def test_id_cursor_round_trip_is_opaque_and_url_safe() -> None:
    key = IdCursor(new_id())
    raw = encode_cursor(key)
    assert "=" not in raw
    assert str(key.id) not in raw
    assert all(c.isalnum() or c in "-_" for c in raw)
    assert decode_cursor(raw, IdCursor) == key


@given(st.uuids(), st.datetimes(timezones=st.just(UTC)))
def test_tuple_keys_round_trip(ident: uuid.UUID, at: datetime) -> None:
    raw = encode_cursor((at, ident))
    assert decode_cursor(raw, tuple[datetime, uuid.UUID]) == (at, ident)


@pytest.mark.parametrize("raw", ["", "!!", "a", "e30", encode_cursor(["x"]), encode_cursor([1]), "A" * 5000])
def test_garbage_is_invalid_cursor(raw: str) -> None:
    with pytest.raises(ApiError) as info:
        decode_cursor(raw, IdCursor)
    assert info.value.status_code == 400
    assert info.value.code == "invalid_cursor"


def test_paginate_uses_the_extra_row_for_has_more() -> None:
    rows = [5, 4, 3]
    page, has_more, cursor = paginate(rows, 2, key=lambda r: [r])
    assert (page, has_more) == ([5, 4], True)
    assert cursor is not None
    assert decode_cursor(cursor, list[int]) == [4]
    assert paginate(rows, 3, key=lambda r: [r]) == ([5, 4, 3], False, None)
    assert paginate([], 3, key=lambda r: [r]) == ([], False, None)
