"""Password hashing and access tokens: the primitives every credential path relies on."""

from __future__ import annotations

import asyncio
import base64
import json
import time

import jwt
import pytest

from domain.shared.errors import Invalid, Unauthenticated
from infra.identity.passwords import PasswordHasher
from infra.identity.tokens import TokenSigner

KEY = b"k" * 64
# Cheap parameters keep unit tests fast; the defaults are asserted separately.
FAST = {"memory_kib": 1024, "time_cost": 1}


async def test_hash_and_verify() -> None:
    hasher = PasswordHasher(**FAST)
    stored = await hasher.hash("correct horse battery")
    assert stored.startswith("$argon2id$")
    assert "correct horse" not in stored
    assert await hasher.verify(stored, "correct horse battery")
    assert not await hasher.verify(stored, "correct horse batterY")
    assert not await hasher.verify("not a hash", "correct horse battery")
    assert await hasher.hash("correct horse battery") != stored  # salted


def test_default_parameters_meet_the_owasp_minimum() -> None:
    stored = PasswordHasher()._argon.hash("x" * 12)
    assert "$argon2id$" in stored
    assert "m=19456,t=2,p=1" in stored


@pytest.mark.parametrize("password", ["short", "x" * 11, "y" * 129])
async def test_password_policy(password: str) -> None:
    with pytest.raises(Invalid) as info:
        await PasswordHasher(**FAST).hash(password)
    assert info.value.code == "password_policy"


async def test_an_unknown_account_is_verified_against_a_dummy_hash() -> None:
    hasher = PasswordHasher(**FAST)
    assert not await hasher.verify(None, "whatever password")
    assert hasher._dummy is not None  # the same Argon2 work was done


async def test_hashing_is_capped_and_off_the_event_loop() -> None:
    hasher = PasswordHasher(memory_kib=8192, time_cost=2, max_concurrency=1)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    hashes = await asyncio.gather(*(hasher.hash(f"password number {i}") for i in range(3)))
    task.cancel()
    assert len(set(hashes)) == 3
    assert ticks > 3  # the loop kept running while hashes were computed
    assert hasher._slots._value == 1  # every slot returned


def test_needs_rehash_when_parameters_grow() -> None:
    weak = PasswordHasher(**FAST)._argon.hash("x" * 12)
    assert PasswordHasher().needs_rehash(weak)
    assert not PasswordHasher(**FAST).needs_rehash(weak)


def signer(**kw: object) -> TokenSigner:
    return TokenSigner(KEY, issuer="https://liteskill.test", audience="liteskill-api", **kw)  # type: ignore[arg-type]


def test_issue_and_verify_an_access_token() -> None:
    token = signer().issue(subject="u1", tenant_id="t1", session_id="s1", scopes=("read", "write"))
    claims = signer().verify(token)
    assert (claims.subject, claims.tenant_id, claims.session_id, claims.scopes) == ("u1", "t1", "s1", ("read", "write"))
    assert claims.expires_at - claims.issued_at == 900
    assert "k" * 32 not in repr(signer())


def _forge(header: dict[str, object], claims: dict[str, object], key: bytes = KEY, alg: str = "HS256") -> str:
    return jwt.encode(claims, key, algorithm=alg, headers=header)


def _claims(**over: object) -> dict[str, object]:
    now = int(time.time())
    base: dict[str, object] = {
        "iss": "https://liteskill.test",
        "aud": "liteskill-api",
        "sub": "u1",
        "tid": "t1",
        "sid": "s1",
        "scp": "",
        "iat": now,
        "exp": now + 60,
        "jti": "j",
    }
    base.update(over)
    return {k: v for k, v in base.items() if v is not None}


def _unsigned(claims: dict[str, object]) -> str:
    def b64(d: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()

    return f"{b64({'alg': 'none', 'typ': 'at+jwt'})}.{b64(claims)}."


@pytest.mark.parametrize(
    "token",
    [
        _forge({"typ": "at+jwt"}, _claims(exp=int(time.time()) - 60)),  # expired
        _forge({"typ": "at+jwt"}, _claims(iss="https://evil.test")),  # other issuer
        _forge({"typ": "at+jwt"}, _claims(aud="other-api")),  # other audience
        _forge({"typ": "JWT"}, _claims()),  # not an access token (e.g. an ID token)
        _forge({"typ": "at+jwt"}, _claims(jti=None)),  # a required claim missing
        _forge({"typ": "at+jwt"}, _claims(), key=b"x" * 64),  # another key
        _forge({"typ": "at+jwt"}, _claims(), alg="HS512"),  # another algorithm, same key
        _unsigned(_claims()),  # alg none
        "not.a.jwt",
        "",
    ],
)
def test_bad_tokens_are_all_the_same_error(token: str) -> None:
    with pytest.raises(Unauthenticated) as info:
        signer().verify(token)
    assert info.value.code == "invalid_token"


def test_short_keys_are_refused() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        TokenSigner(b"short", issuer="i", audience="a")
