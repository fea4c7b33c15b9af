"""Agreement between reviewers on overlap images: Cohen's kappa per pair of reviewers and
Krippendorff's alpha over all of them. Read by the admin's statistics page, for Leads
(predictions/admin/reviewer_stats_views.py), beside predictions/selectors/reviewer_stats.py.

Counted: live screen decisions on overlap images (the same decisions as the reviewer
statistics); the statistics themselves are in predictions/statistics/agreement.py.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from django.contrib.auth import get_user_model
from django.db import connection
from django.db.models import Count, QuerySet

from predictions.models import Label, Review
from predictions.selectors.quality import OVERLAP
from predictions.selectors.reviewer_stats import review_columns, screen_decisions
from predictions.statistics.agreement import cohen_kappa, krippendorff_alpha_nominal, krippendorff_alpha_per_class


@dataclass(frozen=True)
class PairAgreement:
    first: str
    second: str
    images: int  # overlap images both decided
    agreed: int
    kappa: float  # nan when undefined (no images, or no variation)


@dataclass
class Agreement:
    pairs: list[PairAgreement] = field(default_factory=list)
    alpha: float = float("nan")
    alpha_per_class: dict[str, float] = field(default_factory=dict)
    images: int = 0  # overlap images with at least two decisions
    decisions: int = 0  # the decisions on those images


def overlap_agreement() -> Agreement:
    """Cohen's kappa per reviewer pair over the overlap images both decided, Krippendorff's
    alpha (nominal) over every overlap image with two or more decisions, overall and per class.

    Two queries: label-pair counts per reviewer pair (a self-join on the image,
    _overlap_pair_counts), and label counts per image. Gold checks and adjudications
    are not independent overlap decisions and are left out.
    """
    tables: dict[tuple[str, str], list[tuple[int, int, int]]] = defaultdict(list)
    for first, second, label_a, label_b, n in _overlap_pair_counts():
        tables[(first, second)].append((label_a, label_b, n))
    pairs = []
    for (first, second), cells in sorted(tables.items()):
        a = [label for label, _, n in cells for _ in range(n)]
        b = [label for _, label, n in cells for _ in range(n)]
        agreed = sum(n for label_a, label_b, n in cells if label_a == label_b)
        pairs.append(PairAgreement(first, second, len(a), agreed, cohen_kappa(a, b)))
    units: dict[int, list[int]] = defaultdict(list)
    overlap = screen_decisions().filter(queue_order=OVERLAP).order_by()
    for image_id, label_id, n in _plain_rows(overlap.values_list("image_id", "label_id").annotate(n=Count("*"))):
        units[image_id].extend([label_id] * n)
    pairable = {image_id: labels for image_id, labels in units.items() if len(labels) >= 2}
    names = dict(Label.objects.values_list("pk", "name"))
    per_class = krippendorff_alpha_per_class(pairable)
    return Agreement(
        pairs=pairs,
        alpha=krippendorff_alpha_nominal(pairable),
        alpha_per_class={names.get(label, str(label)): value for label, value in per_class.items()},
        images=len(pairable),
        decisions=sum(len(labels) for labels in pairable.values()),
    )


def _overlap_pair_counts() -> list[tuple[str, str, int, int, int]]:
    """(first reviewer's name, second's, first's label id, second's, images) for each pair of
    reviewers (the first with the lower id) and pair of labels, over the overlap images both
    decided (live screen overlap decisions), in one query.

    Written in SQL because it is a self-join of decisions on image_id: the ORM reaches
    another review of the same image only through the image row, a lookup per decision
    (a third of this query's time on SQLite). Both sides read the (queue_order, image)
    index; the names are looked up per result row, not per pair of decisions.
    """
    quote = connection.ops.quote_name
    column = review_columns("image", "reviewer", "label", "queue_order", "source", "undone_at")
    users = get_user_model()._meta
    username, user_id = quote(users.get_field("username").column), quote(users.pk.column)

    def name_of(side: str) -> str:
        return f"(SELECT u.{username} FROM {quote(users.db_table)} u WHERE u.{user_id} = {side}.{column['reviewer']})"

    def live_overlap(side: str) -> str:
        return (
            f"{side}.{column['queue_order']} = %s AND {side}.{column['source']} = %s"
            f" AND {side}.{column['undone_at']} IS NULL"
        )

    sql = f"""
        SELECT {name_of("a")}, {name_of("b")}, a.{column["label"]}, b.{column["label"]}, COUNT(*)
        FROM {quote(Review._meta.db_table)} a
        INNER JOIN {quote(Review._meta.db_table)} b ON b.{column["image"]} = a.{column["image"]}
        WHERE {live_overlap("a")} AND {live_overlap("b")} AND b.{column["reviewer"]} > a.{column["reviewer"]}
        GROUP BY a.{column["reviewer"]}, b.{column["reviewer"]}, a.{column["label"]}, b.{column["label"]}
    """
    with connection.cursor() as cursor:
        cursor.execute(sql, [OVERLAP, Review.Source.SCREEN] * 2)
        return cursor.fetchall()


def _plain_rows(queryset: QuerySet) -> list[tuple]:
    """The rows of a values_list queryset as the database returns them, without the ORM's
    per-row conversion: for the label counts per overlap image (one row per image, 10,000
    and more) that conversion took twice as long as the query."""
    sql, params = queryset.query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()
