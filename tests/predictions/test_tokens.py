"""API tokens: only a hash is kept, the token is shown once in the admin, revoked tokens stop working,
and only leads (and superusers) handle other people's tokens."""

import hashlib
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from predictions.models import ApiToken
from predictions.services.tokens import api_token_authenticate, api_token_create


def test_only_the_hash_and_a_prefix_are_stored(reviewer):
    token, raw = api_token_create(user=reviewer, name="laptop")

    token.refresh_from_db()
    assert token.key_hash == hashlib.sha256(raw.encode()).hexdigest()
    assert raw.startswith(token.prefix) and len(token.prefix) < len(raw)
    assert raw not in {token.name, token.prefix, token.key_hash}
    assert api_token_authenticate(raw=raw) == reviewer


def test_revoked_tokens_and_inactive_users_do_not_authenticate(reviewer):
    revoked, revoked_raw = api_token_create(user=reviewer, name="old")
    revoked.revoked = True
    revoked.save()
    _, raw = api_token_create(user=reviewer, name="current")

    assert api_token_authenticate(raw=revoked_raw) is None
    assert api_token_authenticate(raw="") is None
    reviewer.is_active = False
    reviewer.save()
    assert api_token_authenticate(raw=raw) is None


def test_last_used_is_written_at_most_once_a_minute(reviewer):
    token, raw = api_token_create(user=reviewer)
    api_token_authenticate(raw=raw)
    token.refresh_from_db()
    first_use = token.last_used_at
    assert first_use is not None

    api_token_authenticate(raw=raw)
    token.refresh_from_db()
    assert token.last_used_at == first_use

    ApiToken.objects.filter(pk=token.pk).update(last_used_at=timezone.now() - timedelta(minutes=2))
    api_token_authenticate(raw=raw)
    token.refresh_from_db()
    assert token.last_used_at >= first_use


def test_adding_a_token_in_the_admin_shows_it_once(lead, reviewer, client_for):
    client = client_for(lead)
    response = client.post(
        reverse("admin:predictions_apitoken_add"), {"user": reviewer.pk, "name": "scanner"}, follow=True
    )
    assert response.status_code == 200
    shown = [str(m) for m in response.context["messages"] if "<code>" in str(m)]
    assert len(shown) == 1
    raw = shown[0].split("<code>")[1].split("</code>")[0]

    token = ApiToken.objects.get()
    assert (token.user, token.name) == (reviewer, "scanner")
    assert api_token_authenticate(raw=raw) == reviewer
    change_page = client.get(reverse("admin:predictions_apitoken_change", args=[token.pk])).content.decode()
    changelist = client.get(reverse("admin:predictions_apitoken_changelist")).content.decode()
    assert raw not in change_page and raw not in changelist
    assert token.prefix in changelist


def test_add_form_defaults_to_the_current_user(reviewer, client_for):
    page = client_for(reviewer).get(reverse("admin:predictions_apitoken_add"))
    assert page.status_code == 200
    assert page.context["adminform"].form.initial["user"] == reviewer.pk


def test_a_reviewer_manages_only_their_own_tokens(reviewer, second_reviewer, client_for):
    others, _ = api_token_create(user=second_reviewer, name="not yours")
    client = client_for(reviewer)

    for_someone_else = client.post(
        reverse("admin:predictions_apitoken_add"), {"user": second_reviewer.pk, "name": "sneaky"}
    )
    assert for_someone_else.status_code == 200  # the form again, with an error
    assert not ApiToken.objects.filter(name="sneaky").exists()

    own = client.post(reverse("admin:predictions_apitoken_add"), {"user": reviewer.pk, "name": "mine"})
    assert own.status_code == 302
    changelist = client.get(reverse("admin:predictions_apitoken_changelist")).content.decode()
    assert "mine" in changelist and "not yours" not in changelist
    assert client.get(reverse("admin:predictions_apitoken_change", args=[others.pk])).status_code == 302


def test_tokens_are_only_made_for_users_who_may_use_the_api(lead, django_user_model, client_for):
    outsider = django_user_model.objects.create_user(username="outsider", password="x", is_staff=True)
    response = client_for(lead).post(reverse("admin:predictions_apitoken_add"), {"user": outsider.pk, "name": "x"})
    assert response.status_code == 200
    assert not ApiToken.objects.exists()


@pytest.mark.parametrize("who", ["owner", "lead"])
def test_revoke_action(who, reviewer, lead, client_for):
    token, raw = api_token_create(user=reviewer, name="leaked")
    client = client_for(reviewer if who == "owner" else lead)

    response = client.post(
        reverse("admin:predictions_apitoken_changelist"),
        {"action": "revoke_tokens", "_selected_action": [token.pk]},
    )

    assert response.status_code == 302
    token.refresh_from_db()
    assert token.revoked
    assert api_token_authenticate(raw=raw) is None
