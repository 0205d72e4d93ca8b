"""Envelope crypto: keys, wrapping, associated data, token format, key files, master key settings."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest

from domain.shared.errors import Invalid
from infra.secrets.envelope import (
    DataKey,
    Kek,
    decode_key,
    encode_key,
    load_or_create_key_file,
    new_data_key_bytes,
    parse_token,
)
from infra.settings import SettingsError, load_settings

KEY = bytes(range(32))


def _data_key(tenant: str = "t1") -> DataKey:
    return DataKey("0190f0f0-0000-7000-8000-000000000001", tenant, new_data_key_bytes())


def test_round_trip_and_token_format() -> None:
    key = _data_key()
    token = key.encrypt("provider:1", "api_key", "sk-live-ü-123")
    version, key_id, nonce, _body = token.split(".")
    assert (version, key_id) == ("v1", key.id)
    assert len(base64.urlsafe_b64decode(nonce + "==")) == 12
    assert "sk-live" not in token
    assert key.decrypt("provider:1", "api_key", token) == "sk-live-ü-123"


def test_nonces_are_fresh_per_encryption() -> None:
    key = _data_key()
    a, b = key.encrypt("r", "f", "same"), key.encrypt("r", "f", "same")
    assert a != b
    assert parse_token(a)[1] != parse_token(b)[1]


@pytest.mark.parametrize(("tenant", "record", "field"), [("t2", "r", "f"), ("t1", "r2", "f"), ("t1", "r", "f2")])
def test_ciphertext_is_bound_to_tenant_record_and_field(tenant: str, record: str, field: str) -> None:
    raw = new_data_key_bytes()
    token = DataKey("k1", "t1", raw).encrypt("r", "f", "secret")
    with pytest.raises(Invalid) as err:
        DataKey("k1", tenant, raw).decrypt(record, field, token)
    assert err.value.code == "secret_undecryptable"


def test_associated_data_parts_cannot_be_shifted() -> None:
    key = _data_key()
    token = key.encrypt("a.b", "c", "secret")
    with pytest.raises(Invalid):
        key.decrypt("a", "b.c", token)


@pytest.mark.parametrize("where", [2, 3])
def test_tampered_ciphertext_fails(where: int) -> None:
    key = _data_key()
    parts = key.encrypt("r", "f", "secret").split(".")
    raw = bytearray(base64.urlsafe_b64decode(parts[where] + "=" * (-len(parts[where]) % 4)))
    raw[0] ^= 1
    parts[where] = base64.urlsafe_b64encode(bytes(raw)).decode().rstrip("=")
    with pytest.raises(Invalid) as err:
        key.decrypt("r", "f", ".".join(parts))
    assert err.value.code == "secret_undecryptable"


@pytest.mark.parametrize("token", ["", "v1", "v2.k.AAAA.AAAA", "v1.k.!!!.AAAA", "v1.k.AAAA.AAAA", "plain text"])
def test_malformed_tokens_are_undecryptable(token: str) -> None:
    with pytest.raises(Invalid) as err:
        _data_key().decrypt("r", "f", token)
    assert err.value.code == "secret_undecryptable"


def test_wrap_binds_tenant_and_kek() -> None:
    kek, other = Kek(KEY), Kek(os.urandom(32))
    plain = new_data_key_bytes()
    wrapped = kek.wrap("t1", plain)
    assert plain not in wrapped
    assert kek.unwrap("t1", wrapped) == plain
    with pytest.raises(Invalid):
        kek.unwrap("t2", wrapped)
    with pytest.raises(Invalid):
        other.unwrap("t1", wrapped)


def test_kek_id_is_a_stable_fingerprint() -> None:
    assert Kek(KEY).id == Kek(KEY).id
    assert Kek(KEY).id != Kek(os.urandom(32)).id
    assert KEY.hex() not in Kek(KEY).id


def test_derived_keys_are_stable_and_independent() -> None:
    kek = Kek(KEY)
    token_key = kek.derive("access-token/v1")
    assert len(token_key) == 32
    assert token_key == Kek(KEY).derive("access-token/v1")
    assert token_key not in (KEY, kek.derive("access-token/v2"), Kek(os.urandom(32)).derive("access-token/v1"))
    assert len(kek.derive("x", 64)) == 64
    with pytest.raises(ValueError, match="purpose"):
        kek.derive("")


def test_repr_never_shows_key_bytes() -> None:
    raw = new_data_key_bytes()
    for holder in (Kek(raw), DataKey("k", "t", raw)):
        text = repr(holder)
        assert raw.hex() not in text
        assert encode_key(raw) not in text
        assert base64.b64encode(raw).decode() not in text


def test_decode_key_accepts_base64_and_base64url() -> None:
    raw = b"\xff\xfe" * 16
    assert decode_key(base64.b64encode(raw).decode()) == raw
    assert decode_key(base64.urlsafe_b64encode(raw).decode().rstrip("=")) == raw
    for bad in ["", "short", base64.b64encode(b"x" * 31).decode(), "not base64 at all!"]:
        with pytest.raises(ValueError, match=r"base64|bytes"):
            decode_key(bad)


def test_generated_key_file_is_private_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "data" / "master.key"
    first = load_or_create_key_file(path, create=True)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_key_file(path, create=True) == first
    assert [p.name for p in path.parent.iterdir()] == ["master.key"]
    with pytest.raises(FileNotFoundError):
        load_or_create_key_file(tmp_path / "absent.key", create=False)


def test_settings_accept_a_good_master_key_and_hide_it() -> None:
    text = base64.b64encode(KEY).decode()
    s = load_settings({"LITESKILL_MASTER_KEY": text}, dotenv=None)
    assert s.master_key == text
    assert text not in repr(s)
    assert load_settings({"LITESKILL_MASTER_KEY_FILE": "/k/master.key"}, dotenv=None).master_key_file == Path(
        "/k/master.key"
    )


@pytest.mark.parametrize(
    "env",
    [
        {"LITESKILL_MASTER_KEY": "not-a-key"},
        {"LITESKILL_MASTER_KEY": base64.b64encode(b"k" * 16).decode()},
        {"LITESKILL_MASTER_KEY": base64.b64encode(KEY).decode(), "LITESKILL_MASTER_KEY_FILE": "/k"},
    ],
)
def test_bad_master_key_is_rejected_naming_the_variable(env: dict[str, str]) -> None:
    with pytest.raises(SettingsError, match="LITESKILL_MASTER_KEY") as err:
        load_settings(env, dotenv=None)
    assert env["LITESKILL_MASTER_KEY"] not in str(err.value)
