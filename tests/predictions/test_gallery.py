"""The image changelist's gallery (issue 17, item 10): what the page gives its script.

The browser test (tests/e2e/test_gallery.py) selects tiles and sets a label through the action.
"""

import pytest
from django.urls import reverse

pytestmark = pytest.mark.django_db


def test_reviewers_get_the_label_buttons_with_the_review_screens_keys(client_for, reviewer, prediction_factory):
    prediction_factory(name="a.jpg")
    page = client_for(reviewer).get(reverse("admin:images_image_changelist")).content.decode()

    assert 'id="image-gallery"' in page and "images/image_list.js" in page and "images/image_list.css" in page
    for key, name in enumerate(["circle", "square", "triangle", "star", "cross"], start=1):
        assert f'data-key="{key}"' in page and f"<kbd>{key}</kbd> {name}</button>" in page


def test_who_may_not_set_labels_gets_the_gallery_without_label_buttons(client_for, uploader, prediction_factory):
    prediction_factory(name="a.jpg")
    page = client_for(uploader).get(reverse("admin:images_image_changelist")).content.decode()

    assert 'id="image-gallery"' in page
    assert "image-gallery-labels" not in page and "data-label=" not in page


def test_the_label_buttons_post_to_the_set_label_action_and_its_rules_hold(
    client_for, reviewer, second_reviewer, prediction_factory
):
    """What the gallery's script posts: the selection, action=set_label, apply and the label."""
    from images.models import Image
    from predictions.models import Label
    from predictions.services.reviews import review_submit

    free = prediction_factory(name="free.jpg").image
    taken = prediction_factory(name="taken.jpg").image
    review_submit(image=taken, reviewer=second_reviewer, label=Label.objects.get(name="star"))
    square = Label.objects.get(name="square")
    url = reverse("admin:images_image_changelist")

    response = client_for(reviewer).post(
        url,
        {"action": "set_label", "select_across": "0", "apply": "yes", "label": square.pk,
         "_selected_action": [free.pk, taken.pk]},  # fmt: skip
        follow=True,
    )

    messages = [str(message) for message in response.context["messages"]]
    assert any("Labelled 1 image(s) “square”; 1 skipped (1 already reviewed)" in text for text in messages), messages
    assert Image.objects.get(pk=free.pk).final_label == square
    assert Image.objects.get(pk=taken.pk).final_label.name == "star"
