"""The one read-only admin: rows the code writes (jobs, predictions, failures, exports,
reviews), which people view and filter but never add or edit by hand.

Deleting stays with the model's delete permission unless an admin says otherwise
(the review history refuses it too: undo is how a decision is taken back).
"""


class ReadOnlyAdminMixin:
    """Put before admin.ModelAdmin; the change page shows every field read-only."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
