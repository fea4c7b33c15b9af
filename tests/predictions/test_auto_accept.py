"""Auto-accept: the audit order's sample, the service, its records and undo, the command, the admin pages.

The statistics themselves (the bound, the scan, the guarantee by simulation) are
tested in tests/predictions/statistics/test_acceptance.py. Here a target of 10%
at 95% keeps samples small: with no error, 29 audited images are the least it
allows (ln(1/0.05) / -ln(0.9)).
"""

import io
import itertools
import json
import random
from collections import Counter
from urllib.parse import urlencode

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.urls import reverse
from scipy.stats import chisquare

from images.models import Image
from predictions.models import AutoAcceptRun, Label, LabelOperation, Prediction, Review
from predictions.selectors.auto_accept import audit_sample, auto_accept_run_progress
from predictions.selectors.queue import QueueFilters, QueueOrder, review_queue, review_queue_head
from predictions.services.auto_accept import auto_accept_preview, auto_accept_run_start, auto_accept_run_undo
from predictions.services.operations import LabelDecision, label_operation_apply
from predictions.services.reviews import ReviewConflict, review_claim_next, review_decide, review_submit
from predictions.statistics.acceptance import sample_size_required

pytestmark = pytest.mark.django_db

MAX_ERROR, CONFIDENCE = 0.10, 0.95
FIRST_POSSIBLE = 29  # sample_size_required(errors=0, max_error=0.10, confidence=0.95)
_numbers = itertools.count(1)


def make_predictions(version, confidences, *, label="circle", **image_fields) -> list[Prediction]:
    """One image (no file) and one prediction of `version` per confidence, in bulk."""
    labels = {row.name: row for row in Label.objects.all()}
    numbers = [next(_numbers) for _ in confidences]
    images = Image.objects.bulk_create(
        Image(
            file=f"images/test/{number}.jpg", sha256=f"{number:064x}", original_name=f"img-{number:05d}.jpg",
            width=8, height=8, format="JPEG", size_bytes=1, **image_fields,
        )
        for number in numbers
    )
    index = version.class_names.index(label)
    return Prediction.objects.bulk_create(
        Prediction(
            image=image, model_version=version, label=labels[label], confidence=confidence, margin=confidence / 2,
            probabilities=[confidence if i == index else (1 - confidence) / 4 for i in range(5)],
        )
        for image, confidence in zip(images, confidences, strict=True)
    )


def audit(predictions, reviewer, *, wrong=(), order=QueueOrder.AUDIT) -> None:
    """Review each prediction as the audit order would record it; those in `wrong` get another label."""
    other = Label.objects.get(name="square")
    wrong_ids = {p.pk for p in wrong}
    for prediction in predictions:
        review_submit(
            image=prediction.image, reviewer=reviewer, prediction=prediction,
            label=other if prediction.pk in wrong_ids else prediction.label, queue_order=order,
        )


@pytest.fixture
def version(stub_model_version_factory):
    return stub_model_version_factory("v1")


@pytest.fixture
def audited(version, reviewer):
    """40 audit reviews, all right, confidences 0.90 to 0.99: the threshold comes out at 0.90."""
    predictions = make_predictions(version, [0.90 + 0.09 * i / 39 for i in range(40)])
    audit(predictions, reviewer)
    return predictions


def start(version, user, **kwargs) -> AutoAcceptRun:
    return auto_accept_run_start(model_version=version, max_error=MAX_ERROR, confidence=CONFIDENCE, user=user, **kwargs)


# --- the service -------------------------------------------------------------------------------


