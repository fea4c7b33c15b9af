"""{% review_dashboard %}: the review numbers on the admin index (templates/admin/index.html)."""

from django import template

from predictions.selectors.dashboard import review_dashboard as review_dashboard_stats

register = template.Library()


@register.inclusion_tag("admin/predictions/review/dashboard.html", takes_context=True)
def review_dashboard(context):
    request = context["request"]
    return {
        "dashboard": review_dashboard_stats(),
        "can_review": request.user.has_perm("predictions.add_review"),
    }
