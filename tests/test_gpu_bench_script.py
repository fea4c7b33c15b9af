"""scripts/gpu_bench.sh and bench.gpu, on the CPU: no GPU is needed or used here.

The smoke run goes through every code path of the GPU run (in-process limit, qcluster, gunicorn,
precision, decode_jpeg) on a few small photos, with the packages that ``gpu_wheels.sh --bench``
leaves out made unimportable, so the wheels carried to a GPU machine are known to be enough.
No timing is asserted.
"""

import io
import json
import os
import re
import subprocess
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
from PIL import Image as PILImage

REPO = Path(__file__).resolve().parent.parent
BENCH_SCRIPT = REPO / "scripts" / "gpu_bench.sh"
WHEELS_SCRIPT = REPO / "scripts" / "gpu_wheels.sh"
# Installed with torchvision on any GPU machine that has it, so never blocked.
MACHINE_OWN = {"numpy"}

BLOCKER = '''
import os, sys

# As if not installed: every finder answers None for these (importlib.util.find_spec too).
_NAMES = frozenset(os.environ["GPU_BENCH_TEST_BLOCKED"].split(","))


class _Hiding:
    def __init__(self, finder):
        self._finder = finder

    def find_spec(self, fullname, path=None, target=None):
        if fullname.partition(".")[0] in _NAMES:
            return None
        return self._finder.find_spec(fullname, path, target)

    def __getattr__(self, name):
        return getattr(self._finder, name)


sys.meta_path[:] = [_Hiding(finder) if hasattr(finder, "find_spec") else finder for finder in sys.meta_path]
'''


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _wheel_list(*options: str) -> set[str]:
    out = subprocess.run(["bash", str(WHEELS_SCRIPT), "--list", *options], capture_output=True, text=True, check=True)
    return {_norm(line.partition("==")[0]) for line in out.stdout.split()}


def _left_out_modules() -> set[str]:
    """Top-level modules of the distributions ``--bench`` leaves out, as installed here."""
    left_out = _wheel_list() - _wheel_list("--bench") - MACHINE_OWN
    return {
        module
        for module, dists in packages_distributions().items()
        if any(_norm(dist) in left_out for dist in dists) and module.isidentifier()
    }


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("DJANGO_", "INFERENCE_"))}
    return {**env, "PYTHON": sys.executable, "GPU_BENCH_JSON": str(tmp_path / "gpu.json"), **extra}


