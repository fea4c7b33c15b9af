"""The label audit in the admin (list, "Run audit now", flagged page) and the suspect_score export."""

import pytest
from django.urls import reverse

from predictions.statistics.label_errors import simulate_noisy_labels
from tests.predictions.test_label_audit import labelled_images

pytestmark = pytest.mark.django_db


@pytest.fixture
def labelled(stub_model_version_factory, reviewer):
    version = stub_model_version_factory("admin-v1")
    data = simulate_noisy_labels(n=200, seed=9)
    return labelled_images(version=version, reviewer=reviewer, given=data.given, pred_probs=data.pred_probs)


def test_a_lead_runs_an_audit_from_the_list_and_sees_its_flagged_labels(
    labelled, lead, client_for, django_capture_on_commit_callbacks
):
    from predictions.models import LabelAudit
    from predictions.selectors.label_audit import label_suspicions_flagged

    client = client_for(lead)
    page = client.get(reverse("admin:predictions_labelaudit_changelist"))
    assert page.status_code == 200 and b"Run audit now" in page.content

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("admin:predictions_labelaudit_run"), follow=True)

    assert response.status_code == 200 and b"queued" in response.content
    audit = LabelAudit.objects.get()
    assert (audit.status, audit.reason, audit.created_by) == (LabelAudit.Status.DONE, "on demand", lead)
    listing = client.get(reverse("admin:predictions_labelaudit_changelist")).content.decode()
    assert f"{audit.flagged} flagged" in listing and "200 / 200" in listing

    flagged_page = client.get(reverse("admin:predictions_labelaudit_flagged", args=[audit.pk]))
    assert flagged_page.status_code == 200
    content = flagged_page.content.decode()
    names = [s.image.original_name for s in label_suspicions_flagged(audit=audit)]
    positions = [content.index(name) for name in names]
    assert positions == sorted(positions)  # most doubtful first
    first = label_suspicions_flagged(audit=audit).first()
    assert f"{first.score:.4f}" in content and "Suspected label errors" in content
    detail = client.get(reverse("admin:predictions_labelaudit_change", args=[audit.pk]))
    assert detail.status_code == 200 and audit.method.encode() in detail.content


def test_a_second_run_while_one_is_queued_is_refused_with_a_message(labelled, lead, client_for):
    from predictions.models import LabelAudit

    client = client_for(lead)
    client.post(reverse("admin:predictions_labelaudit_run"))
    response = client.post(reverse("admin:predictions_labelaudit_run"), follow=True)
    assert b"already queued" in response.content
    assert LabelAudit.objects.count() == 1


def test_only_leads_run_audits(labelled, reviewer, client_for):
    from predictions.models import LabelAudit

    client = client_for(reviewer)
    assert client.post(reverse("admin:predictions_labelaudit_run")).status_code == 403
    assert client.get(reverse("admin:predictions_labelaudit_changelist")).status_code == 403
    assert not LabelAudit.objects.exists()


def test_the_export_with_suspect_scores(labelled, image_factory, second_reviewer):
    from images.models import Image
    from predictions.models import Label, LabelSuspicion
    from predictions.resources import EXPORT_RESOURCES, ImageLabelResource, ImageLabelWithSuspectScoreResource
    from predictions.services.label_audit import label_audit_run_now
    from predictions.services.reviews import review_submit

    unlabelled = image_factory()
    before = ImageLabelWithSuspectScoreResource().export(Image.objects.order_by("pk"))
    assert set(before["suspect_score"]) == {""}  # no audit yet

    audit = label_audit_run_now()
    changed = labelled[0]
    other = Label.objects.exclude(pk=changed.final_label_id).first()
    review_submit(image=changed, reviewer=second_reviewer, label=other)

    dataset = ImageLabelWithSuspectScoreResource().export(Image.objects.order_by("pk"))
    assert dataset.headers[-1] == "suspect_score"
    cells = dict(zip(dataset["id"], dataset["suspect_score"], strict=True))
    scores = dict(LabelSuspicion.objects.filter(audit=audit).values_list("image_id", "score"))
    assert cells[unlabelled.pk] == ""
    assert cells[changed.pk] == ""  # the label the audit scored is gone
    for image in labelled[1:]:
        assert cells[image.pk] == pytest.approx(scores[image.pk])
    assert EXPORT_RESOURCES["labels_with_suspect_scores"] is ImageLabelWithSuspectScoreResource
    assert "suspect_score" not in ImageLabelResource().export(Image.objects.all()).headers
