"""The OpenAPI document: Litestar's generated schema plus the Problem contract on every operation.

The same bytes are served at /api/v1/openapi.json and committed as openapi/openapi.json.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from litestar import Litestar, Request
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin, ScalarRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme, Server

from api.problem import PROBLEM_MEDIA_TYPE

API_VERSION = "1.0.0"
COMMITTED_PATH = Path(__file__).resolve().parent.parent / "openapi" / "openapi.json"

_PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "RFC 9457 problem details. `code` is stable: switch on it.",
    "required": ["type", "title", "status", "code"],
    "properties": {
        "type": {"type": "string", "format": "uri"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "code": {"type": "string", "description": "Stable snake_case error code."},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "request_id": {"type": "string"},
        "errors": {"type": "array", "items": {"$ref": "#/components/schemas/FieldError"}},
    },
}
_FIELD_ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["detail", "code"],
    "properties": {
        "detail": {"type": "string"},
        "code": {"type": "string"},
        "pointer": {"type": "string", "description": "JSON Pointer into the request body."},
        "parameter": {"type": "string", "description": "Name of the query, path or header parameter."},
    },
}
_GENERIC = {
    "4XX": "Client error (problem details).",
    "5XX": "Server error (problem details).",
}
_METHODS = {"get", "put", "post", "delete", "patch", "head", "options"}


DOCUMENT_PATH = "/api/v1/openapi.json"


class ProblemAwareJsonPlugin(JsonRenderPlugin):
    """Serves the post-processed document (Problem responses added), byte-identical to the file."""

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        return document_bytes(request.app)


class DocsPlugin(ScalarRenderPlugin):
    """The interactive docs page, reading the one published document."""

    @staticmethod
    def get_openapi_json_route(request: Request[Any, Any, Any]) -> str:
        return DOCUMENT_PATH


def openapi_config() -> OpenAPIConfig:
    return OpenAPIConfig(
        title="Liteskill API",
        version=API_VERSION,
        description="Self-hosted, API-first platform for working with large language models.",
        path="/api/v1/docs",
        render_plugins=[DocsPlugin(path="/"), ProblemAwareJsonPlugin(path="/openapi.json")],
        servers=[Server(url="/")],
        components=Components(
            security_schemes={
                "bearer": SecurityScheme(
                    type="http",
                    scheme="bearer",
                    description="An access JWT or an API key (lsk_...).",
                )
            }
        ),
        use_handler_docstrings=True,
        create_examples=False,
    )


def _problem_response(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }


def build_document(app: Litestar) -> dict[str, Any]:
    doc = copy.deepcopy(app.openapi_schema.to_schema())
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    schemas["Problem"] = _PROBLEM_SCHEMA
    schemas["FieldError"] = _FIELD_ERROR_SCHEMA
    for path_item in doc.get("paths", {}).values():
        for method, op in path_item.items():
            if method not in _METHODS:
                continue
            responses: dict[str, Any] = op.setdefault("responses", {})
            for status, response in list(responses.items()):
                if "headers" in response:  # Litestar keeps them in a set: order them for stable output
                    response["headers"] = dict(sorted(response["headers"].items()))
                if status[0] in "45":
                    description = response.get("description") or "Problem"
                    responses[status] = _problem_response(description)
            for status, description in _GENERIC.items():
                responses.setdefault(status, _problem_response(description))
    # Litestar adds a schema for its own ValidationException body; every error is a Problem now.
    for name in [n for n in schemas if n.endswith("ValidationException") or n == "ValidationError"]:
        del schemas[name]
    doc["components"]["schemas"] = dict(sorted(schemas.items()))
    return doc


def document_bytes(app: Litestar) -> bytes:
    cached = app.state.get("_openapi_bytes")
    if cached is None:
        cached = render(build_document(app))
        app.state["_openapi_bytes"] = cached
    assert isinstance(cached, bytes)
    return cached


def render(doc: dict[str, Any]) -> bytes:
    return (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode()