def test_cpu_smoke_prints_the_table_with_every_row(tmp_path):
    blocked = _left_out_modules()
    assert {"sklearn", "pandas", "boto3", "pywt"} <= blocked  # what --bench is for
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(BLOCKER)
    pythonpath = os.pathsep.join(filter(None, [str(tmp_path / "site"), os.environ.get("PYTHONPATH")]))
    env = _env(tmp_path, PYTHONPATH=pythonpath, GPU_BENCH_TEST_BLOCKED=",".join(sorted(blocked)))

    result = subprocess.run(
        ["bash", str(BENCH_SCRIPT), "--cpu-smoke", "--no-install"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    table = result.stdout.partition("## GPU run (smoke;")[2]
    assert "CPU " in table.splitlines()[0] and "no GPU, device cpu" in table.splitlines()[0]
    for row in (
        "| 1 pipeline | qcluster (from upload end) / in-process limit",
        "| 1 pipeline | qcluster end to end",
        "| 2 API | JSON API (2 per request, gunicorn) / tutorial view, both on cpu",
        "| 2 API | background pipeline (from upload end) / tutorial view",
        "| 3 precision | fp16 / fp32 model throughput, batch 2",
        "| 3 precision | bf16 / fp32 model throughput, batch 2",
        "| 4 decode | JPEG to model input: decode_jpeg on cpu / Pillow draft",
        "| 4 decode | decode_jpeg on cpu + predict",
    ):
        assert row in table, f"missing row {row!r} in\n{table}"
    saved = json.loads((tmp_path / "gpu.json").read_text())
    assert saved["size"] == "smoke" and len(saved["rows"]) == 8


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has CUDA")
def test_the_gpu_run_refuses_a_machine_without_cuda(tmp_path):
    result = subprocess.run(["bash", str(BENCH_SCRIPT), "--no-install"], cwd=REPO, env=_env(tmp_path),
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 4
    assert "no CUDA device" in result.stderr and "--cpu-smoke" in result.stderr


def test_missing_wheels_say_how_to_make_them(tmp_path):
    env = _env(tmp_path, GPU_BENCH_WHEELS=str(tmp_path / "no-wheels"), GPU_BENCH_SITE=str(tmp_path / "site"))
    result = subprocess.run(["bash", str(BENCH_SCRIPT), "--install"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 3
    assert "scripts/gpu_wheels.sh --bench" in result.stderr
    assert not (tmp_path / "site").exists()


def test_the_wheels_cover_every_pin_but_torch_and_torchvision():
    pins = set()
    for line in (REPO / "requirements.txt").read_text().splitlines():
        line = line.partition("#")[0].strip()
        if line and not line.startswith("-"):
            pins.add(_norm(re.sub(r"\[.*\]", "", line.partition("==")[0])))
    everything, bench = _wheel_list(), _wheel_list("--bench")
    assert pins - {"torch", "torchvision"} <= everything
    assert not {"torch", "torchvision"} & (everything | bench)
    assert bench < everything
    assert {"django", "django-q2", "gunicorn", "pillow", "requests"} <= bench
    assert not {"scikit-learn", "pandas", "numpy", "botocore"} & bench


# --- the device decode path, run on the CPU -------------------------------------------------


def _jpeg(orientation: int = 1, size=(80, 48), fmt="JPEG") -> bytes:
    """A left-to-right red ramp over a top-to-bottom green ramp: every flip and turn shows."""
    import numpy as np

    x = np.linspace(0, 255, size[0], dtype=np.float32)[None, :].repeat(size[1], 0)
    y = np.linspace(0, 255, size[1], dtype=np.float32)[:, None].repeat(size[0], 1)
    pixels = np.stack([x, y, np.full_like(x, 90)], axis=2).astype(np.uint8)
    image = PILImage.fromarray(pixels)
    out = io.BytesIO()
    if fmt == "JPEG":
        exif = PILImage.Exif()
        exif[0x0112] = orientation
        image.save(out, format="JPEG", quality=95, exif=exif.tobytes())
    else:
        image.save(out, format=fmt)
    return out.getvalue()


@pytest.mark.parametrize("orientation", range(1, 9))
def test_decode_jpeg_inputs_match_the_pillow_path(orientation):
    from bench.gpu import jpeg_inputs
    from ml.decode import open_image
    from ml.preprocess import Preprocessing, eval_transform

    data = _jpeg(orientation)
    preprocessing = Preprocessing(input_size=32)
    ours = jpeg_inputs([("ramp.jpg", data)], preprocessing, decode_on="cpu")[0]
    reference = eval_transform(preprocessing)(open_image(data, name="ramp.jpg"))
    assert ours.shape == reference.shape == (3, 32, 32)
    # Both resize with antialiasing; a wrong flip or turn moves the ramps by whole units.
    assert (ours - reference).abs().mean() < 0.05


def test_decode_on_cuda_is_refused_cleanly_without_cuda():
    import torch

    from bench.gpu import decode_device, jpeg_inputs
    from ml.preprocess import Preprocessing

    with pytest.raises(ValueError, match="decode_on must be one of"):
        decode_device("gpu")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ValueError, match="needs a CUDA device"):
        jpeg_inputs([("a.jpg", _jpeg())], Preprocessing(input_size=32), decode_on="cuda")


def test_decode_jpeg_path_refuses_what_it_cannot_take():
    from bench.gpu import jpeg_inputs
    from ml.decode import ImageDecodeError
    from ml.preprocess import Preprocessing

    preprocessing = Preprocessing(input_size=32)
    with pytest.raises(ImageDecodeError, match="not a JPEG"):
        jpeg_inputs([("a.png", _jpeg(fmt="PNG"))], preprocessing, decode_on="cpu")
    with pytest.raises(ImageDecodeError, match="too large"):
        jpeg_inputs([("a.jpg", _jpeg())], preprocessing, decode_on="cpu", max_pixels=1000)
    with pytest.raises(ImageDecodeError, match="corrupt"):
        jpeg_inputs([("a.jpg", b"\xff\xd8\xff" + b"\0" * 40)], preprocessing, decode_on="cpu")


def test_top1_agreement_of_a_precision_with_itself_is_complete(tmp_path, tiny_checkpoint_bytes, make_image):
    from bench.gpu import top1_agreement

    checkpoint = tmp_path / "tiny.pth"
    checkpoint.write_bytes(tiny_checkpoint_bytes)
    labelled = []
    for seed in range(6):
        path = tmp_path / f"{seed}.jpg"
        path.write_bytes(make_image(seed=seed))
        labelled.append((path, "circle"))
    shares = top1_agreement(checkpoint, labelled, device="cpu", precisions=("fp32", "float32"))
    assert shares == {"float32": 1.0}


def test_precision_rows_hold_half_precision_to_ieee_fp32_where_it_was_timed():
    from bench.gpu import SIZES, STRICT_FP32, precision_rows

    size = SIZES["full"]
    rates = {
        "fp32": {b: 2000.0 for b in size.batch_sizes},  # TF32 convolutions
        STRICT_FP32: {b: 1000.0 for b in size.batch_sizes},
        "fp16": {b: 4000.0 for b in size.batch_sizes},
        "bf16": {b: 3000.0 for b in size.batch_sizes},
    }
    rows = precision_rows({"device": rates}, size)

    targeted = [row for row in rows if row.target != "-"]
    assert len(targeted) == 2 * len(size.batch_sizes)
    assert {row.ratio for row in targeted if row.comparison.startswith("fp16")} == {4.0}
    assert {row.ratio for row in targeted if row.comparison.startswith("bf16")} == {3.0}
    assert all(STRICT_FP32 in row.comparison for row in targeted)
    tf32 = [row for row in rows if row.target == "-"]
    assert [(row.comparison.split(" /")[0], row.ratio) for row in tf32] == [("fp16", 2.0), ("bf16", 1.5)]

    del rates[STRICT_FP32]  # the CPU: no TF32, fp32 is the reference
    rows = precision_rows({"device": rates}, size)
    assert all(row.target != "-" for row in rows)
    assert {row.ratio for row in rows if row.comparison.startswith("fp16")} == {2.0}
