"""The model version's "Auto-accept…" page: the promise asked for, a preview, then a confirmation.

Wired in ModelVersionAdmin.get_urls() through admin_site.admin_view, as the
review screen's views are in ReviewAdmin. GET previews (the form's values, else
2% at 95%); POST, with the threshold the Lead saw, starts the run
(predictions.services.auto_accept). Leads only: the permission to add an
AutoAcceptRun.
"""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html
from django.views import View

from predictions import charts
from predictions.models import AutoAcceptRun, ModelVersion
from predictions.services.auto_accept import auto_accept_preview, auto_accept_run_start
from predictions.services.operations import skipped_text
from predictions.statistics.acceptance import sample_size_required

PERMISSION = "predictions.add_autoacceptrun"


class AutoAcceptForm(forms.Form):
    max_error = forms.FloatField(
        label="Maximum error rate", min_value=0.001, max_value=0.5, initial=0.02,
        help_text="Share of wrong labels allowed among the accepted images: 0.02 is 2%.",
        widget=forms.NumberInput(attrs={"step": "0.005"}),
    )
    confidence = forms.FloatField(
        label="Confidence level", min_value=0.5, max_value=0.999, initial=0.95,
        help_text="How sure the promise is: 0.95 means it fails in at most 1 of 20 random audit samples.",
        widget=forms.NumberInput(attrs={"step": "0.01"}),
    )
    # The threshold the Lead confirmed, so that a run never uses one they did not see.
    threshold = forms.FloatField(required=False, widget=forms.HiddenInput)


class AutoAcceptView(View):
    admin_site = None
    model_admin = None

    def dispatch(self, request, *args, **kwargs):
        if not request.user.has_perm(PERMISSION):
            raise PermissionDenied
        return super().dispatch(request, *args, **kwargs)

    def get(self, request, pk: int):
        version = get_object_or_404(ModelVersion, pk=pk)
        data = request.GET if "max_error" in request.GET else {
            name: field.initial for name, field in AutoAcceptForm.base_fields.items()
        }
        return self.render(request, version, AutoAcceptForm(data))

    def post(self, request, pk: int):
        version = get_object_or_404(ModelVersion, pk=pk)
        form = AutoAcceptForm(request.POST)
        if not form.is_valid():
            return self.render(request, version, form)
        values = form.cleaned_data
        preview = auto_accept_preview(
            model_version=version, max_error=values["max_error"], confidence=values["confidence"]
        )
        if preview.threshold is None or preview.threshold != values["threshold"]:
            messages.warning(
                request,
                "The audit sample has changed since the preview: check the new one and confirm again.",
            )
            return self.render(request, version, form, preview=preview)
        try:
            run = auto_accept_run_start(
                model_version=version, max_error=values["max_error"], confidence=values["confidence"],
                user=request.user,
            )
        except ValidationError as exc:
            messages.error(request, " ".join(exc.messages))
            return self.render(request, version, form, preview=preview)
        url = reverse("admin:predictions_autoacceptrun_change", args=[run.pk])
        if run.status == AutoAcceptRun.Status.DONE:
            left_alone = skipped_text((run.operation.params.get("skipped") if run.operation else None) or {})
            text = format_html(
                '<a href="{}">{}</a> accepted {} of {} images{}.', url, run, run.accepted, run.total,
                f"; left alone: {left_alone}" if left_alone else "",
            )
        else:
            text = format_html('<a href="{}">{}</a> is running in the task queue: {} images.', url, run, run.total)
        messages.success(request, text)
        return HttpResponseRedirect(url)

    def render(self, request, version: ModelVersion, form: AutoAcceptForm, preview=None):
        if preview is None and form.is_valid():
            try:
                preview = auto_accept_preview(
                    model_version=version,
                    max_error=form.cleaned_data["max_error"],
                    confidence=form.cleaned_data["confidence"],
                )
            except ValidationError as exc:
                form.add_error(None, exc)
        confirm = None
        if preview is not None and preview.threshold is not None:
            confirm = AutoAcceptForm(
                initial={**form.cleaned_data, "threshold": preview.threshold}, auto_id="confirm_%s"
            )
        chart = ""
        if preview is not None and preview.curve:
            decision = preview.decision
            chart = charts.coverage_bound_svg(
                points=[(point.images, point.bound, point.tested) for point in preview.curve],
                max_error=decision.max_error,
                chosen=(preview.would_accept, decision.bound) if decision.threshold is not None else None,
            )
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model_admin.opts,
            "title": f"Auto-accept predictions of {version.name}",
            "version": version,
            "form": form,
            "preview": preview,
            "confirm": confirm,
            "chart": chart,
            "first_possible": (
                sample_size_required(
                    errors=0, max_error=form.cleaned_data["max_error"], confidence=form.cleaned_data["confidence"]
                )
                if form.is_valid() else None
            ),
            "runs": AutoAcceptRun.objects.filter(model_version=version).select_related("created_by")[:10],
        }
        return TemplateResponse(request, "admin/predictions/modelversion/auto_accept.html", context)
