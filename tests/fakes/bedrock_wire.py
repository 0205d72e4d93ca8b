"""What the fake Bedrock endpoint (tests/fakes/bedrock_server.py) says and how it says it: the
Bedrock-only scenarios on top of the shared ones (``EXTRA``: AWS error codes, Bedrock's own stop
reasons, mid-stream exceptions) and the AWS event-stream frame encoding (prelude, string headers,
CRC32s)."""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.chat_scenarios import SCENARIOS, Scenario

ERROR_CODES = {
    400: "ValidationException",
    401: "UnrecognizedClientException",
    403: "AccessDeniedException",
    404: "ResourceNotFoundException",
    429: "ThrottlingException",
    500: "InternalServerException",
    503: "ServiceUnavailableException",
}

STOP_REASONS = {
    "end_turn": "end_turn",
    "tool_use": "tool_use",
    "max_tokens": "max_tokens",
    "stop_sequence": "stop_sequence",
    "content_filter": "content_filtered",
}


@dataclass(frozen=True)
class BedrockScenario:
    """A Bedrock-only behaviour on top of the shared scenarios."""

    base: Scenario = field(default_factory=Scenario)
    error_code: str | None = None
    """The ``x-amzn-ErrorType`` code for ``base.http_error`` (else by status)."""
    stop_reason: str | None = None
    """Bedrock's own stop reason (else translated from ``base.finish``)."""
    stream_exception: tuple[str, str] | None = None
    """After the text, send this exception frame (``:exception-type``, message) instead of the end."""
    metadata: bool = True


EXTRA: dict[str, BedrockScenario] = {
    "bad_signature": BedrockScenario(
        Scenario(http_error=403, error_message="The security token included in the request is invalid."),
        error_code="UnrecognizedClientException",
    ),
    "expired_token": BedrockScenario(
        Scenario(http_error=403, error_message="The security token included in the request is expired"),
        error_code="ExpiredTokenException",
    ),
    "validation": BedrockScenario(Scenario(http_error=400, error_message="Malformed input request")),
    "too_long": BedrockScenario(
        Scenario(http_error=400, error_message="Input is too long for requested model."),
    ),
    "throttled_503": BedrockScenario(
        Scenario(http_error=503, error_message="Too many connections", retry_after="1"),
    ),
    "stream_error": BedrockScenario(
        Scenario(text=["par"]),
        stream_exception=("modelStreamErrorException", "The model stream failed"),
    ),
    "stream_throttled": BedrockScenario(
        Scenario(text=[]),
        stream_exception=("throttlingException", "Too many tokens, please wait"),
    ),
    "stop_sequence": BedrockScenario(Scenario(text=["one"], finish="stop_sequence", output_tokens=1)),
    "guardrail": BedrockScenario(Scenario(text=["no"], output_tokens=1), stop_reason="guardrail_intervened"),
    "malformed_tool_use": BedrockScenario(Scenario(text=["x"], output_tokens=1), stop_reason="malformed_tool_use"),
    "no_metadata": BedrockScenario(Scenario(text=["hi"]), metadata=False),
}


def scenario_for(name: str) -> BedrockScenario:
    if name in EXTRA:
        return EXTRA[name]
    if name in ("flaky", "slow"):
        return BedrockScenario(SCENARIOS["text"])
    return BedrockScenario(SCENARIOS[name])


# -- AWS event-stream encoding ------------------------------------------------------------------


def _header(name: str, value: str) -> bytes:
    raw_name = name.encode()
    raw_value = value.encode()
    return struct.pack("!B", len(raw_name)) + raw_name + struct.pack("!BH", 7, len(raw_value)) + raw_value


def encode_frame(headers: dict[str, str], payload: bytes) -> bytes:
    """One event-stream message: prelude (total length, headers length, CRC32 of those 8 bytes),
    headers (all of type string), payload, CRC32 of everything before."""
    raw_headers = b"".join(_header(k, v) for k, v in headers.items())
    total = 12 + len(raw_headers) + len(payload) + 4
    prelude = struct.pack("!II", total, len(raw_headers))
    prelude += struct.pack("!I", zlib.crc32(prelude) & 0xFFFFFFFF)
    message = prelude + raw_headers + payload
    return message + struct.pack("!I", zlib.crc32(message) & 0xFFFFFFFF)


def event_frame(event_type: str, body: dict[str, Any]) -> bytes:
    return encode_frame(
        {":event-type": event_type, ":content-type": "application/json", ":message-type": "event"},
        json.dumps({**body, "p": "abcdefghij"}).encode(),
    )


def exception_frame(exception_type: str, message: str) -> bytes:
    return encode_frame(
        {":exception-type": exception_type, ":content-type": "application/json", ":message-type": "exception"},
        json.dumps({"message": message}).encode(),
    )