def test_a_run_accepts_only_open_predictions_at_or_above_the_threshold_and_records_itself(
    version, audited, reviewer, lead
):
    above = make_predictions(version, [0.95] * 5)
    at = make_predictions(version, [0.90])
    below = make_predictions(version, [0.5] * 3)
    reviewed = make_predictions(version, [0.97])
    review_submit(image=reviewed[0].image, reviewer=reviewer, label=Label.objects.get(name="star"))
    gold = make_predictions(version, [0.97], is_gold=True)
    deciding = make_predictions(version, [0.97], label_source="overlap")  # waiting for more reviewers

    run = start(version, lead)

    assert run.status == AutoAcceptRun.Status.DONE
    assert run.threshold == pytest.approx(0.90)
    assert run.bound == pytest.approx(1 - 0.05 ** (1 / 40))  # Clopper–Pearson with no error among 40
    assert (run.audit_sample, run.accepted, run.total, run.created_by) == (40, 6, 6, lead)
    assert (run.max_error, run.confidence, run.model_version) == (MAX_ERROR, CONFIDENCE, version)
    assert run.operation.kind == LabelOperation.Kind.AUTO_ACCEPT
    accepted = {p.image_id for p in above + at}
    reviews = Review.objects.filter(operation=run.operation)
    assert {r.image_id for r in reviews} == accepted
    assert all(r.source == Review.Source.AUTO and r.reviewer == lead and r.agreed for r in reviews)
    images = {image.pk: image for image in Image.objects.all()}
    assert all(images[pk].label_source == Review.Source.AUTO and images[pk].final_label.name == "circle" for pk in accepted)
    assert all(images[p.image_id].final_label is None for p in below + gold + deciding)
    assert images[reviewed[0].image_id].final_label.name == "star"
    assert images[reviewed[0].image_id].label_source == Review.Source.SCREEN


def test_undo_takes_back_the_whole_run_and_keeps_a_decision_made_since(version, audited, reviewer, lead):
    accepted = make_predictions(version, [0.95] * 4)
    run = start(version, lead)
    assert run.accepted == 4
    # A reviewer re-reviews one auto-accepted image: a normal review that supersedes it.
    review_decide(reviewer=reviewer, image_id=accepted[0].image_id, label_id=Label.objects.get(name="cross").pk,
                  model_version=version, include_auto=True)

    assert auto_accept_run_undo(run=run, user=lead) == 3  # reopened: the re-reviewed one keeps its label

    images = Image.objects.in_bulk([p.image_id for p in accepted])
    assert images[accepted[0].image_id].final_label.name == "cross"
    assert all(images[p.image_id].final_label is None and images[p.image_id].label_source == "" for p in accepted[1:])
    run.operation.refresh_from_db()
    assert run.operation.undone_by == lead and run.operation.undone_at is not None
    with pytest.raises(ValidationError):
        auto_accept_run_undo(run=run, user=lead)


def test_too_small_a_sample_says_how_many_more_reviews_it_needs_and_accepts_nothing(version, reviewer, lead):
    audit(make_predictions(version, [0.95] * 10), reviewer)
    make_predictions(version, [0.99] * 3)
    assert sample_size_required(errors=0, max_error=MAX_ERROR, confidence=CONFIDENCE) == FIRST_POSSIBLE

    preview = auto_accept_preview(model_version=version, max_error=MAX_ERROR, confidence=CONFIDENCE)
    assert preview.threshold is None and preview.would_accept == 0
    assert preview.decision.needed == FIRST_POSSIBLE - 10

    run = start(version, lead)
    assert (run.threshold, run.needed, run.accepted, run.operation) == (None, FIRST_POSSIBLE - 10, 0, None)
    assert not Review.objects.filter(source=Review.Source.AUTO).exists()


def test_the_sample_is_only_live_audit_reviews_of_this_version(
    version, audited, stub_model_version_factory, reviewer, lead
):
    # Biased or non-random decisions on other images of the version: none of them count.
    audit(make_predictions(version, [0.3] * 5), reviewer, order=QueueOrder.UNCERTAINTY)
    for prediction in make_predictions(version, [0.3] * 3):
        review_submit(image=prediction.image, reviewer=reviewer, label=prediction.label, prediction=prediction,
                      source=Review.Source.GRID, queue_order=QueueOrder.AUDIT)
    undone = make_predictions(version, [0.3])
    audit(undone, reviewer, wrong=undone)
    Review.objects.filter(image=undone[0].image).update(undone_at="2024-01-01T00:00:00Z")
    # Another version's audit, all wrong: says nothing about this one.
    other = stub_model_version_factory("v2", active=False)
    others = make_predictions(other, [0.99] * 30)
    audit(others, reviewer, wrong=others)

    sample = audit_sample(model_version=version)
    assert (sample.size, sample.errors) == (40, 0)
    assert sorted(sample.confidences) == pytest.approx(sorted(p.confidence for p in audited))
    assert audit_sample(model_version=other).errors == 30


