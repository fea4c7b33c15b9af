"""The image changelist's gallery: what its page needs from the predictions side.

``ImageGalleryMixin`` goes on ImageAdmin (images/admin.py). The gallery itself is
the changelist's own rows shown as large tiles (images/static/images/image_list.js,
template images/templates/admin/images/image/change_list.html): the tiles tick the
rows' action checkboxes, so every action of the list works on a gallery
selection. Its label buttons (and their keys, the review screen's) post the
selection to the list's "Set label…" action with the label chosen, so a label set
here goes through that action and its rules (only unreviewed, unclaimed, non-gold
images change; one undoable operation; the message says what was skipped).
"""

from __future__ import annotations

from predictions.selectors.queue import label_shortcuts


class ImageGalleryMixin:
    """Put before ImageActionPermissionsMixin: the labels the gallery offers, to those who may set them."""

    def changelist_view(self, request, extra_context=None):
        labels = []
        if "set_label" in self.get_actions(request):
            labels = [{"id": item.label.pk, "name": item.label.name, "key": item.key} for item in label_shortcuts()]
        return super().changelist_view(request, {**(extra_context or {}), "gallery_labels": labels})
