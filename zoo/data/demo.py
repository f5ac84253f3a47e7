"""The embedded demo data set: synthetic dermoscopy-like images, generated on first use.

Seven classes named like HAM10000's (akiec, bcc, bkl, df, mel, nv, vasc), each drawn with
the textbook cue a dermatologist would name: a regular brown nevus, an asymmetric
multicoloured melanoma with an irregular border, a tan waxy keratosis with milia, a pink
carcinoma with branching vessels, a red scaly keratosis, a small dermatofibroma with a white
centre, a cluster of red–purple vascular lobules. Some images carry the black dermoscope
vignette that border cropping removes. Lesions have one to three images each, so splits
must be grouped. Everything is seeded: the same files every time, no download, no blobs.

The set is written in the HAM10000 layout (``HAM10000_metadata.csv`` + ``images/``), so it
goes through the same reader as the real data.

``generate(folder, fine=True)`` (``--data demo:fine``) writes a variant with fine labels for
the taxonomy partition: nevi drawn as junctional (small, dark), compound (textured) or dermal
(pale, soft-edged) and keratoses as seborrheic (textured) or solar lentigo (flat, light), listed
in ``labels.csv`` (image, label, group). The default set is unchanged by it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from zoo.store.workspace import atomic_write_csv

VERSION = 1
WIDTH, HEIGHT = 120, 90
COUNTS = {"nv": 150, "mel": 60, "bkl": 60, "bcc": 45, "akiec": 40, "vasc": 35, "df": 30}
# Fine sub-classes of the ``fine`` variant: style changes over the class's own style.
FINE_STYLES = {
    "nv": {
        "nv_junctional": dict(colour=(90, 55, 38), radius=17, texture=6),
        "nv_compound": dict(colour=(125, 82, 56), irregularity=0.12, texture=12),
        "nv_dermal": dict(colour=(190, 145, 125), radius=25, sharpness=2.5, texture=3),
    },
    "bkl": {
        "bkl_seborrheic": dict(colour=(150, 112, 75), texture=18, sharpness=7),
        "bkl_solar_lentigo": dict(colour=(200, 158, 112), sharpness=2, texture=3),
    },
}
# Profile applied when the user does not choose: small images, a short schedule.
DEFAULTS = {"image_size": 64, "epochs": 6}


def _lesion_mask(rng, yy, xx, cy, cx, radius, irregularity, harmonics=6):
    """A blob whose radius varies with angle: smooth for nevi, ragged for melanoma."""
    theta = np.arctan2(yy - cy, xx - cx)
    r = np.ones_like(theta)
    for k in range(2, 2 + harmonics):
        r += irregularity * rng.normal() / k * np.sin(k * theta + rng.uniform(0, 2 * np.pi))
    dist = np.hypot(yy - cy, (xx - cx) * rng.uniform(0.8, 1.2))
    return dist / (radius * r)  # < 1 inside the lesion


def _paint(label: str, rng: np.random.Generator, params: dict) -> np.ndarray:
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH].astype(float)
    skin = np.array(params["skin"])
    image = skin + rng.normal(0, 4, (HEIGHT, WIDTH, 1)) + rng.normal(0, 2, (HEIGHT, WIDTH, 3))
    cy = HEIGHT / 2 + rng.normal(0, 4)
    cx = WIDTH / 2 + rng.normal(0, 5)
    radius = params["radius"] * rng.uniform(0.9, 1.1)

    def blend(mask, colour, alpha=1.0):
        nonlocal image
        m = (np.clip(mask, 0, 1) * alpha)[..., None]
        image = image * (1 - m) + np.asarray(colour, float) * m

    if label == "vasc":
        for _ in range(int(rng.integers(4, 8))):
            ly, lx = cy + rng.normal(0, radius / 2.5), cx + rng.normal(0, radius / 2.5)
            d = np.hypot(yy - ly, xx - lx) / (radius * rng.uniform(0.25, 0.45))
            blend(1.4 - d, params["colour"] + rng.normal(0, 12, 3))
        return image
    d = _lesion_mask(rng, yy, xx, cy, cx, radius, params["irregularity"])
    inside = np.clip((1 - d) * params["sharpness"], 0, 1)
    texture = rng.normal(0, params["texture"], (HEIGHT, WIDTH, 1))
    blend(inside, params["colour"] + texture)
    if label == "mel":  # blue-grey veil and black dots, off-centre: asymmetry
        for colour in ((85, 95, 125), (30, 22, 20)):
            oy, ox = cy + rng.normal(0, radius / 3), cx + rng.normal(0, radius / 3)
            blob = _lesion_mask(rng, yy, xx, oy, ox, radius * rng.uniform(0.3, 0.5), 0.5)
            blend((1 - blob) * 3 * inside, colour)
    elif label == "bkl":  # milia-like bright dots
        dots = (rng.random((HEIGHT, WIDTH)) > 0.985) * inside
        blend(dots, (235, 225, 190))
    elif label == "bcc":  # branching red vessels
        for _ in range(int(rng.integers(3, 6))):
            angle, phase = rng.uniform(0, np.pi), rng.uniform(0, 2 * np.pi)
            u = (xx - cx) * np.cos(angle) + (yy - cy) * np.sin(angle)
            v = -(xx - cx) * np.sin(angle) + (yy - cy) * np.cos(angle)
            line = np.abs(v - 4 * np.sin(u / 5 + phase)) < 0.9
            blend(line * inside, (170, 25, 40))
    elif label == "akiec":  # white scale
        scale = (rng.random((HEIGHT, WIDTH)) > 0.93) * inside
        blend(scale, (240, 235, 230), 0.8)
    elif label == "df":  # white central scar
        centre = np.hypot(yy - cy, xx - cx) / (radius * 0.45)
        blend(np.clip((1 - centre) * 3, 0, 1), (235, 225, 215))
    return image


_CLASS_STYLE = {
    "nv": dict(colour=(135, 85, 55), radius=22, irregularity=0.05, sharpness=8, texture=4),
    "mel": dict(colour=(75, 45, 35), radius=27, irregularity=0.45, sharpness=6, texture=14),
    "bkl": dict(colour=(185, 145, 100), radius=24, irregularity=0.15, sharpness=5, texture=10),
    "bcc": dict(colour=(215, 155, 150), radius=22, irregularity=0.2, sharpness=3, texture=5),
    "akiec": dict(colour=(200, 105, 95), radius=24, irregularity=0.3, sharpness=1.5, texture=12),
    "df": dict(colour=(150, 100, 75), radius=14, irregularity=0.05, sharpness=4, texture=4),
    "vasc": dict(colour=(165, 35, 75), radius=20, irregularity=0.0, sharpness=1, texture=0),
}


def _vignette(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The black circular border of a dermoscope's field of view."""
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH].astype(float)
    d = np.hypot((yy - HEIGHT / 2) / (HEIGHT / 2), (xx - WIDTH / 2) / (WIDTH / 2))
    edge = np.clip((d - rng.uniform(0.95, 1.1)) * 12, 0, 1)[..., None]
    return image * (1 - edge)


