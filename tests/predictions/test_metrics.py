"""Metrics of a model version against reviewed labels, and comparing two versions."""

import pytest

from predictions.charts import calibration_svg, confidence_histogram_svg, confusion_matrix_svg
from predictions.models import Label
from predictions.selectors.metrics import (
    OTHER,
    classification_report,
    version_metrics,
    versions_compare,
)

# Three classes, eight reviewed images in the label space plus one reviewed as "d",
# a label the model does not know. Worked out by hand:
#
#   reviewed \ predicted   a  b  c
#   a                      2  1  0     support 3
#   b                      1  2  0     support 3
#   c                      1  0  1     support 2
#   predicted              4  3  1
#
#   accuracy  = 5 / 8
#   a: P 2/4, R 2/3, F1 2*2/(2*2+2+1) = 4/7
#   b: P 2/3, R 2/3, F1 4/6 = 2/3
#   c: P 1/1, R 1/2, F1 2/(2+0+1) = 2/3
#   macro-F1  = (4/7 + 2/3 + 2/3) / 3 = 40/63
#
# Confidence bins (right-open tenths, 1.0 in the last): 0.4 [0.45 wrong],
# 0.5 [0.55 wrong, 0.58 wrong], 0.6 [0.65 right], 0.8 [0.85 right],
# 0.9 [0.95, 0.92, 1.0 all right]
#   ECE = 3/8*|1-0.9567| + 1/8*0.15 + 1/8*0.35 + 2/8*0.565 + 1/8*0.45 = 0.27625
SAMPLES = [
    # reviewed, predicted, confidence
    ("a", "a", 0.95),
    ("a", "a", 0.85),
    ("a", "b", 0.55),
    ("b", "a", 0.45),
    ("b", "b", 0.92),
    ("b", "b", 0.65),
    ("c", "c", 1.0),
    ("c", "a", 0.58),
    ("d", "b", 0.50),
]


@pytest.fixture
def report():
    y_true, y_pred, confidence = zip(*SAMPLES)
    return classification_report(y_true=y_true, y_pred=y_pred, confidence=confidence, class_names=["a", "b", "c"])


def test_accuracy_and_macro_f1_match_the_hand_computed_example(report):
    assert report.sample_count == 8
    assert report.correct == 5
    assert report.accuracy == pytest.approx(5 / 8)
    assert report.macro_f1 == pytest.approx(40 / 63)


def test_per_class_precision_recall_support(report):
    by_name = {row.name: row for row in report.per_class}
    assert (by_name["a"].precision, by_name["a"].recall, by_name["a"].f1) == pytest.approx((2 / 4, 2 / 3, 4 / 7))
    assert (by_name["b"].precision, by_name["b"].recall, by_name["b"].f1) == pytest.approx((2 / 3, 2 / 3, 2 / 3))
    assert (by_name["c"].precision, by_name["c"].recall, by_name["c"].f1) == pytest.approx((1.0, 1 / 2, 2 / 3))
    assert [row.support for row in report.per_class] == [3, 3, 2]
    assert [row.predicted for row in report.per_class] == [4, 3, 1]


def test_confusion_matrix_has_reviewed_rows_and_an_other_row(report):
    assert report.confusion_rows == ["a", "b", "c", OTHER]
    assert report.confusion == [[2, 1, 0], [1, 2, 0], [1, 0, 1], [0, 1, 0]]
    assert report.other_count == 1
    assert report.other_predicted_as == {"b": 1}


def test_calibration_bins_and_expected_calibration_error(report):
    counts = {round(b.low, 1): (b.count, b.correct) for b in report.bins if b.count}
    assert counts == {0.4: (1, 0), 0.5: (2, 0), 0.6: (1, 1), 0.8: (1, 1), 0.9: (3, 3)}
    top = report.bins[-1]
    assert top.mean_confidence == pytest.approx((0.95 + 0.92 + 1.0) / 3)
    assert top.accuracy == 1.0
    assert report.expected_calibration_error == pytest.approx(0.27625)


def test_classes_never_seen_nor_predicted_are_left_out_of_macro_f1():
    report = classification_report(
        y_true=["a", "a", "b"], y_pred=["a", "b", "b"], confidence=[0.9, 0.6, 0.7], class_names=["a", "b", "c"]
    )
    c = report.per_class[2]
    assert (c.precision, c.recall, c.f1, c.support) == (None, None, None, 0)
    # a: F1 2/(2+0+1) = 2/3; b: F1 2/(2+1+0) = 2/3
    assert report.macro_f1 == pytest.approx(2 / 3)
    assert report.other_count == 0
    assert report.confusion_rows == ["a", "b", "c"]


