"""Typed, frozen settings loaded once from ``LITESKILL_*`` environment variables (and an optional .env).

Every field documents the variable that sets it; ``load_settings`` fails fast with a message that
names the offending variable, so a bad deployment never half-starts.
"""

from __future__ import annotations

import os
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import msgspec

PREFIX = "LITESKILL_"


class SettingsError(ValueError):
    """A configuration value is missing or malformed; the message names the variable."""


class SecretStr(str):
    """A string setting whose ``repr`` never shows its value (keys, passwords)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "SecretStr('**********')"


class DatabaseSettings(msgspec.Struct, frozen=True, kw_only=True):
    url: str | None = None
    """LITESKILL_DATABASE_URL: PostgreSQL URL (postgresql://...). Unset: start an embedded server."""
    pool_size: int = 10
    """LITESKILL_DATABASE_POOL_SIZE: connections kept per process."""
    pool_max_overflow: int = 10
    """LITESKILL_DATABASE_POOL_MAX_OVERFLOW: extra connections allowed under burst."""
    echo: bool = False
    """LITESKILL_DATABASE_ECHO: log every SQL statement (debugging only)."""


class RedisSettings(msgspec.Struct, frozen=True, kw_only=True):
    url: str | None = None
    """LITESKILL_REDIS_URL: Redis/Valkey URL (redis://...). Unset: start an embedded Valkey."""


class HttpSettings(msgspec.Struct, frozen=True, kw_only=True):
    host: str = "127.0.0.1"
    """LITESKILL_HOST: address `serve` binds to."""
    port: int = 8080
    """LITESKILL_PORT: port `serve` binds to."""
    workers: int = 1
    """LITESKILL_WORKERS: number of API worker processes."""
    cors_origins: tuple[str, ...] = ()
    """LITESKILL_CORS_ORIGINS: comma-separated allowed browser origins ("*" for any)."""
    max_body_bytes: int = 1_048_576
    """LITESKILL_MAX_BODY_BYTES: largest accepted request body (413 beyond)."""
    public_url: str | None = None
    """LITESKILL_PUBLIC_URL: external base URL used in Link headers (default: from the request)."""


class WorkerSettings(msgspec.Struct, frozen=True, kw_only=True):
    embedded: bool = True
    """LITESKILL_WORKER_EMBEDDED: run a Dramatiq worker inside `serve` (true by default)."""
    threads: int = 4
    """LITESKILL_WORKER_THREADS: worker threads per worker process."""
    queue_prefix: str = "liteskill"
    """LITESKILL_WORKER_QUEUE_PREFIX: Redis key namespace for queues."""
    outbox_poll_ms: int = 1000
    """LITESKILL_WORKER_OUTBOX_POLL_MS: how often the outbox relay looks for unsent jobs."""


class EventStoreSettings(msgspec.Struct, frozen=True, kw_only=True):
    snapshot_every: int = 100
    """LITESKILL_SNAPSHOT_EVERY: take an aggregate snapshot every N events."""
    projection_batch: int = 500
    """LITESKILL_PROJECTION_BATCH: events a projector handles per transaction."""


class LlmSettings(msgspec.Struct, frozen=True, kw_only=True):
    outbound_allow: tuple[str, ...] = ()
    """LITESKILL_OUTBOUND_ALLOW: comma-separated hosts or CIDRs server-side requests may reach although private."""
    openai_api_key: SecretStr | None = None
    """LITESKILL_OPENAI_API_KEY: declares an OpenAI provider ("OpenAI (env)") in the default tenant at start."""
    openai_base_url: str | None = None
    """LITESKILL_OPENAI_BASE_URL: base URL of that OpenAI provider (default: the public API)."""
    anthropic_api_key: SecretStr | None = None
    """LITESKILL_ANTHROPIC_API_KEY: declares an Anthropic provider ("Anthropic (env)") at start."""
    openai_compatible_base_url: str | None = None
    """LITESKILL_OPENAI_COMPATIBLE_BASE_URL: declares an OpenAI-compatible provider (vLLM, Ollama, ...) at start."""
    openai_compatible_api_key: SecretStr | None = None
    """LITESKILL_OPENAI_COMPATIBLE_API_KEY: the API key of that OpenAI-compatible provider, if it needs one."""
    bedrock_region: str | None = None
    """LITESKILL_BEDROCK_REGION: declares a Bedrock provider ("Bedrock (env)") on the default AWS credentials."""
    llm_timeout_s: float = 600.0
    """LITESKILL_LLM_TIMEOUT_S: longest a model call may take in all, retries included."""
    llm_idle_timeout_s: float = 60.0
    """LITESKILL_LLM_IDLE_TIMEOUT_S: longest silence from a provider (first token included) before the call fails."""
    llm_max_retries: int = 2
    """LITESKILL_LLM_MAX_RETRIES: retries of a model call failing before its first token (429, 408, 5xx, network)."""


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    env: Literal["development", "production", "test"] = "development"
    """LITESKILL_ENV: deployment flavour; production turns on stricter defaults."""
    data_dir: Path = Path(".liteskill")
    """LITESKILL_DATA_DIR: where embedded PostgreSQL/Valkey keep their data and keys live."""
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    """LITESKILL_LOG_LEVEL: minimum level of the JSON logs."""
    log_json: bool = True
    """LITESKILL_LOG_JSON: structured JSON logs (false: plain text for terminals)."""
    idempotency_ttl_s: int = 86_400
    """LITESKILL_IDEMPOTENCY_TTL_S: how long an Idempotency-Key replays its first response."""
    registration_open: bool = True
    """LITESKILL_REGISTRATION_OPEN: anyone may register (false: only invited people and `liteskill admin create`)."""
    access_token_ttl_s: int = 900
    """LITESKILL_ACCESS_TOKEN_TTL_S: lifetime of access tokens in seconds (refresh tokens renew them)."""
    auth_rate_per_ip: int = 30
    """LITESKILL_AUTH_RATE_PER_IP: login/register/refresh attempts per minute from one IP address."""
    auth_rate_per_account: int = 10
    """LITESKILL_AUTH_RATE_PER_ACCOUNT: login attempts per minute for one email address."""
    api_rate_per_principal: int = 1200
    """LITESKILL_API_RATE_PER_PRINCIPAL: authenticated requests per minute per user (sessions) or API key; 0: off."""
    auth_cache_ttl_s: float = 5.0
    """LITESKILL_AUTH_CACHE_TTL_S: seconds a resolved credential is reused in-process (0: resolve every request)."""
    run_retention_s: int = 3600
    """LITESKILL_RUN_RETENTION_S: how long a finished run's event stream stays replayable (then 410 stream_expired)."""
    run_lease_s: float = 30.0
    """LITESKILL_RUN_LEASE_S: lease of a running run; renewed every third of it, reaped as interrupted once expired."""
    chat_max_tool_rounds: int = 10
    """LITESKILL_CHAT_MAX_TOOL_ROUNDS: model rounds of tool calls one chat turn may run before it is ended."""
    approval_timeout_s: float = 600.0
    """LITESKILL_APPROVAL_TIMEOUT_S: how long a tool call waits for a manual approval before it is denied."""
    master_key: SecretStr | None = None
    """LITESKILL_MASTER_KEY: base64 of the 32-byte key-encryption key for stored secrets."""
    master_key_file: Path | None = None
    """LITESKILL_MASTER_KEY_FILE: file holding the master key (default: <data dir>/master.key, created)."""
    database: DatabaseSettings = DatabaseSettings()
    redis: RedisSettings = RedisSettings()
    http: HttpSettings = HttpSettings()
    worker: WorkerSettings = WorkerSettings()
    eventstore: EventStoreSettings = EventStoreSettings()
    llm: LlmSettings = LlmSettings()


# Sub-settings whose fields are flattened into the LITESKILL_* namespace without their group
# name (LITESKILL_HOST rather than LITESKILL_HTTP_HOST). Others use <GROUP>_<FIELD>.
_FLAT_GROUPS = {"http"}
_GROUP_ALIASES = {"eventstore": "", "llm": ""}


def _variable(group: str | None, field: str) -> str:
    if group is None or group in _FLAT_GROUPS:
        return f"{PREFIX}{field.upper()}"
    alias = _GROUP_ALIASES.get(group, group)
    return f"{PREFIX}{alias.upper()}_{field.upper()}" if alias else f"{PREFIX}{field.upper()}"


def _parse(raw: str, hint: Any, name: str) -> Any:
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(hint) if a is not type(None)]
        if raw == "":
            return None
        return _parse(raw, args[0], name)
    if origin is Literal:
        allowed = get_args(hint)
        if raw not in allowed:
            raise SettingsError(f"{name}={raw!r} is not one of {', '.join(map(str, allowed))}")
        return raw
    if origin is tuple:
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    if hint is bool:
        lowered = raw.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise SettingsError(f"{name}={raw!r} is not a boolean (use true or false)")
    if hint is int:
        try:
            return int(raw)
        except ValueError:
            raise SettingsError(f"{name}={raw!r} is not an integer") from None
    if hint is float:
        try:
            return float(raw)
        except ValueError:
            raise SettingsError(f"{name}={raw!r} is not a number") from None
    if hint is Path:
        return Path(raw).expanduser()
    if hint is SecretStr:
        return SecretStr(raw)
    return raw


