"""Resolve where the database and Redis are: configured URLs, or embedded servers started here."""

from __future__ import annotations

import logging
from types import TracebackType

import msgspec

from infra.embedded.postgres import EmbeddedPostgres
from infra.embedded.valkey import EmbeddedValkey
from infra.settings import Settings

log = logging.getLogger(__name__)

DATABASE_NAME = "liteskill"


class EmbeddedServices:
    """Context manager: starts what is not configured, yields settings with resolved URLs, stops it."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.postgres: EmbeddedPostgres | None = None
        self.valkey: EmbeddedValkey | None = None

    def start(self) -> Settings:
        settings = self.settings
        try:
            if settings.database.url is None:
                self.postgres = EmbeddedPostgres(settings.data_dir)
                self.postgres.start()
                self.postgres.ensure_database(DATABASE_NAME)
                db = msgspec.structs.replace(settings.database, url=self.postgres.url(DATABASE_NAME))
                settings = msgspec.structs.replace(settings, database=db)
                log.info("using embedded PostgreSQL", extra={"data_dir": str(self.postgres.pgdata)})
            if settings.redis.url is None:
                self.valkey = EmbeddedValkey(settings.data_dir)
                redis = msgspec.structs.replace(settings.redis, url=self.valkey.start())
                settings = msgspec.structs.replace(settings, redis=redis)
                log.info("using embedded Valkey", extra={"url": settings.redis.url})
        except BaseException:
            self.stop()
            raise
        return settings

    @property
    def embedded(self) -> bool:
        return self.postgres is not None or self.valkey is not None

    def stop(self) -> None:
        if self.valkey is not None:
            self.valkey.stop()
            self.valkey = None
        if self.postgres is not None:
            self.postgres.stop()
            self.postgres = None

    def __enter__(self) -> Settings:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
