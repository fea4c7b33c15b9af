#!/usr/bin/env bash
# Fill .whl/ with the wheels scripts/gpu_bench.sh installs on a GPU machine that has no network.
#
#   scripts/gpu_wheels.sh            # every pin of requirements.txt but torch/torchvision (users' machines)
#   scripts/gpu_wheels.sh --bench    # only what the GPU benchmark imports: small enough to carry (< 64 MiB)
#   scripts/gpu_wheels.sh --list     # print the pins it would fetch, download nothing
#   scripts/gpu_wheels.sh --dest DIR # somewhere else than .whl/
#
# Run it on a machine that reaches PyPI, then copy the tree with .whl/ to the GPU machine.
# Wheels are for CPython 3.12 on x86-64 Linux (manylinux), whatever this machine runs; pure-Python
# ones are py3-none-any. torch and torchvision (and their nvidia-*, triton) are the GPU machine's own:
# they match its driver. numpy is fetched without --bench, and gpu_bench.sh installs it only where the
# machine has none (its torchvision was built against its own).
#
# --bench leaves out what the benchmark never imports, to stay under the device tool's 64 MiB:
# scikit-learn, pandas and cleanlab (label audit, imported lazily), PyWavelets (ImageHash's wHash;
# the product hashes with dHash), boto3/botocore/s3transfer/jmespath and django-storages
# (MEDIA_STORAGE=s3 only), psycopg (DATABASE_URL only), redis (REDIS_URL only), and their own
# dependencies. scipy stays (34 MiB of the ~52): predictions.statistics imports it when the admin
# loads. tests/test_gpu_bench_script.py runs the CPU smoke with everything left out made unimportable.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DEST=$ROOT/.whl
SET=all
LIST_ONLY=0

while [[ $# -gt 0 ]]; do
    case $1 in
        --bench) SET=bench ;;
        --all) SET=all ;;
        --list) LIST_ONLY=1 ;;
        --dest) DEST=$2; shift ;;
        -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "gpu_wheels.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

# Dependencies requirements.txt leaves unpinned (Django's, django-q2's, import-export's,
# torchmetrics', joblib's, scikit-learn's, psycopg's binary extra) and the benchmark's HTTP client (requirements-dev.txt),
# at the versions `make install` resolves.
EXTRA_PINS=(
    asgiref==3.13.0
    sqlparse==0.6.1
    django-picklefield==3.4.0
    diff-match-patch==20241021
    lightning-utilities==0.15.3
    packaging==26.4
    typing_extensions==4.16.0
    psycopg-binary==3.3.9
    certifi==2026.10.19.post1
    charset-normalizer==3.5.3
    idna==3.20
    cloudpickle==3.1.3
    narwhals==2.29.0
)
# The GPU machine's own: never fetched.
MACHINE_OWN='^(torch|torchvision|triton|nvidia-.*|cuda-.*)$'
# Left out with --bench (see the header). Lower-case names as in requirements.txt.
NOT_FOR_BENCH='^(numpy|pywavelets|scikit-learn|pandas|cleanlab|termcolor|joblib|cloudpickle|narwhals|threadpoolctl|python-dateutil|six|django-storages|boto3|botocore|s3transfer|jmespath|psycopg|psycopg-binary|redis)$'

pins() {
    # requirements.txt's pins ("name[extra]==version"), extras dropped, then the extras above and requests.
    sed -e 's/#.*//' -e 's/[[:space:]]//g' "$ROOT/requirements.txt" | grep -v -e '^$' -e '^-' | sed 's/\[[^]]*\]//'
    printf '%s\n' "${EXTRA_PINS[@]}"
    grep -i '^requests==' "$ROOT/requirements-dev.txt"
}

selected() {
    local pin name
    while read -r pin; do
        name=$(printf '%s' "${pin%%==*}" | tr 'A-Z_' 'a-z-')
        [[ $name =~ $MACHINE_OWN ]] && continue
        [[ $SET == bench && $name =~ $NOT_FOR_BENCH ]] && continue
        printf '%s\n' "$pin"
    done < <(pins) | sort -u -f
}

mapfile -t WANTED < <(selected)
if [[ $LIST_ONLY == 1 ]]; then
    printf '%s\n' "${WANTED[@]}"
    exit 0
fi

PYTHON=${PYTHON:-}
if [[ -z $PYTHON ]]; then
    if [[ -x $ROOT/.venv/bin/python ]]; then PYTHON=$ROOT/.venv/bin/python; else PYTHON=python3; fi
fi

mkdir -p "$DEST"
# One version of each package: an older wheel of a re-pinned package would stop the install.
find "$DEST" -maxdepth 1 -name '*.whl' -delete
echo "Downloading ${#WANTED[@]} wheels ($SET) for CPython 3.12, manylinux x86-64, into $DEST" >&2
"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: \
    --python-version 3.12 --implementation cp --abi cp312 --abi abi3 --abi none \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any \
    -d "$DEST" "${WANTED[@]}"

# Every dependency of every wheel fetched is fetched too, the machine's own packages
# (and, with --bench, those lazily imported packages left out on purpose) aside.
"$PYTHON" - "$DEST" "$SET" "$MACHINE_OWN" "$NOT_FOR_BENCH" <<'EOF'
import re, sys, zipfile
from pathlib import Path

try:
    from packaging.markers import Marker
except ImportError:
    from pip._vendor.packaging.markers import Marker

# The GPU machine's interpreter, whatever runs this.
TARGET = {
    "python_version": "3.12", "python_full_version": "3.12.3", "implementation_name": "cpython",
    "platform_python_implementation": "CPython", "sys_platform": "linux", "platform_system": "Linux",
    "platform_machine": "x86_64", "os_name": "posix", "extra": "",
}
dest, selection, machine_own, not_for_bench = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
norm = lambda name: re.sub(r"[-_.]+", "-", name).lower()
present, missing = {}, []
for wheel in sorted(dest.glob("*.whl")):
    with zipfile.ZipFile(wheel) as archive:
        meta = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        text = archive.read(meta).decode("utf-8", "replace")
    present[norm(re.search(r"^Name: (.+)$", text, re.M).group(1).strip())] = wheel.name
    for line in re.findall(r"^Requires-Dist: (.+)$", text, re.M):
        requirement, _, marker = line.partition(";")
        if marker.strip() and not Marker(marker.strip()).evaluate(TARGET):
            continue  # an extra, another platform, another Python
        needed = norm(re.match(r"[A-Za-z0-9._-]+", requirement.strip()).group(0))
        missing.append((wheel.name, needed))
skip = re.compile(machine_own + ("|" + not_for_bench if selection == "bench" else ""))
uncovered = sorted({(w, n) for w, n in missing if n not in present and not skip.match(n)})
for wheel, needed in uncovered:
    print(f"gpu_wheels.sh: {wheel} needs {needed}, which is not fetched: pin it in EXTRA_PINS", file=sys.stderr)
sys.exit(1 if uncovered else 0)
EOF

total=$(du -cb "$DEST"/*.whl | tail -1 | cut -f1)
mib=$(( (total + 1048575) / 1048576 ))
echo "$(ls "$DEST"/*.whl | wc -l) wheels, ${mib} MiB in $DEST"
if [[ $SET == all && $mib -ge 48 ]]; then
    echo "Note: over 48 MiB. This workplace's device tool carries at most 64 MiB with the tree: use --bench there." >&2
fi
