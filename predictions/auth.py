"""Who may call the prediction API, and how a request says who it is.

Two ways in: a per-user API token (``Authorization: Bearer <token>``, created
in the admin) for scripts, or the admin's own session for people in a browser.
Either way the user must be an active staff member who may view images
(uploaders, reviewers, leads); storing what was sent (``?store=1``) also needs
the permission to add images. The same tokens open the private media (the
``image_url``s of an export), registered into images.hooks by predictions.apps.
"""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.http import HttpRequest
from django.middleware.csrf import CsrfViewMiddleware

from images.hooks import CredentialsRefused
from predictions.services.tokens import api_token_authenticate

API_PERMISSION = "images.view_image"
STORE_PERMISSION = "images.add_image"


class ApiAuthenticationFailed(Exception):
    """No usable credentials; ``str()`` says what was wrong."""


def can_use_prediction_api(user: AbstractBaseUser) -> bool:
    return bool(user.is_active and user.is_staff and user.has_perm(API_PERMISSION))


def can_store_through_api(user: AbstractBaseUser) -> bool:
    return can_use_prediction_api(user) and user.has_perm(STORE_PERMISSION)


def api_request_user(request: HttpRequest) -> tuple[AbstractBaseUser, bool]:
    """The calling user and whether it came with a token (else: the session).

    A request that carries an Authorization header is judged by it alone: a bad
    token fails even when a session cookie came along.
    """
    header = request.headers.get("Authorization")
    if header is not None:
        scheme, _, raw = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not raw.strip():
            raise ApiAuthenticationFailed("the Authorization header must be 'Bearer <token>'")
        user = api_token_authenticate(raw=raw.strip())
        if user is None:
            raise ApiAuthenticationFailed("invalid or revoked API token")
        return user, True
    if request.user.is_authenticated:
        return request.user, False
    raise ApiAuthenticationFailed(
        "authentication required: send 'Authorization: Bearer <token>' (tokens are created in the admin)"
    )


def media_credentials_user(request: HttpRequest) -> AbstractBaseUser | None:
    """The user a request's API token names, for the private media view (images.hooks.credentials_register).

    None without an Authorization header (the session decides); a wrong header or
    token is refused, as the API refuses it. The media view then applies its own
    rule (an active staff user who may view images), the API's own.
    """
    if request.headers.get("Authorization") is None:
        return None
    try:
        user, _ = api_request_user(request)
    except ApiAuthenticationFailed as exc:
        raise CredentialsRefused(str(exc)) from None
    return user


class _CsrfCheck(CsrfViewMiddleware):
    def _reject(self, request, reason):
        # Hand the reason back instead of rendering Django's HTML failure page.
        return reason


def csrf_failure_reason(request: HttpRequest) -> str | None:
    """Run Django's CSRF check on a session-authenticated request; the reason it fails, or None.

    The API view is csrf_exempt because token requests carry no cookie and need
    no CSRF token; session requests must not lose the protection, so they are
    checked here, by the middleware's own code.
    """
    check = _CsrfCheck(lambda _request: None)
    reason = check.process_view(request, None, (), {})
    return reason if isinstance(reason, str) else None
