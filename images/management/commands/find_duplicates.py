"""Print the near-duplicate pairs among the stored images (images.duplicates)."""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from images.duplicates import duplicates_find
from images.models import Image
from images.services import images_phash_backfill
from ml.hashing import HASH_BITS, NEAR_DUPLICATE_DISTANCE
from reviewtool.batching import IN_QUERY_MAX_IDS, id_chunks


class Command(BaseCommand):
    help = (
        "Print the pairs of look-alike images: 'exact' when their perceptual hashes are equal (the same picture "
        "in another file; identical files are never stored twice), 'near' when they differ in at most "
        f"{NEAR_DUPLICATE_DISTANCE} of {HASH_BITS} bits. Each image is paired with an earlier one "
        "(image_id > duplicate_of); a group of equal hashes is listed as pairs with its first image."
    )

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", dest="as_json",
                            help='a JSON list of {"image_id", "duplicate_of", "distance", "kind"}')  # fmt: skip
        parser.add_argument("--backfill", action="store_true",
                            help="first compute the missing hashes of images stored before hashes were")  # fmt: skip
        parser.add_argument("--distance", type=int, default=NEAR_DUPLICATE_DISTANCE,
                            help=f"most bits two hashes may differ in (default {NEAR_DUPLICATE_DISTANCE})")  # fmt: skip

    def handle(self, *args, as_json: bool, backfill: bool, distance: int, **options):
        if not 0 <= distance < HASH_BITS:
            raise CommandError(f"--distance must be between 0 and {HASH_BITS - 1}")
        quiet = options["verbosity"] == 0 or as_json
        if backfill:
            self._backfill(quiet=quiet)
        pairs = duplicates_find(max_distance=distance).pairs
        if as_json:
            self.stdout.write(json.dumps([pair.as_dict() for pair in pairs]))
            return
        names = {}
        paired = sorted({pk for pair in pairs for pk in (pair.image_id, pair.duplicate_of)})
        for ids in id_chunks(paired, IN_QUERY_MAX_IDS):
            names.update(Image.objects.filter(pk__in=ids).values_list("pk", "original_name"))
        for pair in pairs:
            self.stdout.write(
                f"image #{pair.image_id} {names.get(pair.image_id, '')} looks like image #{pair.duplicate_of} "
                f"{names.get(pair.duplicate_of, '')}: distance {pair.distance} ({pair.kind})"
            )
        unhashed = Image.objects.filter(phash__isnull=True).count()
        summary = f"{len(pairs)} pair(s)."
        if unhashed:
            summary += f" {unhashed} image(s) have no hash yet and were not compared: run with --backfill."
        self.stdout.write(summary)

    def _backfill(self, *, quiet: bool) -> None:
        total = Image.objects.filter(phash__isnull=True).count()
        with tqdm(total=total, unit="image", disable=quiet or not total) as progress:
            result = images_phash_backfill(on_image=progress.update)
        # Written to stderr, so --json output stays one JSON document.
        self.stderr.write(f"Hashed {result.hashed} image(s); {result.failed} could not be read (see the log).")
