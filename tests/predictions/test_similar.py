"""More like this and label similar: cosine similarity of stored embeddings, the cached matrix, the pages.

Embeddings are written by hand (no model): each test knows the true cosines.
"""

from __future__ import annotations

import numpy as np
import pytest

from ml.features import embedding_to_bytes

pytestmark = pytest.mark.django_db

DIM = 32


@pytest.fixture(autouse=True)
def fresh_similar_cache(monkeypatch):
    """An empty cache, checked against the database on every query (not every few seconds)."""
    from predictions.selectors import similar

    monkeypatch.setattr(similar, "RECHECK_SECONDS", 0)
    similar.clear_cache()
    yield
    similar.clear_cache()


@pytest.fixture
def version(stub_model_version_factory):
    return stub_model_version_factory()


@pytest.fixture
def embedded(prediction_factory, version):
    """embedded(vector, **prediction kwargs) -> Prediction of the active version with that embedding."""

    def create(vector, **kwargs):
        prediction = prediction_factory(model_version=version, **kwargs)
        prediction.embedding = embedding_to_bytes(np.asarray(vector, dtype=np.float32))
        prediction.save(update_fields=["embedding"])
        return prediction

    return create


def at_cosine(cosine: float, axis: int, scale: float = 1.0) -> np.ndarray:
    """A vector whose cosine with e0 is ``cosine`` (its other part along ``axis``)."""
    vector = np.zeros(DIM, dtype=np.float32)
    vector[0], vector[axis] = cosine, np.sqrt(1 - cosine**2)
    return vector * scale


def test_the_twelve_most_similar_by_cosine_most_similar_first(embedded):
    from predictions.selectors.similar import similar_images

    query = embedded(at_cosine(1.0, 1, scale=3.0))
    cosines = [0.2, 0.99, 0.5, 0.9, 0.7, 0.95, 0.3, 0.85, 0.6, 0.8, 0.4, 0.75, 0.65, 0.1, -0.5]
    # Lengths differ (scale): cosine, not the dot product, decides.
    others = [embedded(at_cosine(c, 1 + i % (DIM - 1), scale=0.5 + i)) for i, c in enumerate(cosines)]

    shown = similar_images(image_id=query.image_id)

    expected = sorted(zip(cosines, [p.image_id for p in others]), reverse=True)[:12]
    assert [item.image_id for item in shown] == [pk for _, pk in expected]
    assert [item.similarity for item in shown] == pytest.approx([c for c, _ in expected], abs=0.01)
    assert query.image_id not in [item.image_id for item in shown]


def test_random_embeddings_rank_as_exact_cosines_do(embedded):
    """300 random 32-value vectors: the int8 matrix gives each cosine within 0.01 of float64's."""
    from predictions.selectors.similar import similar_images

    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((300, DIM)).astype(np.float32)
    predictions = [embedded(vector) for vector in vectors]
    stored = vectors.astype(np.float16).astype(np.float64)
    unit = stored / np.linalg.norm(stored, axis=1, keepdims=True)

    shown = similar_images(image_id=predictions[0].image_id, limit=300)

    exact = {p.image_id: float(unit[0] @ unit[i]) for i, p in enumerate(predictions)}
    assert len(shown) == 299
    assert max(abs(item.similarity - exact[item.image_id]) for item in shown) < 0.01
    best = max((pk for pk in exact if pk != predictions[0].image_id), key=exact.get)
    assert shown[0].image_id == best


def test_labels_shown_are_the_reviewed_ones_else_the_prediction_and_never_a_gold_label(embedded):
    from predictions.models import Label
    from predictions.selectors.similar import similar_images

    square = Label.objects.get(name="square")
    query = embedded(at_cosine(1.0, 1))
    reviewed = embedded(at_cosine(0.9, 2), label="circle", final_label=square)
    predicted = embedded(at_cosine(0.8, 3), label="star")
    gold = embedded(at_cosine(0.7, 4), label="cross", final_label=square, is_gold=True)

    shown = {item.image_id: item for item in similar_images(image_id=query.image_id)}

    assert (shown[reviewed.image_id].label, shown[reviewed.image_id].reviewed) == ("square", True)
    assert (shown[predicted.image_id].label, shown[predicted.image_id].reviewed) == ("star", False)
    assert (shown[gold.image_id].label, shown[gold.image_id].reviewed) == ("cross", False)


def test_an_image_without_an_embedding_has_no_similar_images(embedded, prediction_factory, version):
    from predictions.selectors.similar import similar_images

    embedded(at_cosine(1.0, 1))
    bare = prediction_factory(model_version=version)

    assert similar_images(image_id=bare.image_id) == []


