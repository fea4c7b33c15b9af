"""chunk_plan: how one delivery of a chunk counts, without a database.

Each case is a delivery of a chunk of job 7 given what earlier deliveries (of
this job or of job 3) recorded; the database side (chunk_record) is exercised by
test_jobs.py and test_sweep.py through real chunks.
"""

from predictions.services.chunk_record import ChunkOutcome, ChunkPlan, chunk_plan

JOB, OTHER_JOB = 7, 3


def plan(*, image_ids=(1, 2, 3), existing_ids=None, predicted=(), failures=None, prior_predictions=None,
         prior_failures=None) -> ChunkPlan:  # fmt: skip
    return chunk_plan(
        job_id=JOB,
        image_ids=list(image_ids),
        existing_ids=set(image_ids if existing_ids is None else existing_ids),
        prior_predictions=prior_predictions or {},
        prior_failures=prior_failures or {},
        outcome=ChunkOutcome(predictions={pk: object() for pk in predicted}, failures=failures or {}),
    )


def test_a_first_delivery_writes_and_counts_every_outcome():
    result = plan(image_ids=(1, 2, 3, 4), existing_ids=(1, 2, 3), predicted=(2, 1), failures={3: "c.jpg: broken"})
    assert result == ChunkPlan(predict=[1, 2], fail={3: "c.jpg: broken"}, done=2, failed=1, vanished=1)
    assert result.moves_counters


def test_a_redelivered_chunk_writes_and_counts_nothing():
    """Its images carry this job's mark, so the image deleted meanwhile was taken off the total before."""
    result = plan(
        image_ids=(1, 2, 3),
        existing_ids=(1, 2),
        prior_predictions={1: JOB},
        prior_failures={2: JOB},
        failures={2: "b.jpg: broken"},
    )
    assert result == ChunkPlan(predict=[], fail={2: "b.jpg: broken"}, done=0, failed=0, vanished=0)
    assert not result.moves_counters


def test_images_another_job_predicted_count_as_done_once():
    first = plan(prior_predictions={1: OTHER_JOB, 2: None}, predicted=(3,))
    assert (first.predict, first.done) == ([3], 3)
    # The same chunk again: now marked by this job, the other job's images are not counted twice.
    again = plan(prior_predictions={1: OTHER_JOB, 2: None, 3: JOB})
    assert (again.predict, again.done, again.vanished) == ([], 0, 0)


def test_a_failure_this_job_counted_and_now_predicted_moves_from_failed_to_done():
    result = plan(image_ids=(1,), prior_failures={1: JOB}, predicted=(1,))
    assert (result.predict, result.done, result.failed) == ([1], 1, -1)


def test_a_failure_recorded_by_another_job_counts_for_this_one():
    result = plan(image_ids=(1,), prior_failures={1: OTHER_JOB}, failures={1: "a.jpg: broken"})
    assert (result.fail, result.failed) == ({1: "a.jpg: broken"}, 1)


def test_an_image_without_an_outcome_is_left_for_a_later_delivery():
    result = plan(image_ids=(1, 2), predicted=(1,))
    assert (result.predict, result.fail, result.done, result.failed) == ([1], {}, 1, 0)