def test_no_samples_gives_an_empty_report():
    report = classification_report(y_true=[], y_pred=[], confidence=[], class_names=["a", "b"])
    assert report.is_empty
    assert report.accuracy is None and report.macro_f1 is None


def test_charts_are_svg_with_the_class_names_escaped(report):
    svg = confusion_matrix_svg(matrix=report.confusion, row_labels=["<b>", "b", "c", OTHER], col_labels=["a", "b", "c"])
    assert svg.startswith("<svg") and "&lt;b&gt;" in svg and "<b>" not in svg
    assert confidence_histogram_svg(bins=report.bins).startswith("<svg")
    assert calibration_svg(bins=report.bins).count("<rect") == 5  # one bar per non-empty bin


# --- from the database ----------------------------------------------------------------


@pytest.fixture
def versions(model_version_factory):
    return model_version_factory("va", active=True), model_version_factory("vb", active=False)


def test_version_metrics_reads_reviewed_images_the_version_predicted(versions, image_factory, prediction_factory):
    va, vb = versions
    circle, square = Label.objects.get(name="circle"), Label.objects.get(name="square")
    Label.objects.create(name="unknown-thing", order=50)
    right = image_factory(final_label=circle)
    wrong = image_factory(final_label=square)
    other = image_factory(final_label=Label.objects.get(name="unknown-thing"))
    unreviewed = image_factory()
    prediction_factory(image=right, model_version=va, label="circle", confidence=0.9)
    prediction_factory(image=wrong, model_version=va, label="circle", confidence=0.7)
    prediction_factory(image=other, model_version=va, label="star", confidence=0.4)
    prediction_factory(image=unreviewed, model_version=va, label="cross", confidence=0.8)
    prediction_factory(image=wrong, model_version=vb, label="square", confidence=0.8)

    report = version_metrics(version=va)

    assert (report.sample_count, report.correct, report.other_count) == (2, 1, 1)
    assert report.accuracy == pytest.approx(0.5)
    assert report.other_predicted_as == {"star": 1}
    assert version_metrics(version=vb).accuracy == 1.0


def test_compare_counts_images_predicted_by_both_and_lists_those_that_differ(
    versions, image_factory, prediction_factory
):
    va, vb = versions
    agree, differ_1, only_a, differ_2 = (image_factory() for _ in range(4))
    prediction_factory(image=agree, model_version=va, label="circle")
    prediction_factory(image=agree, model_version=vb, label="circle")
    prediction_factory(image=differ_1, model_version=va, label="circle", confidence=0.9)
    prediction_factory(image=differ_1, model_version=vb, label="square", confidence=0.6)
    prediction_factory(image=only_a, model_version=va, label="star")
    prediction_factory(image=differ_2, model_version=va, label="square")
    prediction_factory(image=differ_2, model_version=vb, label="triangle")

    comparison = versions_compare(a=va, b=vb)

    assert (comparison.both_predicted, comparison.differ) == (3, 2)
    rows = {image.pk: image for image in comparison.differing_images}
    assert set(rows) == {differ_1.pk, differ_2.pk}
    first = rows[differ_1.pk]
    assert (first.label_a, first.confidence_a, first.label_b, first.confidence_b) == ("circle", 0.9, "square", 0.6)


def test_metrics_and_compare_pages_render_for_a_lead(versions, image_factory, prediction_factory, lead, client_for):
    va, vb = versions
    image = image_factory(final_label=Label.objects.get(name="circle"))
    prediction_factory(image=image, model_version=va, label="circle", confidence=0.9)
    prediction_factory(image=image, model_version=vb, label="square", confidence=0.6)
    client = client_for(lead)

    metrics = client.get(f"/admin/predictions/modelversion/{va.pk}/metrics/")
    assert metrics.status_code == 200
    assert b"<svg" in metrics.content and b"Macro-F1" in metrics.content

    compare = client.get(f"/admin/predictions/modelversion/compare/{va.pk}/{vb.pk}/")
    assert compare.status_code == 200
    assert image.original_name.encode() in compare.content
    assert compare.context["comparison"].differ == 1


