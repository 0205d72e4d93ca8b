"""Bedrock failures as typed ``Failed`` events: AWS error codes, botocore and connection errors."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import botocore.exceptions  # type: ignore[import-untyped]
import urllib3.exceptions

from domain.llm.stream import ErrorKind, Failed
from infra.llm.streaming import failure_for_status, kind_for_status, parse_retry_after

_AUTH_CODES = frozenset(
    {
        "unrecognizedclientexception",
        "expiredtokenexception",
        "expiredtoken",
        "invalidsignatureexception",
        "incompletesignature",
        "invalidclienttokenid",
        "missingauthenticationtokenexception",
        "missingauthenticationtoken",
        "signaturedoesnotmatch",
    }
)
_CODE_KINDS: dict[str, ErrorKind] = {
    "accessdeniedexception": "permission",
    "resourcenotfoundexception": "not_found",
    "throttlingexception": "rate_limited",
    "servicequotaexceededexception": "rate_limited",
    "toomanyrequestsexception": "rate_limited",
    "serviceunavailableexception": "overloaded",
    "internalserverexception": "overloaded",
    "modelnotreadyexception": "overloaded",
    "modelstreamerrorexception": "overloaded",
    "badgatewayexception": "overloaded",
    "dependencyfailedexception": "overloaded",
    "modeltimeoutexception": "timeout",
    "modelerrorexception": "bad_response",
}


def failure_for_code(code: str, message: str, status: int | None, headers: Mapping[str, str] | None) -> Failed:
    """A Bedrock error (``x-amzn-ErrorType`` code, the provider's message, the HTTP status when
    there was one) as a ``Failed``: the code decides the kind where it is specific (so a 403
    ``UnrecognizedClientException`` is an authentication failure), else the status."""
    lowered = code.lower()
    kind: ErrorKind | None
    if lowered in _AUTH_CODES:
        kind = "authentication"
    elif lowered == "validationexception":
        kind = kind_for_status(400, message)
    else:
        kind = _CODE_KINDS.get(lowered)
    if status is not None:
        base = failure_for_status(status, message, headers)
        if kind is None or base.kind == "context_too_long":
            return base
        text = base.message
    else:
        text = message[:2000] or code or "the provider reported an error"
        if kind is None:
            kind = "bad_response"
    retry = parse_retry_after(headers) if kind in ("rate_limited", "overloaded") else None
    return Failed(kind=kind, message=text, status=status, retry_after_s=retry)


def failure_for_exception(exc: BaseException) -> Failed:
    """Any boto3 / botocore / urllib3 failure of a call or of reading its stream."""
    if isinstance(exc, botocore.exceptions.ClientError):
        response: Mapping[str, Any] = exc.response or {}
        error = response.get("Error") or {}
        meta = response.get("ResponseMetadata") or {}
        status = meta.get("HTTPStatusCode")
        return failure_for_code(
            str(error.get("Code") or ""),
            str(error.get("Message") or "") or str(exc),
            int(status) if status is not None else None,
            meta.get("HTTPHeaders") or {},
        )
    if isinstance(exc, botocore.exceptions.ReadTimeoutError | urllib3.exceptions.TimeoutError | TimeoutError):
        return Failed(kind="timeout", message=f"Bedrock did not answer in time: {exc}")
    if isinstance(
        exc,
        botocore.exceptions.NoCredentialsError
        | botocore.exceptions.PartialCredentialsError
        | botocore.exceptions.CredentialRetrievalError
        | botocore.exceptions.ProfileNotFound
        | botocore.exceptions.TokenRetrievalError,
    ):
        return Failed(kind="authentication", message=str(exc))
    if isinstance(exc, botocore.exceptions.ParamValidationError | botocore.exceptions.NoRegionError):
        return Failed(kind="bad_request", message=str(exc))
    if isinstance(exc, botocore.eventstream.ParserError):
        return Failed(kind="bad_response", message=f"Bedrock sent a malformed event stream: {exc}")
    if isinstance(
        exc,
        botocore.exceptions.ConnectionError
        | botocore.exceptions.HTTPClientError
        | botocore.exceptions.IncompleteReadError
        | urllib3.exceptions.HTTPError
        | OSError,
    ):
        return Failed(kind="connection", message=f"the connection to Bedrock failed: {exc}")
    return Failed(kind="bad_response", message=f"{type(exc).__name__}: {exc}")
