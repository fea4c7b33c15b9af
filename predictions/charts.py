"""Small inline SVG charts for the model metrics page.

Hand-written SVG keeps the page free of a plotting dependency and of image files: each
function returns markup to drop into a template. Every piece of text that came from the
database (class names) is escaped here.

Colours are the admin's CSS variables (django/contrib/admin/static/admin/css/base.css
and dark_mode.css), set through style attributes (CSS, where var() works), so the charts
follow the light and the dark theme: text is --body-fg, axes --body-quiet-color. The
confusion matrix's shading stops at FILL_OPACITY_MAX so that --body-fg on the darkest
cell stays readable in both themes (contrast above 4.5, WCAG AA; tests/e2e/test_dark_mode.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from django.utils.safestring import SafeString, mark_safe

from predictions.selectors.metrics import ConfidenceBin

FONT = 'font-family="system-ui, sans-serif" font-size="11"'
TEXT_COLOUR = "var(--body-fg)"
# A green both themes show on their background; the admin has no variable for one.
RIGHT_COLOUR = "#2e7d32"
WRONG_COLOUR = "var(--error-fg)"
BAR_COLOUR = "var(--secondary)"  # the admin's own blue, the same in both themes
AXIS_COLOUR = "var(--body-quiet-color)"
GRID_COLOUR = "var(--body-bg)"  # the gaps between heatmap cells
# --secondary at this opacity over the light (#fff) or dark (#121212) page leaves
# --body-fg (#333 or #eee) a contrast of 5.3 or 7.6.
FILL_OPACITY_MAX = 0.6


def _paint(**properties: str) -> str:
    """The colours as a style attribute: CSS, where var() is sure to apply (a presentation attribute is not)."""
    return ' style="' + "; ".join(f"{name.replace('_', '-')}: {value}" for name, value in properties.items()) + '"'


def _svg(width: float, height: float, body: list[str], title: str) -> SafeString:
    return mark_safe(
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
        f'viewBox="0 0 {width:.0f} {height:.0f}" role="img" aria-label="{escape(title)}" {FONT}'
        f'{_paint(fill=TEXT_COLOUR)}>'
        f"<title>{escape(title)}</title>{''.join(body)}</svg>"
    )


def _text(x: float, y: float, text: str, **attrs: str) -> str:
    extra = "".join(f' {key.replace("_", "-")}="{escape(str(value))}"' for key, value in attrs.items())
    return f'<text x="{x:.1f}" y="{y:.1f}"{extra}>{escape(text)}</text>'


def _short(name: str, limit: int = 14) -> str:
    return name if len(name) <= limit else name[: limit - 1] + "…"


def confusion_matrix_svg(
    *, matrix: Sequence[Sequence[int]], row_labels: Sequence[str], col_labels: Sequence[str]
) -> SafeString:
    """Heatmap, true class per row and predicted class per column, counts in the cells.

    Shading is the share of the row, so a class's recall reads the same however many
    images it has.
    """
    cell = 44 if len(col_labels) <= 10 else 28
    left, top = 110, 90
    width = left + cell * len(col_labels) + 10
    height = top + cell * len(row_labels) + 10
    body = [
        _text(left + cell * len(col_labels) / 2, 12, "predicted", text_anchor="middle", font_weight="bold"),
        _text(12, top + cell * len(row_labels) / 2, "reviewed", text_anchor="middle", font_weight="bold",
              transform=f"rotate(-90 12 {top + cell * len(row_labels) / 2:.1f})"),
    ]
    for j, name in enumerate(col_labels):
        x = left + cell * j + cell / 2
        body.append(_text(x, top - 6, _short(name), transform=f"rotate(-45 {x:.1f} {top - 6})"))
    for i, (name, row) in enumerate(zip(row_labels, matrix)):
        y = top + cell * i
        body.append(_text(left - 6, y + cell / 2 + 4, _short(name), text_anchor="end"))
        row_total = sum(row) or 1
        for j, count in enumerate(row):
            share = count / row_total
            x = left + cell * j
            opacity = 0.04 + (FILL_OPACITY_MAX - 0.04) * share
            body.append(
                f'<rect x="{x}" y="{y}" width="{cell}" height="{cell}"'
                f'{_paint(fill=BAR_COLOUR, fill_opacity=f"{opacity:.3f}", stroke=GRID_COLOUR)}>'
                f"<title>{escape(name)} → {escape(col_labels[j])}: {count}</title></rect>"
            )
            body.append(_text(x + cell / 2, y + cell / 2 + 4, str(count), text_anchor="middle"))
    return _svg(width, height, body, "Confusion matrix")


def _bin_axis(body: list[str], *, left: float, top: float, plot_w: float, plot_h: float, y_max_label: str) -> None:
    bottom = top + plot_h
    body.append(f'<line x1="{left}" y1="{bottom}" x2="{left + plot_w}" y2="{bottom}"{_paint(stroke=AXIS_COLOUR)}/>')
    body.append(f'<line x1="{left}" y1="{top}" x2="{left}" y2="{bottom}"{_paint(stroke=AXIS_COLOUR)}/>')
    for tick in range(0, 11, 2):
        x = left + plot_w * tick / 10
        body.append(_text(x, bottom + 14, f"{tick / 10:.1f}", text_anchor="middle"))
    body.append(_text(left + plot_w / 2, bottom + 30, "confidence", text_anchor="middle"))
    body.append(_text(left - 6, top + 4, y_max_label, text_anchor="end"))
    body.append(_text(left - 6, bottom, "0", text_anchor="end"))


def confidence_histogram_svg(*, bins: Sequence[ConfidenceBin]) -> SafeString:
    """How many predictions fall in each confidence bin, right ones stacked under wrong ones."""
    left, top, plot_w, plot_h = 40, 24, 400, 160
    tallest = max((b.count for b in bins), default=0) or 1
    bar_w = plot_w / len(bins)
    body: list[str] = []
    _bin_axis(body, left=left, top=top, plot_w=plot_w, plot_h=plot_h, y_max_label=str(tallest))
    bottom = top + plot_h
    for i, b in enumerate(bins):
        x = left + bar_w * i + 2
        right_h = plot_h * b.correct / tallest
        wrong_h = plot_h * b.wrong / tallest
        tip = f"{b.low:.1f}–{b.high:.1f}: {b.correct} right, {b.wrong} wrong"
        body.append(
            f'<rect x="{x:.1f}" y="{bottom - right_h:.1f}" width="{bar_w - 4:.1f}" height="{right_h:.1f}"'
            f'{_paint(fill=RIGHT_COLOUR)}><title>{tip}</title></rect>'
        )
        body.append(
            f'<rect x="{x:.1f}" y="{bottom - right_h - wrong_h:.1f}" width="{bar_w - 4:.1f}" '
            f'height="{wrong_h:.1f}"{_paint(fill=WRONG_COLOUR)}><title>{tip}</title></rect>'
        )
    legend_x = left + plot_w + 10
    body.append(f'<rect x="{legend_x}" y="{top}" width="10" height="10"{_paint(fill=RIGHT_COLOUR)}/>')
    body.append(_text(legend_x + 14, top + 9, "right"))
    body.append(f'<rect x="{legend_x}" y="{top + 16}" width="10" height="10"{_paint(fill=WRONG_COLOUR)}/>')
    body.append(_text(legend_x + 14, top + 25, "wrong"))
    return _svg(left + plot_w + 70, bottom + 40, body, "Confidence histogram, right and wrong")


def calibration_svg(*, bins: Sequence[ConfidenceBin]) -> SafeString:
    """Accuracy per confidence bin against the diagonal of perfect calibration; counts above the bars."""
    left, top, plot_w, plot_h = 40, 24, 400, 200
    bar_w = plot_w / len(bins)
    bottom = top + plot_h
    body: list[str] = []
    _bin_axis(body, left=left, top=top, plot_w=plot_w, plot_h=plot_h, y_max_label="1.0")
    for i, b in enumerate(bins):
        if not b.count:
            continue
        x = left + bar_w * i + 2
        bar_h = plot_h * b.accuracy
        tip = f"{b.low:.1f}–{b.high:.1f}: accuracy {b.accuracy:.2f} over {b.count}"
        body.append(
            f'<rect x="{x:.1f}" y="{bottom - bar_h:.1f}" width="{bar_w - 4:.1f}" height="{bar_h:.1f}" '
            f'{_paint(fill=BAR_COLOUR, fill_opacity="0.8")}><title>{tip}</title></rect>'
        )
        body.append(_text(x + (bar_w - 4) / 2, bottom - bar_h - 4, str(b.count), text_anchor="middle"))
    body.append(
        f'<line x1="{left}" y1="{bottom}" x2="{left + plot_w}" y2="{top}"{_paint(stroke=WRONG_COLOUR)} '
        f'stroke-dasharray="4 3"><title>perfect calibration</title></line>'
    )
    return _svg(left + plot_w + 20, bottom + 40, body, "Accuracy per confidence bin")


def coverage_bound_svg(
    *, points: Sequence[tuple[int, float, bool]], max_error: float, chosen: tuple[int, float] | None
) -> SafeString:
    """Auto-accept's preview: images accepted (x) against the guaranteed error, the upper bound (y).

    `points`: (images accepted, bound, tested) per candidate threshold, from the highest
    threshold down; tested ones are drawn solid, the rest (past where the scan stopped,
    no guarantee) faded. The target is a dashed line; `chosen` is marked. The y axis
    shows up to four times the target, higher bounds sit on its top edge.
    """
    left, top, plot_w, plot_h = 56, 20, 420, 200
    bottom = top + plot_h
    x_max = max((images for images, _, _ in points), default=0) or 1
    y_max = min(1.0, 4 * max_error)

    def x(images: int) -> float:
        return left + plot_w * images / x_max

    def y(bound: float) -> float:
        return bottom - plot_h * min(bound, y_max) / y_max

    body = [
        f'<line x1="{left}" y1="{bottom}" x2="{left + plot_w}" y2="{bottom}"{_paint(stroke=AXIS_COLOUR)}/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{bottom}"{_paint(stroke=AXIS_COLOUR)}/>',
        _text(left - 6, top + 4, f"{y_max:.1%}", text_anchor="end"),
        _text(left - 6, bottom, "0", text_anchor="end"),
        _text(left, bottom + 14, "0", text_anchor="middle"),
        _text(left + plot_w, bottom + 14, f"{x_max:,}", text_anchor="middle"),
        _text(left + plot_w / 2, bottom + 30, "images accepted", text_anchor="middle"),
        _text(14, top + plot_h / 2, "guaranteed error", text_anchor="middle",
              transform=f"rotate(-90 14 {top + plot_h / 2:.1f})"),
        f'<line x1="{left}" y1="{y(max_error):.1f}" x2="{left + plot_w}" y2="{y(max_error):.1f}"'
        f'{_paint(stroke=WRONG_COLOUR)} stroke-dasharray="4 3"><title>target {max_error:.1%}</title></line>',
        _text(left + plot_w + 4, y(max_error) + 4, f"target {max_error:.1%}"),
    ]
    for tested, colour, opacity in ((False, AXIS_COLOUR, "0.6"), (True, BAR_COLOUR, "1")):
        line = " ".join(f"{x(images):.1f},{y(bound):.1f}" for images, bound, done in points if done == tested)
        if line:
            paint = _paint(fill="none", stroke=colour, stroke_opacity=opacity)
            body.append(f'<polyline points="{line}" stroke-width="2"{paint}/>')
    for images, bound, tested in points:
        tip = f"{images:,} images, error at most {bound:.2%}" + ("" if tested else " (not tested: no guarantee)")
        body.append(
            f'<circle cx="{x(images):.1f}" cy="{y(bound):.1f}" r="2.5"'
            f'{_paint(fill=BAR_COLOUR if tested else AXIS_COLOUR)}>'
            f"<title>{escape(tip)}</title></circle>"
        )
    if chosen is not None:
        images, bound = chosen
        body.append(
            f'<circle cx="{x(images):.1f}" cy="{y(bound):.1f}" r="5" stroke-width="2"'
            f'{_paint(fill="none", stroke=RIGHT_COLOUR)}>'
            f"<title>{escape(f'chosen: {images:,} images, error at most {bound:.2%}')}</title></circle>"
        )
    return _svg(left + plot_w + 90, bottom + 40, body, "Images accepted against guaranteed error")
