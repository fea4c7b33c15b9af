"""Live progress on the admin's pages of running work: upload batches, prediction jobs,
training jobs, and the admin index's dashboard.

Each page polls a small JSON view (predictions/static/predictions/progress.js,
every ~2 s) that answers the HTML of the page's live fields, rendered as the
page renders them, and whether the work is finished; the script puts the HTML
in place and stops once it is. No second copy of a progress bar's markup: a
field's HTML is its admin display method's, or the model field's admin display.

- ``LiveProgressMixin`` on a ModelAdmin adds ``<id>/progress/`` (the change
  page's ``live_fields``) and tells its change page (a change_form template
  that includes admin/predictions/live_progress.html) where to poll while
  ``progress_finished(obj)`` is false.
- ``dashboard_progress_view``: the index's demo-model line and dashboard
  (admin/predictions/live_dashboard.html), for any staff user, as the index
  shows them; wired on the prediction job admin (predictions/admin/jobs.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

from django.contrib.admin.utils import display_for_field, lookup_field, unquote
from django.core.exceptions import PermissionDenied
from django.http import Http404, JsonResponse
from django.template.loader import render_to_string
from django.urls import path, reverse
from django.template.defaultfilters import linebreaksbr
from django.utils.html import conditional_escape

from predictions.models import JobStatus, PredictionJob, TrainingJob

# How often a page asks, in milliseconds (the script backs off on errors).
POLL_INTERVAL_MS = 2000
_UNFINISHED = (JobStatus.QUEUED, JobStatus.RUNNING)


class LiveProgressMixin:
    """Put before admin.ModelAdmin: its change page refreshes ``live_fields`` while the work runs.

    The defaults fit a job (a ``status`` of JobStatus, a ``progress`` display method).
    """

    live_fields: Sequence[str] = ("status", "progress", "error", "started_at", "finished_at")

    def progress_finished(self, obj) -> bool:
        """Whether the work ``obj`` shows is over (the page stops asking)."""
        return obj.status in (JobStatus.DONE, JobStatus.FAILED)

    def get_urls(self):
        opts = self.opts
        view = self.admin_site.admin_view(partial(object_progress_view, model_admin=self))
        return [
            path("<path:object_id>/progress/", view, name=f"{opts.app_label}_{opts.model_name}_progress"),
            *super().get_urls(),
        ]

    def change_view(self, request, object_id, form_url="", extra_context=None):
        obj = self.get_object(request, unquote(object_id))
        if obj is not None and not self.progress_finished(obj):
            opts = self.opts
            url = reverse(f"admin:{opts.app_label}_{opts.model_name}_progress", args=[obj.pk])
            extra_context = {**(extra_context or {}), "live_progress": {"url": url, "interval_ms": POLL_INTERVAL_MS}}
        return super().change_view(request, object_id, form_url, extra_context)


def batch_progress_finished(batch) -> bool:
    """An upload batch (annotated by batches_with_progress) has nothing more coming: every
    image has an outcome from the active version, or no job of the batch still runs."""
    if batch.predicted_count + batch.failed_count >= batch.accepted_count:
        return True
    return not PredictionJob.objects.filter(batch=batch, status__in=_UNFINISHED).exists()


def object_progress_view(request, object_id: str, *, model_admin: LiveProgressMixin) -> JsonResponse:
    """The live fields of one object's change page, as HTML, and whether its work is finished."""
    # The change page's own row (get_queryset: its annotations included).
    obj = model_admin.get_object(request, unquote(object_id))
    if obj is None:
        raise Http404
    if not model_admin.has_view_or_change_permission(request, obj):
        raise PermissionDenied
    fields = {name: readonly_field_html(model_admin, obj, name) for name in model_admin.live_fields}
    return JsonResponse({"fields": fields, "finished": model_admin.progress_finished(obj)})


def readonly_field_html(model_admin, obj, name: str) -> str:
    """A read-only field's HTML as the change page shows it (django.contrib.admin.helpers.AdminReadonlyField)."""
    empty = model_admin.get_empty_value_display()
    try:
        field, attr, value = lookup_field(name, obj, model_admin)
    except (AttributeError, ValueError):
        return str(empty)
    if field is None:
        shown = value if hasattr(value, "__html__") else linebreaksbr(value)
    else:
        shown = linebreaksbr(display_for_field(value, field, empty))
    return str(conditional_escape(shown))


def dashboard_progress_view(request) -> JsonResponse:
    """The admin index's live part, for anyone who sees the index (staff: admin_view checks it)."""
    html = render_to_string("admin/predictions/live_dashboard.html", {"request": request}, request=request)
    running = (
        PredictionJob.objects.filter(status__in=_UNFINISHED).exists()
        or TrainingJob.objects.filter(status__in=_UNFINISHED).exists()
    )
    return JsonResponse({"fields": {"dashboard": html}, "finished": not running})