def test_a_run_labels_its_own_version_only_and_a_newly_activated_version_starts_without_one(
    version, audited, stub_model_version_factory, lead
):
    mine = make_predictions(version, [0.95] * 3)
    start(version, lead)
    newer = stub_model_version_factory("v2")  # activated after the run
    fresh = make_predictions(newer, [0.999] * 4)
    # The new version's predictions of images the old one left open are not accepted by the old run's threshold.
    also_open = make_predictions(version, [0.2] * 2)
    Prediction.objects.bulk_create(
        Prediction(image=p.image, model_version=newer, label=p.label, confidence=0.999, margin=0.9,
                   probabilities=p.probabilities) for p in also_open
    )

    assert all(Image.objects.get(pk=p.image_id).final_label is None for p in fresh + also_open)
    assert all(Image.objects.get(pk=p.image_id).label_source == Review.Source.AUTO for p in mine)
    preview = auto_accept_preview(model_version=newer, max_error=MAX_ERROR, confidence=CONFIDENCE)
    assert (preview.decision.sample_size, preview.threshold, preview.decision.needed) == (0, None, FIRST_POSSIBLE)
    assert not AutoAcceptRun.objects.filter(model_version=newer).exists()


def test_a_large_run_goes_through_the_task_queue_with_progress(
    version, audited, lead, settings, django_capture_on_commit_callbacks
):
    from django_q.models import Task

    settings.AUTO_ACCEPT_SYNC_MAX = 3
    make_predictions(version, [0.95] * 5)

    # tests/settings.py runs django-q2 in sync mode: the task runs inline once the transaction commits.
    with django_capture_on_commit_callbacks(execute=True):
        run = start(version, lead)
        assert run.status == AutoAcceptRun.Status.QUEUED and run.total == 5

    run.refresh_from_db()
    assert (run.status, run.accepted, run.total) == (AutoAcceptRun.Status.DONE, 5, 5)
    task = Task.objects.get(name=f"auto-accept-{run.pk}")
    assert task.success and task.func == "predictions.tasks.auto_accept_run"
    assert task.result == {"run": run.pk, "accepted": 5}
    assert auto_accept_run_progress(run=run) == 5
    # A second delivery of the task does nothing.
    from predictions.tasks import auto_accept_run

    assert auto_accept_run(run.pk) == {"run": run.pk, "accepted": 5}
    assert Review.objects.filter(source=Review.Source.AUTO).count() == 5


def test_a_run_that_fails_says_why(version, audited):
    run = AutoAcceptRun.objects.create(
        model_version=version, max_error=MAX_ERROR, confidence=CONFIDENCE, threshold=0.9, created_by=None
    )
    from predictions.services.auto_accept import auto_accept_run_execute

    with pytest.raises(ValidationError):
        auto_accept_run_execute(run_id=run.pk)
    run.refresh_from_db()
    assert run.status == AutoAcceptRun.Status.FAILED and "no longer exists" in run.error
    assert run.finished_at is not None


