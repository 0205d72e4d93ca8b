"""Secrets at rest: AES-256-GCM envelope encryption with per-tenant data keys.

Only the pure envelope module is re-exported here, so ``infra.settings`` can import it without a
cycle; import ``infra.secrets.service`` for the database-backed ``SecretsService``.
"""

from infra.secrets.envelope import UNDECRYPTABLE, DataKey, Kek, decode_key, encode_key

__all__ = ["UNDECRYPTABLE", "DataKey", "Kek", "decode_key", "encode_key"]
