"""8. Auto-accept: does it keep its promise, how much does it accept, how fast is a run.

Known truth: a population of confidences and right/wrong outcomes from
``predictions.statistics.simulation.population_miscalibrated`` (most images near
certain, a quarter spread out; P(right) = confidence², an over-confident model whose
raw confidence is not calibrated).

- Promise and coverage: ``acceptance_simulate`` draws many independent uniformly
  random audit samples of 300 from the population, lets the chooser the service uses
  pick a threshold each time (2% at 95%), and measures the realised error among ALL
  the population's images at or above it. Targets (issue 19): within the target in at
  least 95% of runs; accepted at least 70% of what an oracle that knew every label
  would accept at the same target.
- A run end to end, on a file SQLite database: the population as Image + Prediction
  rows, 300 reviews drawn by the review screen's "Audit (random)" order
  (review_claim_next) and decided with the true label (review_decide), then
  ``auto_accept_run_start`` in the foreground (the command's path): the audit sample
  read, the threshold chosen, every open prediction counted, and each accepted image
  written as a Review through the label operation. Target: <= 10 s at 100,000
  predictions. The realised error of that one run and the undo time are in the notes.
"""

from __future__ import annotations

import sys

from bench.common import Report, Row, active_model_version, cli, django_project, log, staff_user, stopwatch

SIZES = {
    "small": {"predictions": 10_000, "runs": 200},
    "medium": {"predictions": 100_000, "runs": 1_000},
    "large": {"predictions": 300_000, "runs": 2_000},
}
MAX_ERROR, CONFIDENCE, AUDIT_SAMPLE = 0.02, 0.95, 300
# The audit is the review screen's own random draw. Unseeded, one run in seven or so found
# no threshold (the simulation's no_threshold_rate), accepted nothing, and had nothing to
# time or undo: seeded, every run of the bench measures the same draw, one that accepts.
AUDIT_SEED = 3
WITHIN_TARGET, ORACLE_SHARE_TARGET, SECONDS_TARGET = 0.95, 0.70, 10.0


def add_arguments(parser) -> None:
    parser.add_argument("--predictions", type=int, help="population size (rows of the end-to-end run)")
    parser.add_argument("--runs", type=int, help="random audit samples drawn for the promise and coverage rows")


def run(options) -> Report:
    from predictions.statistics.simulation import acceptance_simulate, population_miscalibrated

    confidences, correct = population_miscalibrated(size=options.predictions, seed=19)
    with stopwatch() as watch:
        simulation = acceptance_simulate(
            confidences=confidences, correct=correct, sample_size=AUDIT_SAMPLE, runs=options.runs,
            max_error=MAX_ERROR, confidence=CONFIDENCE, seed=7,
        )  # fmt: skip
    log(f"{options.runs} simulated audits in {watch.seconds:.1f} s: {simulation}")
    end_to_end = _run_end_to_end(confidences, correct)
    log(f"end to end: {end_to_end}")

    within = 1.0 - simulation.exceedance_rate
    report = Report(metrics={"predictions": options.predictions, "simulation": vars(simulation), **end_to_end})
    report.rows += [
        Row.versus("8 auto-accept", f"runs with realised error <= {MAX_ERROR:.0%} ({options.runs:,} audits of "
                   f"{AUDIT_SAMPLE}, {CONFIDENCE:.0%} confidence)", ours=within, reference=WITHIN_TARGET,
                   unit="of runs", target_ratio=1.0),
        Row.versus("8 auto-accept", f"images accepted / oracle's at {MAX_ERROR:.0%} (mean over runs)",
                   ours=simulation.mean_accepted, reference=simulation.oracle_accepted, unit="images",
                   target_ratio=ORACLE_SHARE_TARGET),
        Row.versus("8 auto-accept", f"run over {options.predictions:,} predictions (audit {AUDIT_SAMPLE})",
                   ours=end_to_end["run_seconds"], reference=SECONDS_TARGET, unit="s", target_ratio=1.0,
                   at_most=True),
    ]  # fmt: skip
    report.notes.append(
        f"auto-accept: no threshold in {simulation.no_threshold_rate:.1%} of simulated audits; end to end, "
        f"threshold {end_to_end['threshold']:.4f}, bound {end_to_end['bound']:.2%}, accepted {end_to_end['accepted']:,} "
        f"(oracle {simulation.oracle_accepted:,}) with realised error {end_to_end['realised_error']:.2%}; "
        f"preview {end_to_end['preview_seconds']:.2f} s, undo {end_to_end['undo_seconds']:.2f} s, "
        f"300 audit decisions through the screen's services {end_to_end['audit_seconds']:.1f} s."
    )
    return report


