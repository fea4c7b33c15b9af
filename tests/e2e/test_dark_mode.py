"""The metrics page's charts in the browser's dark and light colour schemes (issue 17 item 1).

Every text element of the page's SVG charts is checked against what lies behind
it, as Chromium paints it: the chart's own shape under it (a heatmap cell, blended
with its fill-opacity over the page), else the page's background. The contrast
must reach WCAG AA's 4.5 for normal text; relative luminance and the ratio are
computed here from the computed colours, as WCAG 2 defines them.
"""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from tests.e2e.conftest import ACTION_TIMEOUT_MS, VIEWPORT
from tests.e2e.test_workflow import sign_in
from tests.predictions.conftest import (  # noqa: F401 (fixtures)
    image_factory,
    prediction_factory,
    stub_model_version_factory,
)

pytestmark = [
    pytest.mark.e2e,
    # serialized_rollback: the flush after a transactional test would otherwise
    # drop the role groups the data migration created.
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
]

WCAG_AA_NORMAL_TEXT = 4.5

# For each <text> of the charts: its fill, and what is painted behind its middle:
# the first chart shape under it (fill and opacity) and the page's background.
TEXT_BACKDROPS_JS = """
() => {
    const pageBackground = (element) => {
        for (let node = element; node; node = node.parentElement) {
            const colour = getComputedStyle(node).backgroundColor;
            if (colour && colour !== "transparent" && !colour.endsWith(", 0)")) return colour;
        }
        return getComputedStyle(document.documentElement).backgroundColor;
    };
    return [...document.querySelectorAll("#content-main svg text")].map((text) => {
        text.scrollIntoView({block: "center", inline: "center"});
        const box = text.getBoundingClientRect();
        const under = document.elementsFromPoint(box.x + box.width / 2, box.y + box.height / 2)
            .find((element) => element !== text && element.closest("svg") === text.closest("svg")
                  && ["rect", "circle", "polygon", "path"].includes(element.tagName));
        const style = getComputedStyle(text);
        return {
            text: text.textContent,
            chart: text.closest("svg").getAttribute("aria-label"),
            fill: style.fill,
            fillOpacity: style.fillOpacity,
            shape: under ? {fill: getComputedStyle(under).fill, opacity: getComputedStyle(under).fillOpacity} : null,
            background: pageBackground(text.closest("svg")),
        };
    });
}
"""


def rgb(css: str) -> tuple[float, float, float]:
    numbers = re.findall(r"[\d.]+", css)
    assert len(numbers) >= 3, f"not an rgb() colour: {css!r}"
    return tuple(float(n) for n in numbers[:3])


def blend(top: tuple[float, ...], opacity: float, bottom: tuple[float, ...]) -> tuple[float, ...]:
    return tuple(opacity * t + (1 - opacity) * b for t, b in zip(top, bottom))


def relative_luminance(colour: tuple[float, ...]) -> float:
    """WCAG 2's relative luminance of an sRGB colour (0-255 channels)."""

    def linear(channel: float) -> float:
        c = channel / 255
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (linear(c) for c in colour)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast_ratio(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    light, dark = sorted((relative_luminance(a), relative_luminance(b)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


def test_relative_luminance_and_contrast_match_wcags_examples():
    assert contrast_ratio((0, 0, 0), (255, 255, 255)) == pytest.approx(21.0)
    assert contrast_ratio((0x77, 0x77, 0x77), (255, 255, 255)) == pytest.approx(4.48, abs=0.01)
    assert relative_luminance((255, 255, 255)) == pytest.approx(1.0)


@pytest.fixture
def metrics_url(prediction_factory):
    """A version with right and wrong predictions over several classes: zero cells in the
    confusion matrix, empty and full confidence bins, an 'other' row."""
    from predictions.models import Label

    cases = [("circle", "circle", 0.95)] * 6 + [("circle", "square", 0.55), ("square", "square", 0.85),
             ("square", "star", 0.45), ("triangle", "triangle", 0.75), ("star", "circle", 0.35),
             ("cross", None, 0.65)]  # fmt: skip
    for n, (predicted, reviewed, confidence) in enumerate(cases):
        image = prediction_factory(label=predicted, confidence=confidence, name=f"m{n}.jpg").image
        image.final_label = (
            Label.objects.get(name=reviewed) if reviewed else Label.objects.create(name="not-a-class", order=99)
        )
        image.save(update_fields=["final_label"])
    return reverse("admin:predictions_modelversion_metrics", args=[image.predictions.get().model_version_id])


@pytest.mark.parametrize("scheme", ["dark", "light"])
def test_every_chart_text_on_the_metrics_page_is_readable(
    browser, live_server, lead, metrics_url, scheme, screenshots_dir
):
    context = browser.new_context(viewport=VIEWPORT, base_url=live_server.url, color_scheme=scheme)
    context.set_default_timeout(ACTION_TIMEOUT_MS)
    try:
        page = context.new_page()
        sign_in(page, lead.username)
        page.goto(metrics_url)
        texts = page.evaluate(TEXT_BACKDROPS_JS)
        if scheme == "dark":
            page.screenshot(path=screenshots_dir / "metrics-dark.png", full_page=True)
    finally:
        context.close()

    charts = {text["chart"] for text in texts}
    assert charts == {"Confusion matrix", "Confidence histogram, right and wrong", "Accuracy per confidence bin"}
    page_background = rgb(texts[0]["background"])
    # The scheme took effect: the admin's dark page is near-black, its light one white.
    assert (relative_luminance(page_background) < 0.05) == (scheme == "dark"), page_background
    shown = {text["text"] for text in texts}
    assert {"predicted", "reviewed", "confidence", "right", "wrong", "0", "0.0", "circle"} <= shown

    unreadable = []
    for text in texts:
        backdrop = rgb(text["background"])
        if text["shape"] is not None:
            backdrop = blend(rgb(text["shape"]["fill"]), float(text["shape"]["opacity"]), backdrop)
        colour = blend(rgb(text["fill"]), float(text["fillOpacity"]), backdrop)
        ratio = contrast_ratio(colour, backdrop)
        if ratio < WCAG_AA_NORMAL_TEXT:
            unreadable.append(f"{text['chart']}: {text['text']!r} {text['fill']} on {backdrop} ({ratio:.2f})")
    assert not unreadable, "\n".join(unreadable)