def _build(cls: type[Any], group: str | None, env: typing.Mapping[str, str]) -> Any:
    hints = get_type_hints(cls)
    values: dict[str, Any] = {}
    for field in msgspec.structs.fields(cls):
        hint = hints[field.name]
        if isinstance(hint, type) and issubclass(hint, msgspec.Struct):
            values[field.name] = _build(hint, field.name, env)
            continue
        name = _variable(group, field.name)
        if name in env:
            values[field.name] = _parse(env[name], hint, name)
    try:
        return cls(**values)
    except (TypeError, msgspec.ValidationError) as exc:  # pragma: no cover - defensive
        raise SettingsError(str(exc)) from exc


def _validate(settings: Settings) -> None:
    checks: list[tuple[bool, str]] = [
        (1 <= settings.http.port <= 65535, "LITESKILL_PORT must be between 1 and 65535"),
        (settings.http.workers >= 1, "LITESKILL_WORKERS must be at least 1"),
        (settings.http.max_body_bytes >= 1024, "LITESKILL_MAX_BODY_BYTES must be at least 1024"),
        (settings.eventstore.snapshot_every >= 1, "LITESKILL_SNAPSHOT_EVERY must be at least 1"),
        (settings.database.pool_size >= 1, "LITESKILL_DATABASE_POOL_SIZE must be at least 1"),
        (settings.idempotency_ttl_s >= 60, "LITESKILL_IDEMPOTENCY_TTL_S must be at least 60"),
        (60 <= settings.access_token_ttl_s <= 86_400, "LITESKILL_ACCESS_TOKEN_TTL_S must be between 60 and 86400"),
        (settings.auth_rate_per_ip >= 1, "LITESKILL_AUTH_RATE_PER_IP must be at least 1"),
        (settings.auth_rate_per_account >= 1, "LITESKILL_AUTH_RATE_PER_ACCOUNT must be at least 1"),
        (settings.api_rate_per_principal >= 0, "LITESKILL_API_RATE_PER_PRINCIPAL must be 0 (off) or more"),
        (0 <= settings.auth_cache_ttl_s <= 300, "LITESKILL_AUTH_CACHE_TTL_S must be between 0 and 300"),
        (settings.run_retention_s >= 1, "LITESKILL_RUN_RETENTION_S must be at least 1"),
        (0.3 <= settings.run_lease_s <= 3600, "LITESKILL_RUN_LEASE_S must be between 0.3 and 3600"),
        (0 <= settings.chat_max_tool_rounds <= 100, "LITESKILL_CHAT_MAX_TOOL_ROUNDS must be between 0 and 100"),
        (0.1 <= settings.approval_timeout_s <= 86_400, "LITESKILL_APPROVAL_TIMEOUT_S must be between 0.1 and 86400"),
    ]
    url = settings.database.url
    if url is not None and not url.startswith(("postgresql://", "postgres://", "postgresql+asyncpg://")):
        checks.append((False, "LITESKILL_DATABASE_URL must start with postgresql://"))
    rurl = settings.redis.url
    if rurl is not None and not rurl.startswith(("redis://", "rediss://", "unix://", "valkey://")):
        checks.append((False, "LITESKILL_REDIS_URL must start with redis://, rediss:// or unix://"))
    if settings.master_key is not None:
        # Imported here so loading settings does not load the crypto library.
        from infra.secrets.envelope import decode_key

        try:
            decode_key(settings.master_key)
        except ValueError as exc:
            checks.append((False, f"LITESKILL_MASTER_KEY must be base64 of 32 random bytes ({exc})"))
        if settings.master_key_file is not None:
            checks.append((False, "LITESKILL_MASTER_KEY and LITESKILL_MASTER_KEY_FILE are exclusive; set one"))
    llm = settings.llm
    checks += [
        (0 < llm.llm_timeout_s <= 86_400, "LITESKILL_LLM_TIMEOUT_S must be between 0 and 86400 seconds"),
        (0 < llm.llm_idle_timeout_s <= llm.llm_timeout_s, "LITESKILL_LLM_IDLE_TIMEOUT_S must be in (0, the timeout]"),
        (0 <= llm.llm_max_retries <= 10, "LITESKILL_LLM_MAX_RETRIES must be between 0 and 10"),
    ]
    if settings.llm.outbound_allow:
        from infra.net.outbound import parse_allow_entry

        for entry in settings.llm.outbound_allow:
            try:
                parse_allow_entry(entry)
            except ValueError as exc:
                checks.append((False, f"LITESKILL_OUTBOUND_ALLOW: {exc}"))
    for ok, message in checks:
        if not ok:
            raise SettingsError(message)