def test_end_to_end_the_audit_order_the_reviews_and_the_run_keep_the_promise(version, reviewer, lead):
    """1,000 images with known true labels from H4's over-confident population (10% wrong
    overall: accepting everything would break the promise); 150 drawn by the audit order and
    reviewed with the truth; then a run at 5% / 95%.

    The run must be the chooser's decision on exactly those 150 reviews, applied to every
    other open image at or above its threshold. The realised error among the images it
    accepted (the unaudited ones) exceeds 5% for 4.2% of random audits of this population
    (2,000 simulated; 1.8% for the error over all images above the threshold: a sample
    that is 15% of the population leaves the rest a little worse than the whole), so this
    check fails for about 1 seed in 24; the seeds here are fixed.
    """
    from predictions.statistics.acceptance import acceptance_threshold_choose
    from predictions.statistics.simulation import population_miscalibrated

    confidences, correct = population_miscalibrated(size=1000, seed=3)
    predictions = make_predictions(version, confidences.tolist())
    wrong_label = Label.objects.get(name="square").pk
    truth = {p.image_id: p.label_id if right else wrong_label for p, right in zip(predictions, correct, strict=True)}
    random.seed(3)  # the audit order's draws
    audit_filters = QueueFilters(order=QueueOrder.AUDIT)
    audited = []
    for _ in range(150):
        (served,) = review_claim_next(reviewer=reviewer, filters=audit_filters, count=1)
        review_decide(reviewer=reviewer, image_id=served.image_id, label_id=truth[served.image_id],
                      prediction_id=served.pk, queue_order=QueueOrder.AUDIT)
        audited.append(served)

    run = auto_accept_run_start(model_version=version, max_error=0.05, confidence=0.95, user=lead)

    expected = acceptance_threshold_choose(
        confidences=[p.confidence for p in audited], correct=[truth[p.image_id] == p.label_id for p in audited],
        max_error=0.05, confidence=0.95,
    )
    assert (run.threshold, run.bound, run.audit_sample) == (expected.threshold, expected.bound, 150)
    audited_ids = {p.image_id for p in audited}
    above = {p.image_id for p in predictions if p.confidence >= run.threshold and p.image_id not in audited_ids}
    accepted = dict(Review.objects.filter(operation=run.operation).values_list("image_id", "label_id"))
    assert set(accepted) == above and len(above) > 500
    assert sum(truth[image_id] != label_id for image_id, label_id in accepted.items()) <= 0.05 * len(accepted)


def test_progress_of_a_running_run_counts_the_reviews_written_so_far(version, lead):
    images = make_predictions(version, [0.95] * 3)
    run = AutoAcceptRun.objects.create(
        model_version=version, max_error=MAX_ERROR, confidence=CONFIDENCE, threshold=0.9, total=3,
        status=AutoAcceptRun.Status.RUNNING, created_by=lead,
    )
    label_operation_apply(
        kind=LabelOperation.Kind.AUTO_ACCEPT, user=lead, source=Review.Source.AUTO,
        decisions=[LabelDecision(image_id=p.image_id, label_id=p.label_id) for p in images[:2]],
        params={"auto_accept_run": run.pk},
    )
    assert auto_accept_run_progress(run=run) == 2


def test_the_label_export_says_label_source_auto(version, audited, lead):
    from predictions.resources import ImageLabelResource

    accepted = make_predictions(version, [0.95])
    start(version, lead)

    dataset = ImageLabelResource().export(Image.objects.all())
    rows = {row["id"]: row for row in dataset.dict}
    assert "label_source" in dataset.headers
    assert rows[accepted[0].image_id]["label_source"] == "auto"
    assert rows[audited[0].image_id]["label_source"] == "screen"


# --- the queue: "Include auto-accepted" ----------------------------------------------------------


def test_auto_accepted_images_leave_the_queue_unless_asked_and_a_review_supersedes_them(
    version, audited, reviewer, lead
):
    accepted = make_predictions(version, [0.95] * 2)
    start(version, lead)

    def queued(**filters):
        queue = review_queue(reviewer=reviewer, filters=QueueFilters(**filters), model_version=version)
        return {p.image_id for p in queue}

    assert not queued() & {p.image_id for p in accepted}
    assert queued(include_auto=True) >= {p.image_id for p in accepted}
    with pytest.raises(ReviewConflict):
        review_decide(reviewer=reviewer, image_id=accepted[0].image_id, label_id=None, model_version=version)

    claimed = review_claim_next(reviewer=reviewer, filters=QueueFilters(include_auto=True), count=5)
    assert {p.image_id for p in claimed} == {p.image_id for p in accepted}
    review = review_decide(reviewer=reviewer, image_id=accepted[0].image_id, label_id=None, model_version=version,
                           include_auto=True)

    image = Image.objects.get(pk=accepted[0].image_id)
    assert (review.source, image.label_source, image.review_count) == (Review.Source.SCREEN, "screen", 2)
    assert not queued(include_auto=True) & {accepted[0].image_id}


