"""The label audit's admin pages: "Run audit now" (POST, Leads) and an audit's flagged labels.

Wired in LabelAuditAdmin.get_urls() through admin_site.admin_view, as the review
screen's views are.
"""

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import Http404, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import reverse
from django.views import View

from predictions.models import LabelAudit
from predictions.selectors.label_audit import (
    label_audit_in_progress,
    label_audit_latest_finished,
    label_suspicions_flagged,
)
from predictions.services.label_audit import Reason, label_audit_queue

PAGE_SIZE = 100


class LabelAuditViewMixin:
    admin_site = None
    model_admin = None


class LabelAuditRunView(LabelAuditViewMixin, View):
    """Queue an audit in the cluster; one already queued or running is kept instead."""

    http_method_names = ["post"]

    def post(self, request):
        if not self.model_admin.has_run_permission(request):
            raise PermissionDenied
        running = label_audit_in_progress()
        if running is not None:
            messages.warning(request, f"{running} is already {running.status}: it was left to finish.")
        else:
            audit = label_audit_queue(user=request.user, reason=Reason.ON_DEMAND)
            messages.success(request, f"{audit} queued: it runs in the task cluster; this list shows its progress.")
        return HttpResponseRedirect(reverse("admin:predictions_labelaudit_changelist"))


class LabelAuditFlaggedView(LabelAuditViewMixin, View):
    """The flagged labels of one audit, most doubtful first: thumbnail, given and suggested label, score."""

    def get(self, request, audit_id: int):
        if not self.model_admin.has_view_permission(request):
            raise PermissionDenied
        audit = get_object_or_404(LabelAudit.objects.select_related("model_version"), pk=audit_id)
        if audit.status != LabelAudit.Status.DONE:
            raise Http404(f"{audit} has not finished.")
        page = Paginator(label_suspicions_flagged(audit=audit), PAGE_SIZE).get_page(request.GET.get("page"))
        latest = label_audit_latest_finished()
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model_admin.opts,
            "title": f"{audit}: flagged labels",
            "audit": audit,
            "page": page,
            "is_latest": latest is not None and latest.pk == audit.pk,
            "review_url": reverse("admin:predictions_review_screen") + "?order=suspects",
        }
        return TemplateResponse(request, "admin/predictions/labelaudit/flagged.html", context)
