"""AES-256-GCM envelope encryption: the key-encryption key, wrapped per-tenant data keys, and the
versioned ``v1.<data key id>.<nonce>.<ciphertext>`` secret format. Pure crypto, no I/O but key files.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from domain.shared.errors import Invalid

KEY_BYTES = 32
NONCE_BYTES = 12
TOKEN_VERSION = "v1"  # noqa: S105 - a format tag, not a credential
UNDECRYPTABLE = "secret_undecryptable"

# Domain-separation labels, so a wrapped data key can never be mistaken for a secret and back.
_WRAP_LABEL = "liteskill/data-key/v1"
_SECRET_LABEL = "liteskill/secret/v1"  # noqa: S105 - an AAD label


def undecryptable(detail: str = "the secret cannot be decrypted") -> Invalid:
    return Invalid(detail, code=UNDECRYPTABLE)


def decode_key(raw: str | bytes) -> bytes:
    """32 key bytes from base64 or base64url text (padding optional); ValueError otherwise."""
    text = (raw.decode("ascii", "replace") if isinstance(raw, bytes) else raw).strip()
    text = text.replace("-", "+").replace("_", "/")
    try:
        key = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("not base64 text") from None
    if len(key) != KEY_BYTES:
        raise ValueError(f"decodes to {len(key)} bytes, need {KEY_BYTES}")
    return key


def encode_key(key: bytes) -> str:
    return base64.urlsafe_b64encode(key).decode("ascii").rstrip("=")


class Kek:
    """The key-encryption key. Its id is a fingerprint, stored beside each wrapped data key."""

    __slots__ = ("_aead", "_key", "id")

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise ValueError(f"a key-encryption key is {KEY_BYTES} bytes")
        self.id = "kek-" + hashlib.sha256(b"liteskill/kek-id\x00" + key).hexdigest()[:16]
        self._key = key
        self._aead = AESGCM(key)

    def derive(self, purpose: str, length: int = KEY_BYTES) -> bytes:
        """An independent key for ``purpose`` (HKDF-SHA256); it changes when the KEK is rotated."""
        if not purpose:
            raise ValueError("a derived key needs a purpose")
        info = b"liteskill/derived/" + purpose.encode("utf-8")
        return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info).derive(self._key)

    def __repr__(self) -> str:
        return f"Kek(id={self.id!r})"

    def wrap(self, tenant_id: str, data_key: bytes) -> bytes:
        """``nonce || AES-GCM(data_key)``, bound to the tenant and this KEK's id."""
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, data_key, _aad(_WRAP_LABEL, tenant_id, self.id))

    def unwrap(self, tenant_id: str, wrapped: bytes) -> bytes:
        nonce, body = wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:]
        try:
            key = self._aead.decrypt(nonce, body, _aad(_WRAP_LABEL, tenant_id, self.id))
        except (InvalidTag, ValueError):
            raise undecryptable("a data key cannot be unwrapped with the configured master key") from None
        if len(key) != KEY_BYTES:
            raise undecryptable("a data key has the wrong length")
        return key


class DataKey:
    """One tenant's unwrapped data key; encrypts secrets bound to tenant, record and field."""

    __slots__ = ("_aead", "id", "tenant_id")

    def __init__(self, key_id: str, tenant_id: str, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise ValueError(f"a data key is {KEY_BYTES} bytes")
        if "." in key_id:
            raise ValueError("a data key id cannot contain '.'")
        self.id = key_id
        self.tenant_id = tenant_id
        self._aead = AESGCM(key)

    def __repr__(self) -> str:
        return f"DataKey(id={self.id!r}, tenant_id={self.tenant_id!r})"

    def encrypt(self, record: str, field: str, plaintext: str) -> str:
        nonce = os.urandom(NONCE_BYTES)
        body = self._aead.encrypt(nonce, plaintext.encode("utf-8"), self._aad(record, field))
        return ".".join((TOKEN_VERSION, self.id, _b64(nonce), _b64(body)))

    def decrypt(self, record: str, field: str, token: str) -> str:
        key_id, nonce, body = parse_token(token)
        if key_id != self.id:
            raise undecryptable("the secret was encrypted with another data key")
        try:
            plain = self._aead.decrypt(nonce, body, self._aad(record, field))
        except (InvalidTag, ValueError):
            raise undecryptable() from None
        try:
            return plain.decode("utf-8")
        except UnicodeDecodeError:  # pragma: no cover - only reachable with a forged tag
            raise undecryptable() from None

    def _aad(self, record: str, field: str) -> bytes:
        return _aad(_SECRET_LABEL, self.tenant_id, record, field, self.id)


def new_data_key_bytes() -> bytes:
    return secrets.token_bytes(KEY_BYTES)


def parse_token(token: str) -> tuple[str, bytes, bytes]:
    """Split a ``v1`` token into (data key id, nonce, ciphertext); Invalid when malformed."""
    parts = token.split(".")
    if len(parts) != 4 or parts[0] != TOKEN_VERSION or not parts[1]:
        raise undecryptable("the value is not a v1 secret token")
    try:
        nonce, body = _unb64(parts[2]), _unb64(parts[3])
    except (binascii.Error, ValueError):
        raise undecryptable("the secret token is not base64url") from None
    if len(nonce) != NONCE_BYTES or len(body) < 16:
        raise undecryptable("the secret token is truncated")
    return parts[1], nonce, body


def load_or_create_key_file(path: Path, *, create: bool) -> bytes:
    """Read a key file; when absent and ``create``, atomically create one (mode 0600) and return it.

    The new key is written to a private temp file and hard-linked into place, so a concurrent
    starter either wins or reads the winner's complete file, never a half-written one.
    """
    try:
        return decode_key(path.read_bytes())
    except FileNotFoundError:
        if not create:
            raise
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = new_data_key_bytes()
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    write_private_file(tmp, (encode_key(key) + "\n").encode("ascii"))
    try:
        os.link(tmp, path)
    except FileExistsError:
        return decode_key(path.read_bytes())
    finally:
        tmp.unlink(missing_ok=True)
    return key


def write_private_file(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _aad(*parts: str) -> bytes:
    # Length-prefixed, so ("a.b", "c") and ("a", "b.c") can never collide.
    out = bytearray()
    for part in parts:
        raw = part.encode("utf-8")
        out += len(raw).to_bytes(4, "big") + raw
    return bytes(out)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    if "+" in text or "/" in text or "=" in text:
        raise ValueError("not base64url")
    std = text.replace("-", "+").replace("_", "/")
    return base64.b64decode(std + "=" * (-len(std) % 4), validate=True)