# --- the audit order ---------------------------------------------------------------------------------


@pytest.fixture
def sparse_queue(version, stub_model_version_factory, reviewer):
    """8 open images of the version among reviewed ones and another version's rows, margins far from even."""
    other = stub_model_version_factory("other", active=False)
    margins = [0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.95]  # the last sits after a wide gap
    open_ids = []
    for margin in margins:
        make_predictions(other, [0.5] * 3)
        reviewed = make_predictions(version, [0.5] * 2)
        Image.objects.filter(pk__in=[p.image_id for p in reviewed]).update(final_label=reviewed[0].label)
        prediction = make_predictions(version, [0.5])[0]
        Prediction.objects.filter(pk=prediction.pk).update(margin=margin)
        open_ids.append(prediction.pk)
    queue = review_queue(reviewer=reviewer, filters=QueueFilters(order=QueueOrder.AUDIT), model_version=version)
    assert sorted(queue.values_list("pk", flat=True)) == sorted(open_ids)
    return queue, open_ids


def _uniformity_p_value(picks: Counter, ids: list[int]) -> float:
    return chisquare([picks[pk] for pk in ids]).pvalue


@pytest.mark.parametrize("rounds", [2, 0], ids=["rejection", "fallback"])
def test_the_audit_draw_is_uniform_over_open_images(sparse_queue, monkeypatch, rounds):
    """800 single draws from 8 open images, and 300 draws of 3, each image's count tested by chi-square.

    Under a uniform draw each check fails with probability 0.001 (its level) for a
    random seed; the seed is fixed, so the outcome is too. `rounds` 0 forces the
    fallback that reads the queue's ids.
    """
    import predictions.selectors.queue as queue_module

    monkeypatch.setattr(queue_module, "SAMPLE_ROUNDS", rounds)
    queue, ids = sparse_queue
    rng = random.Random(19)

    singles = Counter(queue_module.review_queue_sample_ids(queue, limit=1, rng=rng)[0] for _ in range(800))
    assert _uniformity_p_value(singles, ids) > 0.001

    triples = [queue_module.review_queue_sample_ids(queue, limit=3, rng=rng) for _ in range(300)]
    assert all(len(set(triple)) == 3 for triple in triples)  # without replacement
    assert _uniformity_p_value(Counter(pk for triple in triples for pk in triple), ids) > 0.001


def test_the_uniformity_check_sees_the_random_orders_bias(sparse_queue, version):
    """The same chi-square on the random order's random-margin start gives p < 1e-12 on 300
    draws (the image after the wide gap in margins comes up ~88% of the time): the check
    above has the power to catch a draw that is not uniform."""
    _, ids = sparse_queue
    queue = review_queue(reviewer=None, filters=QueueFilters(order=QueueOrder.RANDOM), model_version=version)
    rng = random.Random(19)
    picks = Counter(review_queue_head(queue, limit=1, random_start=rng.random())[0].pk for _ in range(300))
    assert _uniformity_p_value(picks, ids) < 1e-12


def test_the_audit_order_ignores_the_other_filters(version, reviewer):
    circles = make_predictions(version, [0.5] * 3, label="circle")
    stars = make_predictions(version, [0.5] * 3, label="star")
    filters = QueueFilters(order=QueueOrder.AUDIT, label_id=circles[0].label_id, confidence_min=0.9)

    claimed = review_claim_next(reviewer=reviewer, filters=filters, count=10)

    assert {p.pk for p in claimed} == {p.pk for p in circles + stars}


