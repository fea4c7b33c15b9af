"""Labels: the one look-up-or-create of the taxonomy by name, and the rule for review-screen keys.

Model class names map onto Labels by name. Every place that meets a class name
(validating a checkpoint, recording a prediction, answering the JSON endpoint, the
demo bootstrap) goes through labels_ensure, so a missing label is always added the
same way: at the end of the taxonomy, with the next free review-screen key.

A reviewer's key is a habit: keys are unique (compared without case), a new label
never takes a key any label has on the review screen (a stored one, or the digit
the screen gives a label without one), and adding labels never changes the keys of
existing ones. The admin (predictions/admin/labels.py) checks keys typed by a
person with label_key_conflicts. The schema has no unique constraint on the key
(a blank key is shared by many labels, and the comparison ignores case), so these
two paths are what keeps keys unique; two processes adding labels at the same
instant could still pick the same free digit, as the screen then shows one of them
its digit and the other the next free one.
"""

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping

from django.core.exceptions import ValidationError
from django.db.models import Max

from predictions.models import Label
from predictions.selectors.queue import RESERVED_KEYS, label_shortcuts

LABEL_KEYS = "123456789"
RESERVED_KEY_USES = {"s": "skip", "z": "undo", "?": "help"}


def _first_free_keys(count: int) -> list[str]:
    """Up to `count` digits that no label has on the review screen, lowest first."""
    shown = {shortcut.key for shortcut in label_shortcuts() if shortcut.key}
    return [key for key in LABEL_KEYS if key not in shown][:count]


def labels_ensure(*, names: Iterable[str]) -> dict[str, Label]:
    """The Labels with these names, keyed by name in the order given; missing ones are created.

    A new label goes after every existing one (in the order of ``names``) and takes
    the first digit of 1-9 that no label shows on the review screen, if any is left.
    Existing labels are never changed, and their keys on the screen stay as they were.
    """
    names = list(dict.fromkeys(names))
    labels = {label.name: label for label in Label.objects.filter(name__in=names)}
    missing = [name for name in names if name not in labels]
    if missing:
        top = Label.objects.aggregate(top=Max("order"))["top"]
        next_order = 0 if top is None else top + 1
        free_keys = _first_free_keys(len(missing))
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


def label_key_conflicts(*, proposed: Mapping[int | None, str]) -> dict[int | None, str]:
    """Check keys typed for labels: {label id (None: a new label): key} -> {label id: error message}.

    A key clashes when the review screen keeps it for a command, or when another
    label has it: a label outside `proposed` as the screen shows it, or another
    label of `proposed`. Among labels claiming one key, a label outside `proposed`
    holds it, else the oldest one keeping the key it already had; every other one
    gets a message naming the holder: "Key 1 is already used by circle."
    A blank key never clashes (the screen gives such a label the next free digit).
    """
    names = dict(Label.objects.values_list("pk", "name"))
    stored = {pk: key.lower() for pk, key in Label.objects.values_list("pk", "key")}
    # key -> [(rank, label id, name)]; the lowest (rank, id) holds the key.
    claims: dict[str, list[tuple[int, float, str]]] = defaultdict(list)
    for shortcut in label_shortcuts():
        if shortcut.key and shortcut.label.pk not in proposed:
            claims[shortcut.key].append((0, shortcut.label.pk, shortcut.label.name))
    errors: dict[int | None, str] = {}
    for label_id, typed in proposed.items():
        key = (typed or "").strip().lower()
        if not key:
            continue
        if key in RESERVED_KEYS:
            errors[label_id] = f"Key {key} is kept by the review screen for {RESERVED_KEY_USES.get(key, 'a command')}."
            continue
        keeps = label_id is not None and stored.get(label_id) == key
        claims[key].append((1 if keeps else 2, math.inf if label_id is None else label_id, names.get(label_id, "")))
    for key, claimants in claims.items():
        holder = min(claimants)
        for rank, label_id, _ in claimants:
            if rank and (rank, label_id) != holder[:2]:
                errors[None if label_id == math.inf else int(label_id)] = f"Key {key} is already used by {holder[2]}."
    return errors


def label_key_validate(*, key: str, label: Label | None = None) -> None:
    """Raise ValidationError if `key` cannot be `label`'s (None: a new label's) key."""
    error = label_key_conflicts(proposed={label.pk if label else None: key}).get(label.pk if label else None)
    if error:
        raise ValidationError(error, code="key_taken")


def label_create(*, name: str, order: int | None = None, key: str = "") -> Label:
    """A new label: at the end of the taxonomy unless `order` is given, with `key`, else the next free key.

    Raises ValidationError when `key` is taken (label_key_conflicts).
    """
    if key:
        label_key_validate(key=key)
    else:
        key = next(iter(_first_free_keys(1)), "")
    if order is None:
        top = Label.objects.aggregate(top=Max("order"))["top"]
        order = 0 if top is None else top + 1
    label = Label(name=name, order=order, key=key)
    label.full_clean()
    label.save()
    return label