def generate(folder: Path, *, fine: bool = False) -> Path:
    """Write the demo set into ``folder`` (once; later calls reuse it) and return the folder;
    ``fine``: the variant with fine labels (see the module)."""
    folder = Path(folder)
    metadata = folder / ("labels.csv" if fine else "HAM10000_metadata.csv")
    if metadata.exists():
        return folder
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for class_index, (label, count) in enumerate(sorted(COUNTS.items())):
        rng = np.random.default_rng(1000 * VERSION + class_index)
        fine_rng = np.random.default_rng(2000 * VERSION + class_index)  # only the fine variant
        lesion = 0
        while sum(r["dx"] == label for r in rows) < count:
            lesion += 1
            lesion_id = f"DEMO_{label}_{lesion:04d}"
            skin = np.array((225, 180, 150)) + rng.normal(0, 12, 3)
            params = dict(_CLASS_STYLE[label], skin=skin)
            fine_label = label
            if fine and label in FINE_STYLES:
                fine_label = str(fine_rng.choice(sorted(FINE_STYLES[label])))
                params.update(FINE_STYLES[label][fine_label])
            for _ in range(
                min(int(rng.integers(1, 4)), count - sum(r["dx"] == label for r in rows))
            ):
                image = _paint(label, rng, params)
                if rng.random() < 0.3:
                    image = _vignette(image, rng)
                image_id = f"DEMO_{len(rows):05d}"
                pixels = np.clip(image, 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / "images" / f"{image_id}.png", optimize=False)
                rows.append(
                    {"lesion_id": lesion_id, "image_id": image_id, "dx": label, "fine": fine_label}
                )
    frame = pd.DataFrame(rows)
    if fine:
        frame = frame.rename(columns={"image_id": "image", "fine": "label", "lesion_id": "group"})
        atomic_write_csv(metadata, frame[["image", "label", "group"]], index=False)
    else:
        atomic_write_csv(metadata, frame[["lesion_id", "image_id", "dx"]], index=False)
    return folder


def demo_folder(workspace: Path, *, fine: bool = False) -> Path:
    """Where the demo set lives in a workspace (generated on first use)."""
    if fine:
        return generate(Path(workspace) / "data" / f"demo-v{VERSION}-fine", fine=True)
    return generate(Path(workspace) / "data" / f"demo-v{VERSION}")
