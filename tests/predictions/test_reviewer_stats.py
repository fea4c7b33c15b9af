"""The reviewer statistics page and its selectors: who sees what, what is counted, and a
query count that does not grow with the number of reviews."""

import datetime as dt
import math

import pytest
from django.urls import reverse
from django.utils import timezone

from images.models import Image
from predictions.models import Label, Review
from predictions.selectors.reviewer_agreement import overlap_agreement
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


def test_a_reviewers_own_gold_accuracy_counts_up_to_the_start_of_the_day(
    client_for, reviewer, lead, labels, image_factory
):
    """Reloading after each decision must not tell which one was a gold check; a Lead sees them all."""
    square = labels["square"]
    earlier, today = image_factory(), image_factory()
    Image.objects.filter(pk__in=[earlier.pk, today.pk]).update(final_label=square, is_gold=True)
    record(reviewer, earlier, square, days_ago=1, queue_order="gold")
    record(reviewer, today, square, queue_order="gold")

    def gold_of(client):
        return client.get(reverse(STATS)).context["lines"][0].gold.n

    assert gold_of(client_for(reviewer)) == 1
    assert gold_of(client_for(lead)) == 2
    assert "up to the start of" in client_for(reviewer).get(reverse(STATS)).content.decode()


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


# Session, user, permissions (2), and the page's eleven: the same for 12 reviews as for 400.
QUERY_BOUND = 15


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


# --- what is counted, against a reference read row by row ---------------------------


def test_overturned_counts_live_adjudications_against_the_label_now(
    reviewer, second_reviewer, lead, labels, image_factory
):
    """An undone adjudication adjudicates nothing; a later live one does. Overturned: the
    image's label now differs from the decision, or the image has no label now."""
    circle, square, star, cross = (labels[name] for name in ("circle", "square", "star", "cross"))
    a, b, c, d = (image_factory() for _ in range(4))
    for image, mine, theirs in ((a, square, star), (b, circle, square), (c, circle, cross), (d, star, square)):
        record(reviewer, image, mine, queue_order="overlap")
        record(second_reviewer, image, theirs, queue_order="overlap")
    record(reviewer, a, star, queue_order="overlap", undone_at=timezone.now())  # undone: not counted
    record(lead, a, star, queue_order="adjudication")
    record(lead, b, circle, queue_order="adjudication", undone_at=timezone.now())
    record(lead, c, square, queue_order="adjudication", undone_at=timezone.now())
    record(lead, c, circle, queue_order="adjudication")
    record(lead, d, star, queue_order="adjudication")
    Image.objects.filter(pk=a.pk).update(final_label=star)
    Image.objects.filter(pk=b.pk).update(label_source="adjudication")  # waiting again
    Image.objects.filter(pk=c.pk).update(final_label=circle)
    Image.objects.filter(pk=d.pk).update(final_label=None)  # its label taken back since

    lines = {line.username: line for line in reviewer_lines()}

    assert (lines["reviewer"].overturned.successes, lines["reviewer"].overturned.n) == (2, 3)  # a, d of a, c, d
    assert (lines["reviewer2"].overturned.successes, lines["reviewer2"].overturned.n) == (2, 3)  # c, d
    assert lines["lead"].overturned.n == 0


def test_gold_counts_images_gold_now_against_their_label_now(reviewer, lead, labels, image_factory):
    circle, square, star = labels["circle"], labels["square"], labels["star"]
    kept, relabelled, withdrawn, undone = (image_factory() for _ in range(4))
    for image in (kept, relabelled, withdrawn, undone):
        record(reviewer, image, square, queue_order="gold", days_ago=2)
    record(reviewer, undone, circle, queue_order="gold", undone_at=timezone.now())
    Image.objects.filter(pk__in=[kept.pk, undone.pk]).update(is_gold=True, final_label=square)
    Image.objects.filter(pk=relabelled.pk).update(is_gold=True, final_label=star)  # the Lead corrected it
    Image.objects.filter(pk=withdrawn.pk).update(is_gold=False, final_label=square)

    mine = reviewer_lines()[0]

    assert (mine.gold.successes, mine.gold.n) == (2, 3)  # kept and undone's live check right, relabelled wrong
    assert mine.week == 4 and mine.overturned.n == 0


