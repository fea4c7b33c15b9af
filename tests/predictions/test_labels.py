"""labels_ensure: the one look-up-or-create of labels by name; review-screen keys that never move or clash."""

import pytest
from django.urls import reverse

from predictions.models import Label
from predictions.selectors.queue import label_shortcuts
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


# --- review-screen keys never move, never clash (issue 17 item 2) ------------------------

def shown_keys() -> dict[str, str]:
    return {shortcut.label.name: shortcut.key for shortcut in label_shortcuts()}


@pytest.fixture
def shapes(db):
    """circle 1, square 2, triangle 3 as a Lead set them up; star without a key (the screen gives it 4)."""
    for order, (name, key) in enumerate([("circle", "1"), ("square", "2"), ("triangle", "3"), ("star", "")]):
        Label.objects.create(name=name, order=order, key=key)
    return shown_keys()


def label_add_form(**fields) -> dict:
    return {"name": "blob", "order": "0", "key": "", **fields}


def test_adding_a_label_with_a_taken_key_is_refused_and_names_the_holder(shapes, lead, client_for):
    client = client_for(lead)

    response = client.post(reverse("admin:predictions_label_add"), label_add_form(key="1"))

    assert response.status_code == 200
    assert "Key 1 is already used by circle." in response.content.decode()
    assert not Label.objects.filter(name="blob").exists()
    assert shown_keys() == shapes


def test_a_key_the_screen_gives_a_label_without_one_is_taken_too(shapes, lead, client_for):
    response = client_for(lead).post(reverse("admin:predictions_label_add"), label_add_form(key="4"))

    assert "Key 4 is already used by star." in response.content.decode()


def test_keys_compare_without_case_and_the_screens_own_keys_are_refused(shapes, lead, client_for):
    client = client_for(lead)
    Label.objects.create(name="oval", order=9, key="a")

    taken = client.post(reverse("admin:predictions_label_add"), label_add_form(key="A")).content.decode()
    reserved = client.post(reverse("admin:predictions_label_add"), label_add_form(key="z")).content.decode()

    assert "Key a is already used by oval." in taken
    assert "Key z is kept by the review screen for undo." in reserved


def test_a_new_label_sorted_first_gets_a_free_key_and_moves_nobody(shapes, lead, client_for):
    """The reported case: 'blob' sorts before 'circle' (same order) and used to take its key."""
    response = client_for(lead).post(reverse("admin:predictions_label_add"), label_add_form(key=""))

    assert response.status_code == 302
    assert Label.objects.get(name="blob").key == "5"
    assert shown_keys() == {**shapes, "blob": "5"}


def test_the_add_page_puts_a_new_label_at_the_end(shapes, lead, client_for):
    response = client_for(lead).get(reverse("admin:predictions_label_add"))

    assert response.context["adminform"].form.initial["order"] == 4


def test_changelist_rows_may_swap_keys_but_not_share_one(shapes, lead, client_for):
    client = client_for(lead)
    labels = list(Label.objects.order_by("order"))

    def changelist_post(keys: dict[str, str]) -> str:
        data = {
            "form-TOTAL_FORMS": str(len(labels)), "form-INITIAL_FORMS": str(len(labels)), "_save": "Save",
        }  # fmt: skip
        for index, label in enumerate(labels):
            data |= {f"form-{index}-id": str(label.pk), f"form-{index}-order": str(label.order),
                     f"form-{index}-key": keys.get(label.name, label.key)}  # fmt: skip
        response = client.post(reverse("admin:predictions_label_changelist"), data)
        return response.content.decode() if response.status_code == 200 else ""

    shared = changelist_post({"square": "1"})
    assert "Key 1 is already used by circle." in shared
    assert shown_keys() == shapes

    assert changelist_post({"circle": "2", "square": "1"}) == ""
    assert shown_keys() == {**shapes, "circle": "2", "square": "1"}


def test_labels_ensure_takes_no_key_the_screen_shows_and_moves_none(shapes):
    """star has no stored key but shows 4: a new class must not take 4 (star's reviewers would lose it)."""
    labels = labels_ensure(names=["hexagon", "aardvark"])

    assert [labels["hexagon"].key, labels["aardvark"].key] == ["5", "6"]
    assert shown_keys() == {**shapes, "hexagon": "5", "aardvark": "6"}


def test_older_labels_keep_a_key_shared_by_mistake(db):
    """Keys saved twice before the check existed: the older label keeps it, wherever the newer one sorts."""
    Label.objects.create(name="circle", order=1, key="1")
    Label.objects.create(name="blob", order=0, key="1")

    assert shown_keys() == {"circle": "1", "blob": "2"}


def test_label_admin_lives_in_its_own_module():
    from django.contrib import admin

    assert type(admin.site._registry[Label]).__module__ == "predictions.admin.labels"
