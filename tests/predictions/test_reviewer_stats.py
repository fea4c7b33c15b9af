"""The reviewer statistics page and its selectors: who sees what, what is counted, and a
query count that does not grow with the number of reviews."""

import datetime as dt
import math

import pytest
from django.urls import reverse
from django.utils import timezone

from images.models import Image
from predictions.models import Label, Review
from predictions.selectors.reviewer_stats import decisions_per_day, reviewer_lines, team_pace

STATS = "admin:predictions_review_stats"


@pytest.fixture
def labels(stub_model_version_factory):
    stub_model_version_factory()
    return {label.name: label for label in Label.objects.all()}


def record(reviewer, image, label, *, days_ago: float = 0, seconds=None, agreed=None, queue_order="", **fields):
    """A Review row as the screen writes it, at a chosen time (the statistics only read rows)."""
    return Review.objects.create(
        image=image,
        reviewer=reviewer,
        label=label,
        agreed=agreed,
        seconds_spent=seconds,
        queue_order=queue_order,
        created_at=timezone.now() - dt.timedelta(days=days_ago),
        **fields,
    )


@pytest.fixture
def history(reviewer, second_reviewer, lead, labels, image_factory):
    """reviewer: 3 timed decisions today (2, 4, 10 s; 2 agreed of 3), one 3 days ago (agreed),
    one 10 days ago, one undone today and one grid decision (neither counted), and two gold checks
    (one right). second_reviewer: one decision today of 6 s."""
    circle, square = labels["circle"], labels["square"]
    images = [image_factory() for _ in range(8)]
    for image, seconds, agreed in zip(images[:3], (2.0, 4.0, 10.0), (True, True, False), strict=True):
        record(reviewer, image, circle, seconds=seconds, agreed=agreed)
    record(reviewer, images[3], circle, days_ago=3, agreed=True)
    record(reviewer, images[4], circle, days_ago=10, seconds=100.0)
    record(reviewer, images[5], circle, seconds=50.0, undone_at=timezone.now())
    record(reviewer, images[5], circle, seconds=50.0, source=Review.Source.GRID)
    gold_a, gold_b = images[6], images[7]
    for gold in (gold_a, gold_b):
        record(lead, gold, square, days_ago=20)
    Image.objects.filter(pk__in=[gold_a.pk, gold_b.pk]).update(final_label=square, is_gold=True)
    record(reviewer, gold_a, square, days_ago=1, queue_order="gold")
    record(reviewer, gold_b, circle, days_ago=1, queue_order="gold")
    record(second_reviewer, images[0], square, seconds=6.0, agreed=False)


def test_the_numbers_per_reviewer(history, reviewer, second_reviewer):
    lines = {line.username: line for line in reviewer_lines()}

    mine = lines["reviewer"]
    assert (mine.today, mine.week) == (3, 6)  # 3 today; 3 days ago and two gold checks yesterday
    assert mine.timed == 3 and mine.median_seconds == 4.0
    assert mine.items_per_hour == pytest.approx(3 * 3600 / 16)
    assert (mine.model_agreement.successes, mine.model_agreement.n) == (3, 4)
    assert (mine.gold.successes, mine.gold.n) == (1, 2)
    assert 0 < mine.gold.low < 0.5 < mine.gold.high < 1  # exact interval of 1 in 2
    assert mine.overturned.n == 0 and mine.overturned.rate is None
    other = lines["reviewer2"]
    assert (other.today, other.median_seconds, other.model_agreement.successes) == (1, 6.0, 0)
    assert "lead" in lines  # the lead's decisions were 20 days ago: still a line, nothing this week
    assert lines["lead"].week == 0 and lines["lead"].items_per_hour is None


def test_median_of_an_even_count_is_the_mean_of_the_middle_two(reviewer, labels, image_factory):
    for seconds in (1.0, 3.0, 5.0, 100.0):
        record(reviewer, image_factory(), labels["circle"], seconds=seconds)
    assert reviewer_lines()[0].median_seconds == 4.0