def _reference(now):
    """The page's numbers computed from every Review row in Python, as the selectors' docstrings
    define them: live screen decisions; gold checks on images gold now against their label now;
    overlap decisions on images with a live adjudication, overturned when the label now differs."""
    from collections import defaultdict
    from statistics import median

    from predictions.selectors.dashboard import start_of_today

    rows = list(Review.objects.select_related("image", "reviewer"))
    live = [r for r in rows if r.undone_at is None and r.source == Review.Source.SCREEN]
    adjudicated_images = {r.image_id for r in rows if r.undone_at is None and r.queue_order == "adjudication"}
    week, today = now - dt.timedelta(days=7), start_of_today()
    lines = {}
    for reviewer_id in {r.reviewer_id for r in live}:
        mine = [r for r in live if r.reviewer_id == reviewer_id]
        recent = [r for r in mine if r.created_at >= week]
        timed = [r.seconds_spent for r in recent if r.seconds_spent is not None]
        gold = [r for r in mine if r.queue_order == "gold" and r.image.is_gold]
        adjudicated = [r for r in mine if r.queue_order == "overlap" and r.image_id in adjudicated_images]
        lines[mine[0].reviewer.username] = {
            "today": sum(r.created_at >= today for r in mine),
            "week": len(recent),
            "timed": len(timed),
            "median": median(timed) if timed else None,
            "seconds": sum(timed),
            "agreement": (sum(r.agreed is True for r in mine), sum(r.agreed is not None for r in mine)),
            "gold": (sum(r.label_id == r.image.final_label_id for r in gold), len(gold)),
            "overturned": (
                sum(r.image.final_label_id is None or r.label_id != r.image.final_label_id for r in adjudicated),
                len(adjudicated),
            ),
        }
    overlap = defaultdict(list)
    for r in live:
        if r.queue_order == "overlap":
            overlap[r.image_id].append(r)
    pairs = defaultdict(list)
    for decisions in overlap.values():
        for a in decisions:
            for b in decisions:
                if b.reviewer_id > a.reviewer_id:
                    pairs[(a.reviewer.username, b.reviewer.username)].append((a.label_id, b.label_id))
    units = {image: [r.label_id for r in decisions] for image, decisions in overlap.items() if len(decisions) >= 2}
    return lines, pairs, units


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("reviews", [400, 45])
def test_the_numbers_match_a_row_by_row_reference(
    seed, reviews, reviewer, second_reviewer, lead, labels, django_user_model, monkeypatch
):
    """A random history with every case the queries distinguish: undone decisions (adjudications
    too), bulk ones, agreed unknown, untimed ones, gold images unmarked or relabelled, images
    without a label, overlap images with several decisions (one reviewer's more than once).
    45 reviews on 30 images leave most overlap images with one or two decisions (counted in
    the database), 400 with three and more (counted from their rows)."""
    import random

    from predictions.selectors import reviewer_stats
    from predictions.statistics.agreement import cohen_kappa, krippendorff_alpha_nominal, krippendorff_alpha_per_class

    rng = random.Random(seed)
    third = django_user_model.objects.create_user(username="reviewer3")
    people = [reviewer, second_reviewer, lead, third]
    names = list(labels.values())
    images = Image.objects.bulk_create(
        Image(
            file=f"images/{n}.jpg", thumbnail=f"thumbnails/{n}.jpg", sha256=f"{seed}-{n:062d}",
            original_name=f"{n}.jpg", width=1, height=1, format="JPEG", size_bytes=1,
            is_gold=rng.random() < 0.3, final_label=rng.choice([None, *names]),
            label_source=rng.choice(["", "screen", "overlap", "adjudication"]),
        )  # fmt: skip
        for n in range(30)
    )
    now = timezone.now()
    Review.objects.bulk_create(
        Review(
            image=rng.choice(images), reviewer=rng.choice(people), label=rng.choice(names),
            agreed=rng.choice([None, True, False]), seconds_spent=rng.choice([None, round(rng.uniform(1, 60), 2)]),
            source=rng.choice([Review.Source.SCREEN] * 6 + [Review.Source.GRID, Review.Source.IMPORT]),
            queue_order=rng.choice(["", "uncertainty", "gold", "overlap", "overlap", "overlap", "adjudication"]),
            created_at=now - dt.timedelta(hours=rng.uniform(0, 24 * 12)),
            undone_at=now if rng.random() < 0.15 else None,
        )  # fmt: skip
        for _ in range(reviews)
    )
    lines, pairs, units = _reference(now)

    for batch in (reviewer_stats.MEDIAN_BATCH, 1):  # the medians' batches: one query, or one per reviewer
        monkeypatch.setattr(reviewer_stats, "MEDIAN_BATCH", batch)
        got = {line.username: line for line in reviewer_lines(now=now)}
        assert set(got) == set(lines)
        for name, want in lines.items():
            line = got[name]
            assert (line.today, line.week, line.timed) == (want["today"], want["week"], want["timed"]), name
            assert line.median_seconds == pytest.approx(want["median"]), name
            pace = pytest.approx(3600 * want["timed"] / want["seconds"]) if want["seconds"] else None
            assert line.items_per_hour == pace, name
            assert (line.model_agreement.successes, line.model_agreement.n) == want["agreement"], name
            assert (line.gold.successes, line.gold.n) == want["gold"], name
            assert (line.overturned.successes, line.overturned.n) == want["overturned"], name
        assert [line.week for line in got.values()] == sorted((line.week for line in got.values()), reverse=True)

    from predictions.selectors import reviewer_agreement

    assert reviewer_agreement._decision_sets(packable=False) == reviewer_agreement._decision_sets()  # rows = SQL
    agreement = overlap_agreement()
    assert {(p.first, p.second): (p.images, p.agreed) for p in agreement.pairs} == {
        key: (len(cells), sum(a == b for a, b in cells)) for key, cells in pairs.items()
    }
    for pair in agreement.pairs:
        cells = pairs[(pair.first, pair.second)]
        want = cohen_kappa([a for a, _ in cells], [b for _, b in cells])
        assert pair.kappa == pytest.approx(want, nan_ok=True)
    assert (agreement.images, agreement.decisions) == (len(units), sum(map(len, units.values())))
    assert agreement.alpha == pytest.approx(krippendorff_alpha_nominal(units), nan_ok=True)
    label_names = {label.pk: label.name for label in names}
    assert agreement.alpha_per_class == pytest.approx(
        {label_names[k]: v for k, v in krippendorff_alpha_per_class(units).items()}, nan_ok=True
    )
    live = [r for r in Review.objects.all() if r.undone_at is None and r.source == Review.Source.SCREEN]
    assert team_pace(now=now).week_decisions == sum(
        r.created_at >= now - dt.timedelta(days=7) and r.queue_order != "gold" for r in live
    )
    assert sum(count for _, count in decisions_per_day(now=now, days=14)) == sum(
        timezone.localdate(r.created_at) > timezone.localdate(now) - dt.timedelta(days=14) for r in live
    )


