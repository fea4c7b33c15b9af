#!/usr/bin/env bash
# The GPU run: pipeline, API, precision and JPEG decoding on an NVIDIA GPU, one markdown table.
#
#   scripts/gpu_bench.sh               # on the GPU machine: install from .whl/, run bench.gpu on cuda (< 8 min)
#   scripts/gpu_bench.sh --cpu-smoke   # the same code paths, tiny, on the CPU with this machine's Python
#   options: --no-install (use what the interpreter has)  --install (install from .whl/ even so)
#            --agreement (top-1 agreement on the trained demo model; trains it where not cached: minutes)
#   env:     PYTHON (default python3; .venv/bin/python with --cpu-smoke when there is one)
#            GPU_BENCH_DEVICE=cuda|cpu (cpu = --cpu-smoke)   GPU_BENCH_WHEELS (default .whl)
#            GPU_BENCH_SITE (install target, default /tmp/gpu-bench-site)   GPU_BENCH_TIMEOUT (s, default 480)
#            GPU_BENCH_JSON (the raw numbers; default bench/results/gpu-DEVICE.json)
#
# The GPU machine needs Python 3.12 with torch and torchvision (CUDA builds) and nothing else, no
# network: the other requirements come as wheels in .whl/, made on a networked machine by
# scripts/gpu_wheels.sh (--bench: only what this run imports, ~52 MiB). Nothing is downloaded here.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# The run measures the GPU on the embedded defaults (SQLite, the ORM broker): a database or broker
# set for this shell (CI's PostgreSQL and Redis) is neither needed nor installed from .whl/.
unset DATABASE_URL REDIS_URL

DEVICE=${GPU_BENCH_DEVICE:-cuda}
INSTALL=auto
EXTRA=()
while [[ $# -gt 0 ]]; do
    case $1 in
        --cpu-smoke) DEVICE=cpu ;;
        --no-install) INSTALL=no ;;
        --install) INSTALL=yes ;;
        --agreement) EXTRA+=(--agreement) ;;
        -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "gpu_bench.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
case $DEVICE in
    cuda) SIZE=full ;;
    cpu) SIZE=smoke ;;
    *) echo "gpu_bench.sh: GPU_BENCH_DEVICE must be cuda or cpu, not '$DEVICE'" >&2; exit 2 ;;
esac

if [[ -z ${PYTHON:-} ]]; then
    if [[ $DEVICE == cpu && -x $ROOT/.venv/bin/python ]]; then PYTHON=$ROOT/.venv/bin/python; else PYTHON=python3; fi
fi
WHEELS=${GPU_BENCH_WHEELS:-$ROOT/.whl}
SITE=${GPU_BENCH_SITE:-/tmp/gpu-bench-site}
# What the run imports beyond torch and torchvision (the rest of requirements.txt is imported lazily).
PROBE='import django, django_q, import_export, whitenoise, gunicorn, dj_database_url, requests, imagehash, PIL, tqdm'

say() { echo "gpu_bench.sh: $*" >&2; }

install_wheels() {
    shopt -s nullglob
    local wheels=("$WHEELS"/*.whl) chosen=() wheel base
    shopt -u nullglob
    if [[ ${#wheels[@]} -eq 0 ]]; then
        say "no wheels in $WHEELS, and $PYTHON cannot import what the benchmark needs."
        say "On a machine with network, in this tree: scripts/gpu_wheels.sh --bench (or without --bench for"
        say "every pin), then copy the tree with .whl/ here; or run with --no-install where the packages are."
        exit 3
    fi
    for wheel in "${wheels[@]}"; do
        base=$(basename "$wheel")
        case $base in
            torch-*|torchvision-*|triton-*|nvidia_*) continue ;;  # the machine's own, matched to its driver
            numpy-*) "$PYTHON" -c 'import numpy' 2>/dev/null && continue ;;  # its torchvision's numpy stays
        esac
        chosen+=("$wheel")
    done
    say "installing ${#chosen[@]} wheels from $WHEELS into $SITE (no index, no network)"
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$SITE" "${chosen[@]}"
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
}

if [[ $INSTALL == yes ]] || { [[ $INSTALL == auto ]] && ! "$PYTHON" -c "$PROBE" 2>/dev/null; }; then
    install_wheels
    if ! "$PYTHON" -c "$PROBE"; then
        say "$PYTHON still cannot import what the benchmark needs (above); see scripts/gpu_wheels.sh"
        exit 3
    fi
fi

export INFERENCE_DEVICE=$DEVICE
export PYTHONUNBUFFERED=1
if [[ $DEVICE == cpu ]]; then
    export CUDA_VISIBLE_DEVICES=""  # the in-process limit picks its device by itself: keep it off a GPU
    # A smoke only runs the code: one thread a process keeps it quick on a busy machine.
    export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
elif ! "$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    say "torch sees no CUDA device here (torch.cuda.is_available() is False)."
    say "Run it on an NVIDIA GPU machine, or check the code paths on the CPU with --cpu-smoke."
    exit 4
fi

say "python $("$PYTHON" -c 'import sys; print(sys.version.split()[0])'), INFERENCE_DEVICE=$DEVICE, size $SIZE"
exec timeout "${GPU_BENCH_TIMEOUT:-480}" "$PYTHON" -m bench.gpu --size "$SIZE" \
    --json-out "${GPU_BENCH_JSON:-bench/results/gpu-$DEVICE.json}" ${EXTRA[@]+"${EXTRA[@]}"}