def test_the_cached_matrix_follows_new_deleted_and_filled_predictions(embedded, prediction_factory, version):
    from predictions.models import PredictionJob
    from predictions.selectors import similar
    from predictions.selectors.similar import similar_images

    query = embedded(at_cosine(1.0, 1))
    first = embedded(at_cosine(0.5, 2))
    assert [item.image_id for item in similar_images(image_id=query.image_id)] == [first.image_id]
    loaded = similar._cached[version.pk]

    new = embedded(at_cosine(0.9, 3))  # an upload being predicted: appended
    assert [item.image_id for item in similar_images(image_id=query.image_id)] == [new.image_id, first.image_id]
    assert similar._cached[version.pk].codes is loaded.codes, "appended in place, not loaded again"

    first.image.delete()
    assert [item.image_id for item in similar_images(image_id=query.image_id)] == [new.image_id]

    bare = prediction_factory(model_version=version)
    assert len(similar_images(image_id=query.image_id)) == 1
    bare.embedding = embedding_to_bytes(at_cosine(0.95, 4))  # filled by an embeddings job
    bare.save(update_fields=["embedding"])
    PredictionJob.objects.create(model_version=version, reason="embeddings", total=1, done=1)
    assert [item.image_id for item in similar_images(image_id=query.image_id)] == [bare.image_id, new.image_id]
    assert similar.similar_vectors_nbytes() == 3 * (DIM + 4 + 8)


def test_the_database_is_asked_again_only_every_few_seconds(embedded, monkeypatch):
    from predictions.selectors import similar

    query = embedded(at_cosine(1.0, 1))
    embedded(at_cosine(0.5, 2))
    monkeypatch.setattr(similar, "RECHECK_SECONDS", 3600)
    assert len(similar.similar_images(image_id=query.image_id)) == 1
    new = embedded(at_cosine(0.9, 3))
    assert len(similar.similar_images(image_id=query.image_id)) == 1, "the cached matrix, not checked yet"
    monkeypatch.setattr(similar, "RECHECK_SECONDS", 0)
    assert similar.similar_images(image_id=query.image_id)[0].image_id == new.image_id


def test_only_the_active_versions_embeddings_count(embedded, prediction_factory, stub_model_version_factory):
    from predictions.selectors.similar import similar_images

    query = embedded(at_cosine(1.0, 1))
    other_version = stub_model_version_factory("old", active=False)
    stale = prediction_factory(model_version=other_version)
    stale.embedding = embedding_to_bytes(at_cosine(0.99, 2))
    stale.save(update_fields=["embedding"])

    assert similar_images(image_id=query.image_id) == []


# --- the pages -------------------------------------------------------------------------------------


def test_the_image_page_shows_more_like_this_and_the_label_similar_link(client_for, reviewer, uploader, embedded):
    from predictions.models import Label

    query = embedded(at_cosine(1.0, 1), final_label=Label.objects.get(name="square"))
    other = embedded(at_cosine(0.9, 2), name="look-alike.jpg")

    page = client_for(reviewer).get(f"/admin/images/image/{query.image_id}/change/").content.decode()
    assert "More like this" in page and f"/admin/images/image/{other.image_id}/change/" in page
    assert f"/admin/predictions/review/similar/{query.image_id}/label/" in page

    page = client_for(uploader).get(f"/admin/images/image/{query.image_id}/change/").content.decode()
    assert "More like this" in page and "Label similar images" not in page, "uploaders see, but do not label"


def test_the_review_screen_asks_for_similar_images_as_json(client_for, reviewer, uploader, embedded):
    from predictions.models import Prediction
    from predictions.selectors.review_items import review_items

    query = embedded(at_cosine(1.0, 1))
    other = embedded(at_cosine(0.9, 2), label="star")
    item = review_items(
        predictions=[Prediction.objects.select_related("image", "label").get(pk=query.pk)],
        model_version=query.model_version,
    )[0]
    url = item["image"]["similar_url"]

    response = client_for(reviewer).get(url)

    assert response.status_code == 200
    [shown] = response.json()["items"]
    assert (shown["id"], shown["label"], shown["reviewed"]) == (other.image_id, "star", False)
    assert shown["similarity"] == pytest.approx(0.9, abs=0.01)
    assert shown["change_url"] == f"/admin/images/image/{other.image_id}/change/"
    assert client_for(uploader).get(url).status_code == 403


@pytest.fixture
def neighbourhood(embedded, reviewer):
    """A reviewed image and its neighbours: two close unreviewed, one close reviewed, one far."""
    from predictions.models import Label

    square, circle = Label.objects.get(name="square"), Label.objects.get(name="circle")
    source = embedded(at_cosine(1.0, 1), final_label=square, name="source.jpg")
    close = [embedded(at_cosine(c, 2 + i), label="star") for i, c in enumerate((0.97, 0.93))]
    reviewed = embedded(at_cosine(0.96, 5), final_label=circle)
    far = embedded(at_cosine(0.5, 6))
    return source, close, reviewed, far


