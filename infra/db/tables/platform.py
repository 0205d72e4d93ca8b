"""HTTP platform tables: outbox, idempotency keys, prompts (owned by the platform work)."""