def screen_url(name: str, **query) -> str:
    base = reverse(f"admin:predictions_review_{name}")
    return f"{base}?{urlencode(query)}" if query else base


def test_the_screen_records_audit_reviews_only_for_images_the_audit_served(client_for, reviewer, prediction_factory):
    import re

    for n in range(4):
        prediction_factory(confidence=0.5 + n / 10, name=f"s{n}.jpg")
    client = client_for(reviewer)

    # Uncertainty order: recorded as such.
    page = client.get(screen_url("screen")).content.decode()
    first = json.loads(re.search(r'id="review-config" type="application/json">(.*?)</script>', page, re.S).group(1))
    held = [item["image"]["id"] for item in first["items"]]
    decided = client.post(screen_url("decide"), {"image": held[0], "label": "confirm"})
    assert decided.status_code == 200
    assert Review.objects.get(pk=decided.json()["review"]).queue_order == QueueOrder.UNCERTAINTY
    client.post(screen_url("skip"), {"image": held[1]})

    # Audit order: the images it serves are recorded as audit reviews.
    served = client.post(screen_url("next", order="audit"), {"count": 2}).json()["items"]
    assert served
    audit_review = client.post(screen_url("decide", order="audit"), {"image": served[0]["image"]["id"], "label": "confirm"})
    assert Review.objects.get(pk=audit_review.json()["review"]).queue_order == QueueOrder.AUDIT

    # An undo in audit order brings back the uncertainty order's image: deciding it again is no audit review.
    undone = client.post(screen_url("undo", order="audit"), {"review": decided.json()["review"]})
    assert undone.json()["item"]["image"]["id"] == held[0]
    again = client.post(screen_url("decide", order="audit"), {"image": held[0], "label": "confirm"})
    assert Review.objects.get(pk=again.json()["review"]).queue_order == ""
    assert audit_sample(model_version=Prediction.objects.first().model_version).size == 1


def test_the_screen_re_reviews_auto_accepted_images_when_asked(client_for, version, audited, reviewer, lead):
    accepted = make_predictions(version, [0.95])
    start(version, lead)
    client = client_for(reviewer)
    image_id = accepted[0].image_id

    refused = client.post(screen_url("decide"), {"image": image_id, "label": "confirm"})
    assert refused.status_code == 409

    served = client.post(screen_url("next", include_auto="on", order="confidence"), {"count": 1}).json()["items"]
    assert [item["image"]["id"] for item in served] == [image_id]
    decided = client.post(screen_url("decide", include_auto="on"), {"image": image_id, "label": "confirm"})
    assert decided.status_code == 200
    assert Image.objects.get(pk=image_id).label_source == Review.Source.SCREEN


# --- the command ---------------------------------------------------------------------------------------


def run_command(*args) -> dict:
    out = io.StringIO()
    call_command("auto_accept", *args, stdout=out)
    return json.loads(out.getvalue())


def test_the_command_prints_one_json_object(version, audited, lead):
    make_predictions(version, [0.95] * 3)

    dry = run_command("--max-error", "0.1", "--confidence", "0.95", "--dry-run", "--json")
    assert dry == {
        "model_version": "v1", "threshold": pytest.approx(0.90), "bound": pytest.approx(1 - 0.05 ** (1 / 40)),
        "audit_sample": 40, "accepted": 3, "dry_run": True,
    }
    assert not AutoAcceptRun.objects.exists()

    done = run_command("--max-error", "0.1", "--model-version", "v1", "--user", "lead", "--json")
    assert (done["accepted"], done["dry_run"]) == (3, False)
    assert AutoAcceptRun.objects.get().created_by == lead

    short = run_command("--max-error", "0.01", "--dry-run", "--json")
    assert short["threshold"] is None and short["accepted"] == 0
    assert short["needed"] == sample_size_required(errors=0, max_error=0.01, confidence=0.95) - 40