def test_label_similar_previews_then_labels_the_unreviewed_images_above_the_threshold_as_one_operation(
    client_for, reviewer, neighbourhood
):
    from images.models import Image
    from predictions.models import LabelOperation, Review

    source, close, reviewed, far = neighbourhood
    client = client_for(reviewer)
    url = f"/admin/predictions/review/similar/{source.image_id}/label/"

    preview = client.get(url, {"threshold": "0.9"})
    assert preview.status_code == 200
    assert [entry["item"].image_id for entry in preview.context["preview"]] == [p.image_id for p in close]

    response = client.post(url, {"threshold": "0.9"}, follow=True)

    assert "given to 2 similar image(s)" in response.content.decode()
    operation = LabelOperation.objects.get()
    assert (operation.kind, operation.image_count, operation.created_by) == ("similar", 2, reviewer)
    images = {image.pk: image for image in Image.objects.all()}
    for prediction in close:
        image = images[prediction.image_id]
        assert (image.final_label.name, image.label_source, image.reviewed_by) == ("square", "similar", reviewer)
    assert images[reviewed.image_id].final_label.name == "circle", "a reviewed image is never overwritten"
    assert images[far.image_id].final_label is None
    reviews = Review.objects.filter(operation=operation)
    assert {r.source for r in reviews} == {"similar"} and {r.agreed for r in reviews} == {False}

    from predictions.services.operations import label_operation_undo

    label_operation_undo(operation=operation, user=reviewer)
    assert Image.objects.filter(pk__in=[p.image_id for p in close], final_label__isnull=True).count() == 2


def test_label_similar_shows_a_reviewer_gold_images_as_open_and_leaves_them_alone(
    client_for, reviewer, lead, neighbourhood
):
    """Left out of a reviewer's preview, gold images (shown as open by "more like this") would be
    the ones missing: the preview lists them, the change skips them as reserved. A Lead sees
    the preview of what will change."""
    from images.models import Image
    from predictions.models import Label

    source, close, reviewed, _ = neighbourhood
    Image.objects.filter(pk=reviewed.image_id).update(is_gold=True)  # gold: its label is the reference
    url = f"/admin/predictions/review/similar/{source.image_id}/label/"

    shown = [entry["item"].image_id for entry in client_for(reviewer).get(url, {"threshold": "0.9"}).context["preview"]]
    assert shown == [close[0].image_id, reviewed.image_id, close[1].image_id]  # by similarity: 0.97, 0.96, 0.93
    shown = [entry["item"].image_id for entry in client_for(lead).get(url, {"threshold": "0.9"}).context["preview"]]
    assert shown == [p.image_id for p in close]

    response = client_for(reviewer).post(url, {"threshold": "0.9"}, follow=True)
    text = response.content.decode()
    assert "given to 2 similar image(s); left alone: 1 reserved for the review screen" in text
    assert "gold" not in text.lower()
    assert Image.objects.get(pk=reviewed.image_id).final_label == Label.objects.get(name="circle")


def test_label_similar_is_for_reviewers_and_needs_a_labelled_non_gold_source(
    client_for, reviewer, uploader, lead, neighbourhood
):
    from images.models import Image

    source, close, _, far = neighbourhood
    assert client_for(uploader).get(f"/admin/predictions/review/similar/{source.image_id}/label/").status_code == 403

    response = client_for(reviewer).get(f"/admin/predictions/review/similar/{far.image_id}/label/")
    assert response.status_code == 302 and response.url == f"/admin/images/image/{far.image_id}/change/"

    Image.objects.filter(pk=source.image_id).update(is_gold=True)
    gold = client_for(reviewer).get(f"/admin/predictions/review/similar/{source.image_id}/label/")
    # A gold image has no label to a reviewer: the answer an image without one gets.
    assert gold.status_code == 302 and gold.url == f"/admin/images/image/{source.image_id}/change/"
    assert client_for(lead).get(f"/admin/predictions/review/similar/{source.image_id}/label/").status_code == 200


@pytest.mark.parametrize("rows", [1, 511, 4096, 10_001])
def test_the_product_split_between_threads_equals_the_whole_one(monkeypatch, rows):
    from predictions.selectors import similar

    monkeypatch.setattr(similar, "usable_cores", lambda: 4)  # split also on a smaller machine
    rng = np.random.default_rng(rows)
    codes = rng.integers(-127, 128, size=(rows + 7, 64), dtype=np.int8)  # capacity beyond size, as loaded
    scales = rng.uniform(0.001, 0.01, size=rows + 7).astype(np.float32)
    vectors = similar._Vectors(version_id=1, marker=(), last_pk=0, count=rows, image_ids=np.arange(rows + 7),
                               codes=codes, scales=scales, size=rows)  # fmt: skip
    query = rng.standard_normal(64).astype(np.float32)

    expected = np.clip((codes[:rows].astype(np.float64) @ query) * scales[:rows], -1, 1)
    np.testing.assert_allclose(similar._similarities(vectors, query), expected, rtol=1e-5, atol=1e-6)
