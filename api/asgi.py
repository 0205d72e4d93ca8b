"""ASGI entry point for uvicorn workers: settings from the environment, resolved by the parent."""

from __future__ import annotations

from litestar import Litestar

from api.app import create_app
from infra.logging import configure_logging
from infra.settings import load_settings


def create() -> Litestar:
    settings = load_settings()
    configure_logging(settings.log_level, json=settings.log_json)
    return create_app(settings)
