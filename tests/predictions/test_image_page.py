"""The image page: no Save buttons, previous/next through the list it came from, label keys (issue 17 item 9)."""

from datetime import timedelta
from urllib.parse import urlencode

import pytest
from django.urls import reverse
from django.utils import timezone

from images.models import Image
from predictions.models import Label, Review
from predictions.services.reviews import review_submit


def page_url(image, filters: str = "") -> str:
    url = reverse("admin:images_image_change", args=[image.pk])
    return f"{url}?{urlencode({'_changelist_filters': filters})}" if filters else url


@pytest.fixture
def listed(active_model_version, image_factory):
    """Five images uploaded a minute apart, newest first in the list: cat-4, dog-3, cat-2, dog-1, cat-0."""
    start = timezone.now() - timedelta(hours=1)
    images = [
        image_factory(name=f"{'cat' if n % 2 == 0 else 'dog'}-{n}.jpg", uploaded_at=start + timedelta(minutes=n))
        for n in range(5)
    ]
    return {image.original_name.removesuffix(".jpg"): image for image in images}


@pytest.mark.parametrize("user", ["lead", "reviewer"])
def test_the_read_only_image_page_shows_no_save_buttons(user, listed, client_for, request):
    page = client_for(request.getfixturevalue(user)).get(page_url(listed["cat-2"])).content.decode()

    assert 'name="_save"' not in page and 'name="_continue"' not in page and 'name="_addanother"' not in page
    assert "closelink" in page


def test_previous_and_next_follow_the_default_list_order(listed, reviewer, client_for):
    response = client_for(reviewer).get(page_url(listed["cat-2"]))

    assert response.context["adminform"].form.instance == listed["cat-2"]
    page = response.content.decode()
    assert f'id="image-previous" class="button" href="{page_url(listed["dog-3"])}"' in page
    assert f'id="image-next" class="button" href="{page_url(listed["dog-1"])}"' in page


def test_previous_and_next_follow_the_lists_search_and_sort_and_stop_at_its_ends(listed, reviewer, client_for):
    client = client_for(reviewer)
    searched = "q=cat"

    middle = client.get(page_url(listed["cat-2"], searched)).content.decode()
    first = client.get(page_url(listed["cat-4"], searched)).content.decode()
    # Sorted by name, ascending (the second column of the list; the checkbox is column 0).
    by_name = client.get(page_url(listed["dog-1"], "o=2")).content.decode()

    assert page_url(listed["cat-4"], searched).replace("&", "&amp;") in middle
    assert page_url(listed["cat-0"], searched).replace("&", "&amp;") in middle
    assert 'id="image-previous"' not in first and page_url(listed["cat-2"], searched).replace("&", "&amp;") in first
    assert f'href="{page_url(listed["cat-4"], "o=2")}"' in by_name  # cat-4 sorts just before dog-1
    assert f'href="{page_url(listed["dog-3"], "o=2")}"' in by_name


def test_label_keys_set_the_label_and_move_to_the_next_image(listed, reviewer, client_for):
    client = client_for(reviewer)
    circle = Label.objects.get(name="circle")
    filters = "status=pending"  # the list of unreviewed images, which the labelled image leaves

    page = client.get(page_url(listed["cat-2"], filters)).content.decode()
    assert f'name="label" value="{circle.pk}"' in page and 'data-key="1"' in page and "<kbd>1</kbd> circle" in page

    label_url = reverse("admin:images_image_label", args=[listed["cat-2"].pk]) + "?" + urlencode(
        {"_changelist_filters": filters}
    )
    response = client.post(label_url, {"label": circle.pk})

    assert response.status_code == 302
    assert response["Location"] == page_url(listed["dog-1"], filters)
    labelled = Image.objects.get(pk=listed["cat-2"].pk)
    assert (labelled.final_label, labelled.reviewed_by) == (circle, reviewer)
    assert Review.objects.get(image=labelled).source == Review.Source.GRID
    # The labelled image's page offers no keys: its label changes by undo or a Lead's grid action.
    assert 'data-key="1"' not in client.get(page_url(labelled)).content.decode()


def test_a_labelled_image_is_not_changed_from_its_page(listed, reviewer, second_reviewer, client_for):
    square, circle = Label.objects.get(name="square"), Label.objects.get(name="circle")
    review_submit(image=listed["dog-3"], reviewer=second_reviewer, label=square)

    response = client_for(reviewer).post(
        reverse("admin:images_image_label", args=[listed["dog-3"].pk]), {"label": circle.pk}, follow=True
    )

    assert Image.objects.get(pk=listed["dog-3"].pk).final_label == square
    assert "was not labelled" in response.content.decode()


def test_only_reviewers_label_from_the_image_page(listed, uploader, client_for):
    client = client_for(uploader)
    circle = Label.objects.get(name="circle")

    page = client.get(page_url(listed["cat-2"]))
    refused = client.post(reverse("admin:images_image_label", args=[listed["cat-2"].pk]), {"label": circle.pk})

    assert page.status_code == 200 and 'name="label"' not in page.content.decode()
    assert refused.status_code == 403
    assert Image.objects.get(pk=listed["cat-2"].pk).final_label is None
