"""The reviewer statistics page (/admin/predictions/review/stats/), wired in ReviewAdmin.get_urls().

Leads (predictions.change_review) see every reviewer, the team's agreement on
overlap images and the adjudication backlog; a reviewer sees only their own line
and the queue's time to empty; anyone without the review permission (Uploaders)
gets 403. The numbers come from predictions/selectors/reviewer_stats.py, which
states their method.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from html import escape

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.template.response import TemplateResponse
from django.utils.safestring import SafeString
from django.views import View

from predictions.charts import _svg, _text
from predictions.selectors import reviewer_stats as stats
from predictions.selectors.reviewer_agreement import overlap_agreement
from predictions.services.quality import LEAD_PERMISSION


def decisions_per_day_svg(*, days: Sequence[tuple[dt.date, int]]) -> SafeString:
    """Bars of decisions per day. Coloured with the admin's CSS variables (style, not
    presentation attributes, which cannot read them), so the chart follows dark mode."""
    left, top, plot_w, plot_h = 40, 16, max(300, 14 * len(days)), 140
    bottom = top + plot_h
    tallest = max((count for _, count in days), default=0) or 1
    bar_w = plot_w / max(len(days), 1)
    axis = 'style="stroke: var(--border-color)"'
    body = [
        '<g style="fill: var(--body-quiet-color)">',
        f'<line x1="{left}" y1="{bottom}" x2="{left + plot_w}" y2="{bottom}" {axis}/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{bottom}" {axis}/>',
        _text(left - 6, top + 4, str(tallest), text_anchor="end"),
        _text(left - 6, bottom, "0", text_anchor="end"),
    ]
    for i, (day, count) in enumerate(days):
        x = left + bar_w * i + 1
        height = plot_h * count / tallest
        body.append(
            f'<rect x="{x:.1f}" y="{bottom - height:.1f}" width="{max(bar_w - 2, 1):.1f}" height="{height:.1f}" '
            f'style="fill: var(--primary)"><title>{escape(day.isoformat())}: {count}</title></rect>'
        )
        if (len(days) - 1 - i) % 7 == 0:  # today, and every week back from it
            body.append(_text(x + bar_w / 2, bottom + 14, day.strftime("%d %b"), text_anchor="middle"))
    body.append("</g>")
    return _svg(left + plot_w + 30, bottom + 24, body, "Decisions per day")


class ReviewerStatsView(View):
    admin_site = None
    model_admin = None

    def get(self, request):
        is_lead = request.user.has_perm(LEAD_PERMISSION)
        if not (is_lead or self.model_admin.has_review_permission(request)):
            raise PermissionDenied
        reviewer_ids = None if is_lead else [request.user.pk]
        days = stats.decisions_per_day(reviewer_ids=reviewer_ids)
        # A reviewer's own gold accuracy as of the start of the day: which of their decisions
        # were gold checks is not theirs to know.
        gold_before = None if is_lead else stats.start_of_today()
        lines = stats.reviewer_lines(reviewer_ids=reviewer_ids, gold_before=gold_before)
        # Everyone with an overlap decision has a line of the Lead's: their names come from it.
        usernames = {line.reviewer_id: line.username for line in lines}
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model_admin.opts,
            "title": "Reviewer statistics",
            "is_lead": is_lead,
            "lines": lines,
            "pace": stats.team_pace(),
            "chart": decisions_per_day_svg(days=days),
            "chart_days": len(days),
            "agreement": overlap_agreement(usernames=usernames) if is_lead else None,
            "adjudication_waiting": stats.adjudication_waiting_count() if is_lead else None,
            "overlap_share": settings.REVIEW_OVERLAP_SHARE,
            "blind": settings.REVIEW_BLIND,
            "pace_days": stats.PACE_DAYS,
            "confidence": stats.CONFIDENCE,
            "gold_before": gold_before,
        }
        return TemplateResponse(request, "admin/predictions/review/stats.html", context)
