"""Labels: the one look-up-or-create of the taxonomy by name.

Model class names map onto Labels by name. Every place that meets a class name
(validating a checkpoint, recording a prediction, answering the JSON endpoint, the
demo bootstrap) goes through labels_ensure, so a missing label is always added the
same way: at the end of the taxonomy, with the next free review-screen key.
"""

from collections.abc import Iterable

from django.db.models import Max

from predictions.models import Label

LABEL_KEYS = "123456789"


def labels_ensure(*, names: Iterable[str]) -> dict[str, Label]:
    """The Labels with these names, keyed by name in the order given; missing ones are created.

    A new label goes after every existing one (in the order of ``names``) and takes
    the first free key of 1-9, if any is left. Existing labels are never changed.
    """
    names = list(dict.fromkeys(names))
    labels = {label.name: label for label in Label.objects.filter(name__in=names)}
    missing = [name for name in names if name not in labels]
    if missing:
        top = Label.objects.aggregate(top=Max("order"))["top"]
        next_order = 0 if top is None else top + 1
        used_keys = set(Label.objects.exclude(key="").values_list("key", flat=True))
        free_keys = [key for key in LABEL_KEYS if key not in used_keys]
        for name in missing:
            # get_or_create: another process may add the same label at the same moment.
            label, created = Label.objects.get_or_create(
                name=name, defaults={"order": next_order, "key": free_keys[0] if free_keys else ""}
            )
            if created:
                next_order += 1
                free_keys = free_keys[1:]
            labels[name] = label
    return {name: labels[name] for name in names}
