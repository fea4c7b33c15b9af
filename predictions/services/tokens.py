"""API tokens: creation, authentication, revocation.

A token is ``secrets.token_urlsafe(32)``; only its SHA-256 and its first
characters (to recognise it in the admin) are stored, so a database leak does
not leak usable tokens. The token itself is shown once, when it is created.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Q, QuerySet
from django.utils import timezone

from predictions.models import ApiToken

TOKEN_PREFIX_LENGTH = 8
# last_used_at is informative; writing it on every request would turn every
# API call into a database write.
LAST_USED_RESOLUTION = timedelta(minutes=1)


def api_token_hash(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def api_token_create(*, user: AbstractBaseUser, name: str = "") -> tuple[ApiToken, str]:
    """Create a token for ``user``; returns the row and the raw token (not stored anywhere)."""
    raw = secrets.token_urlsafe(32)
    token = ApiToken.objects.create(
        user=user, name=name, prefix=raw[:TOKEN_PREFIX_LENGTH], key_hash=api_token_hash(raw)
    )
    return token, raw


def api_token_authenticate(*, raw: str) -> AbstractBaseUser | None:
    """The active user owning the unrevoked token ``raw``, or None.

    The lookup is by hash over a unique index: the database compares digests of
    the secret, never the secret itself, so the time it takes says nothing about
    how much of a guess was right.
    """
    if not raw:
        return None
    token = (
        ApiToken.objects.select_related("user")
        .filter(key_hash=api_token_hash(raw), revoked=False, user__is_active=True)
        .first()
    )
    if token is None:
        return None
    now = timezone.now()
    if token.last_used_at is None or now - token.last_used_at >= LAST_USED_RESOLUTION:
        # The condition is repeated in the UPDATE so that concurrent requests write once.
        ApiToken.objects.filter(pk=token.pk).filter(
            Q(last_used_at__isnull=True) | Q(last_used_at__lte=now - LAST_USED_RESOLUTION)
        ).update(last_used_at=now)
    return token.user


def api_tokens_revoke(*, tokens: QuerySet[ApiToken]) -> int:
    """Revoke ``tokens``; returns how many were still active."""
    return tokens.filter(revoked=False).update(revoked=True)