def test_agreement_holds_the_largest_ids_its_packing_allows(reviewer, labels, image_factory, django_user_model):
    """Two decisions of an image are counted in the database packed as label × 2**31 + reviewer:
    a reviewer id at the top of an AutoField and a label id of 2**32 - 1 still come back whole."""
    from predictions.selectors.reviewer_agreement import PACK

    assert django_user_model._meta.pk.get_internal_type() == "AutoField"  # reviewer ids below 2**31 = PACK
    top = django_user_model.objects.create_user(pk=PACK - 1, username="top")
    odd = Label.objects.create(pk=2**32 - 1, name="odd")
    circle, square = labels["circle"], labels["square"]
    for mine, theirs in ((odd, odd), (odd, circle), (circle, circle), (square, square)):
        image = image_factory()
        record(reviewer, image, mine, queue_order="overlap")
        record(top, image, theirs, queue_order="overlap")

    agreement = overlap_agreement()

    [pair] = agreement.pairs
    assert (pair.first, pair.second, pair.images, pair.agreed) == (reviewer.username, "top", 4, 3)
    assert (agreement.images, agreement.decisions) == (4, 8)
    assert set(agreement.alpha_per_class) == {"odd", "circle", "square"}

    # A label id past what fits: the images are read as their decisions instead, with the same result.
    Label.objects.create(pk=2**32, name="beyond")
    assert overlap_agreement() == agreement
