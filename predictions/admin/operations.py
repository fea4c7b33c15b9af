"""Admin: label operations, the bulk label changes (grid actions, imports, auto-accept,
label similar) and their undo.

The list is read-only: operations are made by the code that changes labels
(predictions.services.operations). Undo is a page of its own (GET: what will be
undone; POST: undo it), linked from each grid action's message, from the image
history and from this list. It is for the operation's author while they may
still review (predictions.add_review), and for Leads (predictions.change_review).
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import BigIntegerField, Exists, OuterRef, Q
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Cast
from django.http import HttpRequest, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html
from django.utils.http import url_has_allowed_host_and_scheme, urlencode

from images.models import Image
from predictions.admin.readonly import ReadOnlyAdminMixin
from predictions.models import LabelOperation, Review
from predictions.selectors.quality import gold_hidden_from
from predictions.services.operations import label_operation_undo

REVIEW_PERMISSION = "predictions.add_review"
LEAD_PERMISSION = "predictions.change_review"
PREVIEW_ROWS = 50


def operation_may_undo(*, user, operation: LabelOperation) -> bool:
    if user.has_perm(LEAD_PERMISSION):
        return True
    return operation.created_by_id == user.pk and user.has_perm(REVIEW_PERMISSION)


def undo_url(operation: LabelOperation, request: HttpRequest | None = None) -> str:
    """The undo page of ``operation``; with a request, it comes back to that request's page afterwards."""
    url = reverse("admin:predictions_labeloperation_undo", args=[operation.pk])
    return f"{url}?{urlencode({'next': request.get_full_path()})}" if request is not None else url


@admin.register(LabelOperation)
class LabelOperationAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["__str__", "kind", "description", "created_by", "created_at", "image_count", "undone", "undo"]
    list_filter = ["kind", ("undone_at", admin.EmptyFieldListFilter), "created_by"]
    search_fields = ["description"]
    list_select_related = ["created_by", "undone_by"]
    date_hierarchy = "created_at"
    fields = [
        "kind", "description", "params", "image_count", "created_by", "created_at", "undone_by", "undone_at", "undo",
    ]
    readonly_fields = fields

    # Reviewers find their own grid actions here to undo them.
    def has_view_permission(self, request, obj=None):
        return super().has_view_permission(request, obj) or request.user.has_perm(REVIEW_PERMISSION)

    def get_queryset(self, request):
        operations = super().get_queryset(request)
        if not gold_hidden_from(request.user):
            return operations
        # A "label similar" names the image it started from and that image's label: a gold
        # image's is the reference label (a Lead may start one from it).
        source = Cast(KeyTextTransform("image_id", OuterRef("params")), BigIntegerField())
        from_gold = Exists(Image.objects.filter(pk=source, is_gold=True))
        return operations.exclude(Q(kind=LabelOperation.Kind.SIMILAR) & from_gold)

    # The reviews point at the operation; it goes only with them (undo is how it is taken back).
    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="undone", boolean=True, ordering="undone_at")
    def undone(self, operation: LabelOperation) -> bool:
        return operation.undone_at is not None

    @admin.display(description="")
    def undo(self, operation: LabelOperation) -> str:
        if operation.undone_at is not None or not operation.image_count:
            return "–"
        return format_html('<a href="{}">Undo</a>', undo_url(operation))

    def get_urls(self):
        return [
            path(
                "<int:pk>/undo/",
                self.admin_site.admin_view(self.undo_view),
                name="predictions_labeloperation_undo",
            ),
            *super().get_urls(),
        ]

    def undo_view(self, request, pk: int):
        operation = get_object_or_404(LabelOperation.objects.select_related("created_by", "undone_by"), pk=pk)
        if not operation_may_undo(user=request.user, operation=operation):
            raise PermissionDenied
        next_url = request.POST.get("next") or request.GET.get("next") or ""
        if not url_has_allowed_host_and_scheme(next_url, {request.get_host()}, require_https=request.is_secure()):
            next_url = ""
        if request.method == "POST":
            try:
                count = label_operation_undo(operation=operation, user=request.user)
            except ValidationError as exc:
                self.message_user(request, " ".join(exc.messages), messages.ERROR)
            else:
                self.message_user(
                    request, f"Undone: {operation}. {count} image(s) have their previous label back.", messages.SUCCESS
                )
            return HttpResponseRedirect(next_url or reverse("admin:predictions_labeloperation_changelist"))
        reviews = (
            Review.objects.filter(operation=operation)
            .select_related("image", "label")
            .order_by("image__original_name")[:PREVIEW_ROWS]
        )
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"Undo {operation}?",
            "subtitle": None,
            "operation": operation,
            "reviews": reviews,
            "more": max(0, operation.image_count - PREVIEW_ROWS),
            "next": next_url,
        }
        return TemplateResponse(request, "admin/predictions/labeloperation/undo_confirmation.html", context)