def known_variables() -> list[tuple[str, str]]:
    """Every LITESKILL_* variable with its doc line, for the README and `liteskill config`."""
    out: list[tuple[str, str]] = []

    def walk(cls: type[Any], group: str | None) -> None:
        hints = get_type_hints(cls)
        for field in msgspec.structs.fields(cls):
            hint = hints[field.name]
            if isinstance(hint, type) and issubclass(hint, msgspec.Struct):
                walk(hint, field.name)
            else:
                out.append((_variable(group, field.name), field.name))

    walk(Settings, None)
    return out


def load_settings(env: typing.Mapping[str, str] | None = None, *, dotenv: Path | None = Path(".env")) -> Settings:
    """Read settings from ``env`` (default: the process environment plus an optional .env file)."""
    if env is None:
        merged: dict[str, str] = {}
        if dotenv is not None and dotenv.is_file():
            from dotenv import dotenv_values

            merged.update({k: v for k, v in dotenv_values(dotenv).items() if v is not None})
        merged.update(os.environ)
        env = merged
    known = {name for name, _ in known_variables()}
    unknown = sorted(k for k in env if k.startswith(PREFIX) and k not in known)
    if unknown:
        raise SettingsError(f"unknown setting {unknown[0]} (see README, Configuration)")
    settings: Settings = _build(Settings, None, env)
    _validate(settings)
    return settings
