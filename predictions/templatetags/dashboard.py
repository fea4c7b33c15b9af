"""{% review_dashboard %}: the review numbers on the admin index (templates/admin/index.html);
{% demo_model_status %}: the first run's demo model while it trains."""

from django import template
from django.urls import reverse
from django.utils.html import format_html

from predictions.selectors.dashboard import review_dashboard as review_dashboard_stats
from predictions.selectors.demo import demo_training_unfinished
from predictions.selectors.quality import gold_hidden_from
from predictions.selectors.versions import model_version_active_id

register = template.Library()


@register.inclusion_tag("admin/predictions/review/dashboard.html", takes_context=True)
def review_dashboard(context):
    request = context["request"]
    return {
        "dashboard": review_dashboard_stats(gold_hidden=gold_hidden_from(request.user)),
        "can_review": request.user.has_perm("predictions.add_review"),
    }


@register.simple_tag(takes_context=True)
def demo_model_status(context) -> str:
    """One line in the admin's message style while the demo model trains ("Demo model: epoch 5 of 16,
    validation accuracy 0.91"), or when its training failed and no model is active; else nothing."""
    demo = demo_training_unfinished()
    if demo is None or (demo.failed and model_version_active_id() is not None):
        return ""
    after = "" if demo.failed else " Uploads are stored now and predicted once it is ready."
    job = f"training job {demo.job_id}"
    if context["request"].user.has_perm("predictions.view_trainingjob"):
        url = reverse("admin:predictions_trainingjob_change", args=[demo.job_id])
        job = format_html('<a href="{}">{}</a>', url, job)
    return format_html(
        '<ul class="messagelist demo-model-status"><li class="{}">Demo model: {} ({}).{}</li></ul>',
        "error" if demo.failed else "info", demo.progress, job, after,
    )