def _run_end_to_end(confidences, correct) -> dict:
    with django_project():
        import random

        import numpy as np

        from predictions.selectors.queue import QueueFilters, QueueOrder
        from predictions.services.auto_accept import auto_accept_preview, auto_accept_run_start, auto_accept_run_undo
        from predictions.services.reviews import review_claim_next, review_decide

        lead = staff_user("lead", "Leads")
        reviewer = staff_user("reviewer", "Reviewers")
        version = active_model_version(None)
        with stopwatch() as watch:
            truth = _population_rows(version, confidences, correct)
        log(f"{len(truth):,} images and predictions in {watch.seconds:.1f} s")

        random.seed(AUDIT_SEED)  # review_queue_sample_ids draws with the module's generator
        with stopwatch() as audit_watch:
            audit = QueueFilters(order=QueueOrder.AUDIT)
            for _ in range(AUDIT_SAMPLE):
                (prediction,) = review_claim_next(reviewer=reviewer, filters=audit, count=1)
                review_decide(reviewer=reviewer, image_id=prediction.image_id, label_id=truth[prediction.image_id],
                              prediction_id=prediction.pk, queue_order=QueueOrder.AUDIT)  # fmt: skip
        with stopwatch() as preview_watch:
            auto_accept_preview(model_version=version, max_error=MAX_ERROR, confidence=CONFIDENCE)
        with stopwatch() as run_watch:
            run = auto_accept_run_start(
                model_version=version, max_error=MAX_ERROR, confidence=CONFIDENCE, user=lead, background=False
            )
        if not run.accepted:
            raise RuntimeError(f"the audit drawn with seed {AUDIT_SEED} gave no threshold: pick another AUDIT_SEED")
        wrong = _accepted_wrong(run, truth)
        with stopwatch() as undo_watch:
            auto_accept_run_undo(run=run, user=lead)
        return {
            "run_seconds": run_watch.seconds,
            "preview_seconds": preview_watch.seconds,
            "undo_seconds": undo_watch.seconds,
            "audit_seconds": audit_watch.seconds,
            "threshold": float(run.threshold or np.nan),
            "bound": float(run.bound or np.nan),
            "accepted": run.accepted,
            "realised_error": wrong / run.accepted if run.accepted else 0.0,
        }


def _population_rows(version, confidences, correct) -> dict[int, int]:
    """One Image (no file) and Prediction per population member; image id -> true label id."""
    import hashlib
    import random

    from django.db import transaction

    from images.models import Image
    from predictions.models import Label, Prediction

    labels = list(Label.objects.filter(name__in=version.class_names).order_by("order"))
    rng = random.Random(19)
    truth: dict[int, int] = {}
    step = 5000
    with transaction.atomic():
        for offset in range(0, len(confidences), step):
            members = range(offset, min(offset + step, len(confidences)))
            images = Image.objects.bulk_create(
                Image(file=f"images/{index}.jpg", sha256=hashlib.sha256(str(index).encode()).hexdigest(),
                      original_name=f"photo_{index:07d}.jpg", width=1600, height=1200, format="JPEG",
                      size_bytes=330_000)
                for index in members
            )  # fmt: skip
            predictions = []
            for image, index in zip(images, members):
                predicted = rng.randrange(len(labels))
                true = predicted if correct[index] else rng.choice([i for i in range(len(labels)) if i != predicted])
                truth[image.pk] = labels[true].pk
                confidence = float(confidences[index])
                predictions.append(Prediction(
                    image=image, model_version=version, label=labels[predicted], confidence=confidence,
                    margin=confidence / 2, probabilities=[confidence if i == predicted else (1 - confidence) / 4
                                                          for i in range(len(labels))],
                ))  # fmt: skip
            Prediction.objects.bulk_create(predictions)
    return truth


def _accepted_wrong(run, truth: dict[int, int]) -> int:
    from predictions.models import Review

    accepted = Review.objects.filter(operation=run.operation).values_list("image_id", "label_id")
    return sum(truth[image_id] != label_id for image_id, label_id in accepted.iterator(chunk_size=10_000))


if __name__ == "__main__":
    cli(sys.modules[__name__])
