"""The tutorial's inference view, as a plain function: the baseline of benchmark 2.

Not product code. It reproduces, per request, what the view in
/work/shared/reference/tutorial-serving-a-model-with-django.txt does:

- empty the temp folder of earlier requests, make a folder for this one and write
  every uploaded file into it under a random name, then read the files back;
- construct the model (ResNet18 with the custom head, five classes), ``torch.load``
  the checkpoint, ``load_state_dict``, ``model.eval()``: on every request;
- run fp32 inference with the usual evaluation preprocessing (resize 256, centre
  crop 224, ImageNet normalisation), one image at a time, full-size decode.

Django's request handling is left out, which can only make the baseline faster.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image

from ml.models import DEFAULT_ARCH, build_model
from ml.preprocess import Preprocessing, eval_transform

_UPLOAD_CHUNK_BYTES = 64 * 1024  # Django's UploadedFile.chunks() default


def tutorial_request(
    files: Sequence[tuple[str, bytes]],
    *,
    weights_path: Path,
    temp_dir: Path,
    class_names: Sequence[str],
    device: str = "cpu",
) -> list[str]:
    """One POST to the tutorial's view: the uploaded ``(name, bytes)`` in, labels out."""
    temp_dir.mkdir(parents=True, exist_ok=True)
    for earlier in temp_dir.iterdir():
        if earlier.is_dir():
            shutil.rmtree(earlier)
    request_dir = temp_dir / uuid.uuid4().hex
    request_dir.mkdir(parents=True)
    for name, data in files:
        final_name = f"image-{uuid.uuid4().hex[:8]}{Path(name).suffix.lower()}"
        with open(request_dir / final_name, "wb") as dest:
            for start in range(0, len(data), _UPLOAD_CHUNK_BYTES):
                dest.write(data[start : start + _UPLOAD_CHUNK_BYTES])

    images = load_images_from_path(request_dir)
    test_transforms = eval_transform(Preprocessing(input_size=224))

    model = build_model(DEFAULT_ARCH, num_classes=len(class_names)).to(device)
    # The tutorial omits weights_only; torch >= 2.6 defaults to it, so spelling it out changes nothing.
    checkpoint = torch.load(weights_path, map_location=device, weights_only=True)
    model.load_state_dict(checkpoint["model_state_dict"])
    model.eval()

    return infer_on_unknown_data(images, model, device, test_transforms, class_names)


def load_images_from_path(folder: Path) -> list[Image.Image]:
    return [Image.open(path).convert("RGB") for path in sorted(folder.iterdir())]


def infer_on_unknown_data(images, model, device, transforms, class_names) -> list[str]:
    labels = []
    with torch.no_grad():
        for image in images:
            logits = model(transforms(image).unsqueeze(0).to(device))
            labels.append(class_names[int(logits.argmax(dim=1))])
    return labels
