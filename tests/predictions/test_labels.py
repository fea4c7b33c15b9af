"""labels_ensure: the one look-up-or-create of labels by name."""

from predictions.models import Label
from predictions.services.labels import labels_ensure


def test_labels_are_matched_by_name_and_new_ones_get_the_next_order_and_a_free_key(db):
    Label.objects.create(name="circle", order=0, key="1")
    Label.objects.create(name="square", order=4, key="3")

    labels = labels_ensure(names=["circle", "hexagon", "oval"])

    assert list(labels) == ["circle", "hexagon", "oval"]
    circle, hexagon, oval = labels.values()
    assert circle.key == "1" and Label.objects.filter(name="circle").count() == 1
    assert (hexagon.order, hexagon.key) == (5, "2")
    assert (oval.order, oval.key) == (6, "4")


def test_existing_labels_are_returned_unchanged_and_nothing_is_created(db, django_assert_num_queries):
    square = Label.objects.create(name="square", order=4, key="3")
    circle = Label.objects.create(name="circle", order=0, key="1")

    with django_assert_num_queries(1):
        labels = labels_ensure(names=["square", "circle", "square"])

    assert labels == {"square": square, "circle": circle}
    assert [(label.order, label.key) for label in labels.values()] == [(4, "3"), (0, "1")]
    assert Label.objects.count() == 2


def test_new_labels_on_an_empty_taxonomy_take_the_given_order_and_keys_one_onwards(db):
    labels = labels_ensure(names=["b", "a", "c"])

    assert [(name, label.order, label.key) for name, label in labels.items()] == [
        ("b", 0, "1"), ("a", 1, "2"), ("c", 2, "3"),
    ]


def test_keys_run_out_after_nine_and_later_labels_get_none(db):
    names = [f"class-{i}" for i in range(11)]

    labels = labels_ensure(names=names)

    assert [label.key for label in labels.values()] == [*"123456789", "", ""]
    assert [label.order for label in labels.values()] == list(range(11))