def test_metrics_page_of_a_version_without_reviewed_predictions(active_model_version, lead, client_for):
    response = client_for(lead).get(f"/admin/predictions/modelversion/{active_model_version.pk}/metrics/")
    assert response.status_code == 200
    assert "No reviewed image has a prediction from this version yet." in response.content.decode()


def test_compare_action_needs_exactly_two_versions(versions, lead, client_for):
    va, vb = versions
    client = client_for(lead)
    url = "/admin/predictions/modelversion/"
    response = client.post(url, {"action": "compare_two_versions", "_selected_action": [va.pk, vb.pk]})
    assert response.status_code == 302
    # The older version is "a".
    assert response["Location"] == f"/admin/predictions/modelversion/compare/{va.pk}/{vb.pk}/"
    refused = client.post(url, {"action": "compare_two_versions", "_selected_action": [va.pk]}, follow=True)
    assert "Select exactly two versions" in refused.content.decode()


@pytest.mark.parametrize("page", ["", "{pk}/metrics/", "compare/{pk}/{pk}/", "{pk}/train/", "{pk}/change/", "add/"])
def test_reviewers_cannot_see_model_version_pages(page, active_model_version, reviewer, client_for):
    url = "/admin/predictions/modelversion/" + page.format(pk=active_model_version.pk)
    assert client_for(reviewer).get(url).status_code == 403


# --- held-out images: a version is not scored on what it was trained on -----------------


@pytest.fixture
def trained_on(versions, image_factory, prediction_factory):
    """va was trained on two reviewed images it gets right; it gets the one held-out image wrong."""
    va, vb = versions
    circle, square = Label.objects.get(name="circle"), Label.objects.get(name="square")
    trained = [image_factory(final_label=circle), image_factory(final_label=circle)]
    held_out = image_factory(final_label=square)
    for image in trained:
        prediction_factory(image=image, model_version=va, label="circle", confidence=0.99)
        prediction_factory(image=image, model_version=vb, label="square", confidence=0.6)
    prediction_factory(image=held_out, model_version=va, label="circle", confidence=0.8)
    prediction_factory(image=held_out, model_version=vb, label="circle", confidence=0.7)
    va.trained_images.set(trained)
    return {"trained": trained, "held_out": held_out}


def test_metrics_leave_out_the_training_images_by_default_and_show_them_apart(versions, trained_on):
    from predictions.selectors.metrics import ImageScope, version_metrics_left_out

    va, vb = versions

    held_out = version_metrics(version=va)
    training = version_metrics(version=va, scope=ImageScope.TRAINING)

    assert (held_out.sample_count, held_out.accuracy) == (1, 0.0)
    assert version_metrics_left_out(version=va) == 2
    assert (training.sample_count, training.accuracy) == (2, 1.0)
    assert version_metrics_left_out(version=va, scope=ImageScope.TRAINING) == 1
    # A version trained elsewhere has nothing to leave out.
    assert version_metrics(version=vb).sample_count == 3 and version_metrics_left_out(version=vb) == 0


def test_compare_leaves_out_images_either_version_was_trained_on(versions, trained_on):
    from predictions.selectors.metrics import ImageScope

    va, vb = versions

    comparison = versions_compare(a=va, b=vb)
    training = versions_compare(a=va, b=vb, scope=ImageScope.TRAINING)

    assert (comparison.both_predicted, comparison.differ, comparison.left_out) == (1, 0, 2)
    assert (training.both_predicted, training.differ, training.left_out) == (2, 2, 1)
    assert {image.pk for image in training.differing_images} == {image.pk for image in trained_on["trained"]}


def test_metrics_and_compare_pages_say_what_they_left_out_and_link_to_it(versions, trained_on, lead, client_for):
    va, vb = versions
    client = client_for(lead)

    page = client.get(f"/admin/predictions/modelversion/{va.pk}/metrics/")
    training = client.get(f"/admin/predictions/modelversion/{va.pk}/metrics/?images=training")
    compare = client.get(f"/admin/predictions/modelversion/compare/{va.pk}/{vb.pk}/")

    text = " ".join(page.content.decode().split())
    assert page.context["report"].sample_count == 1
    assert "<strong>2</strong> reviewed images it was trained on left out." in text
    assert 'href="?images=training"' in text
    assert training.context["report"].sample_count == 2
    assert "only those it was trained on" in " ".join(training.content.decode().split())
    assert compare.context["comparison"].left_out == 2 and 'href="?images=training"' in compare.content.decode()
