"""What a grid action would change on images that already have a label: the old → new
list a Lead confirms before overwriting reviewed images (predictions/admin/image_actions.py)."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from images.models import Image
from predictions.models import Label, ModelVersion, Prediction


@dataclass(frozen=True)
class Relabel:
    image_id: int
    name: str
    old_label: str
    reviewed_by: str
    new_label: str


def images_relabelled(
    *, image_ids: Collection[int], label: Label | None = None, model_version: ModelVersion | None = None
) -> list[Relabel]:
    """The labelled images among ``image_ids`` whose label would change, in name order.

    The new label is ``label`` ("Set label…") or, without one, ``model_version``'s
    prediction ("Confirm predictions"; images it did not predict stay as they are).
    Gold images are left out: no grid action changes them.
    """
    images = Image.objects.filter(pk__in=list(image_ids), final_label__isnull=False, is_gold=False)
    rows = images.values_list("pk", "original_name", "final_label_id", "final_label__name", "reviewed_by__username")
    if label is not None:
        new = {row[0]: (label.pk, label.name) for row in rows}
    elif model_version is not None:
        new = {
            image_id: (label_id, name)
            for image_id, label_id, name in Prediction.objects.filter(
                model_version=model_version, image__in=images
            ).values_list("image_id", "label_id", "label__name")
        }
    else:
        return []
    return sorted(
        (
            Relabel(
                image_id=pk, name=name, old_label=old_name, reviewed_by=reviewer or "", new_label=new[pk][1]
            )
            for pk, name, old_id, old_name, reviewer in rows
            if pk in new and new[pk][0] != old_id
        ),
        key=lambda relabel: (relabel.name, relabel.image_id),
    )
