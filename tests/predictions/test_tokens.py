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


# --- findability (issue 17 item 9) ---------------------------------------------------------


def test_token_list_says_active_or_revoked_without_a_red_cross_for_working_tokens(reviewer, client_for):
    api_token_create(user=reviewer, name="working")
    revoked, _ = api_token_create(user=reviewer, name="old")
    ApiToken.objects.filter(pk=revoked.pk).update(revoked=True)

    changelist = client_for(reviewer).get(reverse("admin:predictions_apitoken_changelist"))
    page = changelist.content.decode()

    assert "icon-no.svg" not in page and "icon-yes.svg" not in page
    rows = {row.split("field-name\">")[1].split("<")[0]: row for row in page.split("<tr")[1:] if "field-name" in row}
    assert '<td class="field-status">active</td>' in rows["working"]
    assert '<td class="field-status">revoked</td>' in rows["old"]


def test_token_pages_link_the_predict_page(reviewer, client_for):
    client = client_for(reviewer)
    predict = reverse("predictions:predict")

    changelist = client.get(reverse("admin:predictions_apitoken_changelist")).content.decode()
    added = client.post(reverse("admin:predictions_apitoken_add"), {"user": reviewer.pk, "name": "x"}, follow=True)

    assert f'<a href="{predict}">predict endpoint</a>' in changelist
    assert f"http://testserver{predict}" in changelist  # the curl example, ready to copy
    assert f'<a href="{predict}">predict endpoint</a>' in added.content.decode()


@pytest.mark.parametrize("user", ["uploader", "reviewer", "lead"])
def test_every_admin_page_links_the_predict_page_for_those_who_may_use_it(db, user, client_for, request):
    client = client_for(request.getfixturevalue(user))

    for url in (reverse("admin:index"), reverse("admin:predictions_apitoken_changelist")):
        page = client.get(url).content.decode()
        assert f'<a href="{reverse("predictions:predict")}" id="predict-link">Predict</a>' in page, url


def test_no_predict_link_for_staff_who_may_not_use_the_api(django_user_model, client_for):
    outsider = django_user_model.objects.create_user(username="outsider", password="x", is_staff=True)

    page = client_for(outsider).get(reverse("admin:index")).content.decode()

    assert 'id="predict-link"' not in page


# --- API tokens open the private media: an export's image_url for a script (issue 17 item 8) ----------


@pytest.fixture
def stored_image(image_factory):
    return image_factory(name="Überprüfung_größe_日本.jpg")


def media_get(path: str, token: str | None = None, client=None):
    from django.test import Client

    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token is not None else {}
    return (client or Client()).get(f"/media/{path}", **headers)


def test_a_token_fetches_an_image_for_a_user_who_may_view_images(reviewer, stored_image):
    _, raw = api_token_create(user=reviewer, name="script")

    response = media_get(stored_image.file.name, raw)

    assert response.status_code == 200
    with stored_image.file.open("rb") as original:
        assert b"".join(response.streaming_content) == original.read()


def test_a_wrong_or_revoked_token_is_refused_even_with_a_session(reviewer, stored_image, client_for):
    token, raw = api_token_create(user=reviewer, name="script")
    ApiToken.objects.filter(pk=token.pk).update(revoked=True)

    for sent in (raw, "not-a-token"):
        refused = media_get(stored_image.file.name, sent, client=client_for(reviewer))
        assert refused.status_code == 401, sent
        assert refused["WWW-Authenticate"].startswith("Bearer")
    malformed = client_for(reviewer).get(f"/media/{stored_image.file.name}", HTTP_AUTHORIZATION="Basic eDp5")
    assert malformed.status_code == 401


def test_a_token_gives_no_more_than_its_users_permissions(reviewer, lead, django_user_model, stored_image):
    from django.core.files.base import ContentFile

    from predictions.models import ExportJob

    outsider = django_user_model.objects.create_user(username="outsider", password="x", is_staff=True)
    _, outsider_token = api_token_create(user=outsider)
    _, reviewer_token = api_token_create(user=reviewer)
    _, lead_token = api_token_create(user=lead)
    job = ExportJob.objects.create(created_by=lead, status=ExportJob.Status.DONE)
    job.file.save("exports/7/labels-2026-11-29.csv", ContentFile(b"id\n"), save=True)

    assert media_get(stored_image.file.name, outsider_token).status_code == 403
    assert media_get(job.file.name, reviewer_token).status_code == 403  # exports need the export permission
    assert media_get(job.file.name, lead_token).status_code == 200