def test_team_pace_and_time_to_empty(history, prediction_factory, settings):
    for n in range(5):
        prediction_factory(name=f"open{n}.jpg")

    pace = team_pace()

    assert pace.open_items == 5
    assert pace.week_decisions == 5  # gold checks left out: 4 of reviewer's + 1 of reviewer2 in 7 days
    assert pace.items_per_hour == pytest.approx(5 / 168)
    assert pace.hours_to_empty == pytest.approx(5 / (5 / 168))
    settings.REVIEW_OVERLAP_SHARE, settings.REVIEW_OVERLAP_K = 0.5, 3
    assert team_pace().decisions_needed == pytest.approx(5 * 2)  # half the images need 3 decisions


def test_decisions_per_day_fill_every_day(history, reviewer):
    days = decisions_per_day(reviewer_ids=[reviewer.pk], days=14)
    assert len(days) == 14 and days[-1] == (timezone.localdate(), 3)
    assert sum(count for _, count in days) == 7  # the 10-days-ago one too, not the undone or grid ones


# --- the page and who sees it ---------------------------------------------------------


def test_a_lead_sees_everyone_and_the_method(client_for, lead, history):
    response = client_for(lead).get(reverse(STATS))

    assert response.status_code == 200
    page = response.content.decode()
    assert 'data-reviewer="reviewer"' in page and 'data-reviewer="reviewer2"' in page
    assert "Clopper–Pearson" in page and "Items per hour" in page and 'id="queue-pace"' in page
    assert "var(--primary)" in page and "<svg" in page  # the chart, in the admin's colours
    assert "Agreement between reviewers" in page


def test_a_reviewer_sees_only_their_own_line(client_for, reviewer, history):
    response = client_for(reviewer).get(reverse(STATS))

    assert response.status_code == 200
    page = response.content.decode()
    assert 'data-reviewer="reviewer"' in page
    assert "reviewer2" not in page and "lead" not in page.split('id="reviewer-lines"')[1].split("</table>")[0]
    assert "Agreement between reviewers" not in page


def test_a_reviewer_without_decisions_is_told_so(client_for, second_reviewer, labels):
    page = client_for(second_reviewer).get(reverse(STATS)).content.decode()
    assert "No decisions on the review screen yet." in page


def test_an_uploader_may_not_see_the_statistics(client_for, uploader, history):
    assert client_for(uploader).get(reverse(STATS)).status_code == 403


def test_signed_out_goes_to_the_login(client):
    response = client.get(reverse(STATS))
    assert response.status_code == 302 and reverse("admin:login") in response["Location"]


def _many_reviews(count, *, reviewers, labels, image_factory):
    images = [image_factory() for _ in range(4)]
    names = list(labels.values())
    rows = []
    for n in range(count):
        order = ("", "gold", "overlap", "adjudication")[n % 4]
        rows.append(
            Review(
                image=images[n % 4], reviewer=reviewers[n % len(reviewers)], label=names[n % len(names)],
                agreed=n % 3 == 0, seconds_spent=float(n % 17), queue_order=order,
                created_at=timezone.now() - dt.timedelta(hours=n % 200),
            )
        )
    Review.objects.bulk_create(rows)


# Session, user, permissions (2), and the page's ten: the same for 12 reviews as for 400.
QUERY_BOUND = 14


@pytest.mark.parametrize("count", [12, 400])
def test_the_page_makes_the_same_queries_with_few_or_many_reviews(
    count, client_for, lead, reviewer, second_reviewer, labels, image_factory, django_assert_max_num_queries
):
    """The bound is the count measured with 12 reviews; 400 must not need one more."""
    _many_reviews(count, reviewers=[lead, reviewer, second_reviewer], labels=labels, image_factory=image_factory)
    client = client_for(lead)
    client.get(reverse(STATS))  # sessions and permissions cached as for any later page
    with django_assert_max_num_queries(QUERY_BOUND):
        response = client.get(reverse(STATS))
    assert response.status_code == 200
    lines = {line.username: line for line in reviewer_lines()}
    assert sum(line.week for line in lines.values()) == sum(1 for n in range(count) if n % 200 < 168)
    assert all(not math.isnan(line.median_seconds) for line in lines.values())

