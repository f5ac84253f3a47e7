"""Write scikit-image's sample photographs as an out-of-distribution image folder.

    python scripts/sample_photos.py DIR

Every 2-D sample of ``skimage.data`` that ships with scikit-image (nothing is downloaded) is
saved as ``DIR/photos/<name>.png`` in RGB (grey images repeated over three channels, RGBA
images without alpha). ``zoo evaluate TARGET --ood-data folder:DIR`` then scores how well the
target tells them from its own test images.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

# the samples stored inside scikit-image itself (the others are fetched on first use)
SAMPLES = (
    "astronaut", "brick", "camera", "cat", "checkerboard", "clock", "coffee", "coins",
    "colorwheel", "grass", "gravel", "horse", "hubble_deep_field", "immunohistochemistry",
    "logo", "moon", "page", "retina", "rocket", "text",
)  # fmt: skip


def as_rgb(image: np.ndarray) -> np.ndarray:
    """uint8 ``(H, W, 3)`` of a grey, boolean, RGB or RGBA sample."""
    image = np.asarray(image)
    if image.dtype == bool:
        image = image.astype(np.uint8) * 255
    elif image.dtype != np.uint8:
        image = (255 * (image - image.min()) / max(float(np.ptp(image)), 1e-12)).astype(np.uint8)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    return image[:, :, :3]


def write_photos(out: Path) -> Path:
    """``out/photos/<name>.png`` for every sample; returns that folder."""
    import skimage.data

    folder = Path(out) / "photos"
    folder.mkdir(parents=True, exist_ok=True)
    for name in SAMPLES:
        Image.fromarray(as_rgb(getattr(skimage.data, name)())).save(folder / f"{name}.png")
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    folder = write_photos(args.out)
    print(f"wrote {len(SAMPLES)} photographs to {folder}")


if __name__ == "__main__":
    main()