def test_the_command_says_a_too_small_sample_plainly(version, reviewer):
    audit(make_predictions(version, [0.95] * 5), reviewer)
    out = io.StringIO()
    call_command("auto_accept", "--max-error", "0.1", "--dry-run", stdout=out)
    assert f"about {FIRST_POSSIBLE - 5} more reviews" in out.getvalue()


# --- the admin pages -----------------------------------------------------------------------------------


def page_url(version) -> str:
    return reverse("admin:predictions_modelversion_auto_accept", args=[version.pk])


def test_a_lead_previews_then_confirms_a_run(client_for, version, audited, lead):
    make_predictions(version, [0.95] * 3)
    client = client_for(lead)

    page = client.get(page_url(version), {"max_error": "0.1", "confidence": "0.95"})
    assert page.status_code == 200
    html = page.content.decode()
    assert "40 images of this version" in html and "Clopper–Pearson" in html and "<svg" in html
    assert 'value="Accept 3 images"' in html
    assert reverse("admin:predictions_modelversion_auto_accept", args=[version.pk]) in client.get(
        reverse("admin:predictions_modelversion_change", args=[version.pk])
    ).content.decode()

    threshold = page.context["preview"].threshold
    response = client.post(page_url(version), {"max_error": "0.1", "confidence": "0.95", "threshold": repr(threshold)})
    run = AutoAcceptRun.objects.get()
    assert response.status_code == 302 and response.url == reverse("admin:predictions_autoacceptrun_change", args=[run.pk])
    assert (run.accepted, run.created_by) == (3, lead)

    listing = client.get(reverse("admin:predictions_autoacceptrun_changelist"))
    assert listing.status_code == 200 and "0.9000" in listing.content.decode()
    detail = client.get(response.url)
    assert "Undo this run" in detail.content.decode()
    undone = client.post(reverse("admin:predictions_autoacceptrun_undo", args=[run.pk]))
    assert undone.status_code == 302
    assert not Review.objects.filter(source=Review.Source.AUTO, undone_at__isnull=True).exists()


def test_the_confirmation_says_what_the_run_left_alone_and_why(client_for, version, audited, lead, reviewer):
    from datetime import timedelta

    from django.utils import timezone

    make_predictions(version, [0.95] * 3)
    make_predictions(version, [0.96], claimed_by=reviewer, claimed_until=timezone.now() + timedelta(minutes=5))
    client = client_for(lead)
    page = client.get(page_url(version), {"max_error": "0.1", "confidence": "0.95"})
    assert 'value="Accept 4 images"' in page.content.decode()  # the preview counts the image on a screen

    response = client.post(
        page_url(version),
        {"max_error": "0.1", "confidence": "0.95", "threshold": repr(page.context["preview"].threshold)},
        follow=True,
    )

    assert "accepted 3 of 4 images; left alone: 1 open on someone&#x27;s review screen." in response.content.decode()


def test_a_confirmation_for_another_threshold_than_the_current_one_runs_nothing(client_for, version, audited, lead):
    make_predictions(version, [0.95] * 3)
    response = client_for(lead).post(page_url(version), {"max_error": "0.1", "confidence": "0.95", "threshold": "0.97"})
    assert response.status_code == 200
    assert "has changed since the preview" in response.content.decode()
    assert not AutoAcceptRun.objects.exists()


def test_the_page_says_how_many_more_audit_reviews_are_needed(client_for, version, lead):
    html = client_for(lead).get(page_url(version)).content.decode()
    assert "too small" in html and "149 more" in html  # 2% at 95%, nothing audited yet: ln(20) / -ln(0.98)
    assert "Accept " not in html


def test_reviewers_may_not_auto_accept(client_for, version, audited, reviewer, lead):
    client = client_for(reviewer)
    assert client.get(page_url(version)).status_code == 403
    assert client.post(page_url(version), {"max_error": "0.1", "confidence": "0.95", "threshold": "0.9"}).status_code == 403
    run = start(version, lead)
    assert client.post(reverse("admin:predictions_autoacceptrun_undo", args=[run.pk])).status_code == 403
