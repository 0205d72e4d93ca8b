"""POST /api/v1/me/password: change the caller's password from a signed-in session.

The current password must be given (a stolen access token alone cannot lock the owner out), the
attempts are rate-limited per account like logins, and every other session of the user is signed
out; the session that made the change keeps working. API keys cannot change passwords.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, post
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import JSONBody
from msgspec import Meta

from api.context import event_metadata
from api.errors import ApiError
from api.problem import FieldError
from api.ratelimit import enforce
from api.services import Services
from domain.shared.principal import Principal
from infra.identity import credentials

Password = Annotated[str, Meta(min_length=1, max_length=1024)]


class PasswordChange(msgspec.Struct, kw_only=True):
    current_password: Password
    new_password: Annotated[str, Meta(min_length=1, max_length=1024, description="12 to 128 characters.")]


class PasswordController(Controller):
    path = "/me/password"
    tags = ["auth"]
    opt = {"scope": "me"}

    @post(
        "",
        operation_id="ChangeMyPassword",
        summary="Change your password (signs out your other sessions)",
        status_code=204,
        responses={
            400: ResponseSpec(
                None, description="The current password is wrong (`wrong_password`) or the body is not valid."
            ),
            403: ResponseSpec(
                None, description="Change passwords while signed in, not with an API key (`session_required`)."
            ),
            409: ResponseSpec(None, description="The account signs in through an identity provider (`no_password`)."),
            422: ResponseSpec(None, description="The new password breaks the policy (`password_policy`)."),
            429: ResponseSpec(None, description="Too many attempts for this account (`rate_limited`)."),
        },
    )
    async def change_my_password(
        self,
        request: Request[Any, Any, Any],
        services: NamedDependency[Services],
        principal: NamedDependency[Principal],
        data: JSONBody[PasswordChange],
    ) -> None:
        if principal.session_id is None:
            raise ApiError(403, "session_required", "Change your password while signed in, not with an API key.")
        await enforce(
            services.redis, "password-account", str(principal.user_id), services.settings.auth_rate_per_account
        )
        try:
            async with services.db.write() as session:
                await credentials.change_password(
                    session,
                    services.passwords,
                    principal.user_id,
                    principal.session_id,
                    data.current_password,
                    data.new_password,
                    event_metadata(request, principal),
                )
        except credentials.WrongPassword:
            raise ApiError(
                400,
                "wrong_password",
                "The current password is not correct.",
                errors=[
                    FieldError(
                        detail="The current password is not correct.",
                        code="wrong_password",
                        pointer="/current_password",
                    )
                ],
            ) from None
