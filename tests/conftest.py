"""Shared fixtures: the demo workspace, the real HAM10000 folder, tiny image fixtures.

Names are specific (``demo_workspace``, ``zoo_workspace``, ``ham10000_dir``, ``write_images``,
``write_ham10000``, ``headless_chromium``) so that other test modules can define their own without clashes; nothing
heavy is autouse.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

HAM_CLASSES = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")
HAM10000_DEFAULT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ham10000"


def write_image(
    path: str | os.PathLike,
    *,
    size: int = 16,
    mode: str = "RGB",
    seed: int = 0,
    format: str | None = None,
) -> Path:
    """Write one small noisy image (``mode`` RGB, L, RGBA, CMYK or P) and return its path.

    The format follows the suffix (``.jpg`` → JPEG, ``.png`` → PNG) unless given.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    pixels = rng.integers(40, 220, (size, size, 3), dtype=np.uint8)
    image = Image.fromarray(pixels, "RGB")
    if mode == "P":
        image = image.quantize(colors=16)
    elif mode != "RGB":
        image = image.convert(mode)
    image.save(path, format=format)
    return path


@pytest.fixture
def write_images() -> Callable[..., list[Path]]:
    """``write_images(folder, names, **options)``: tiny images ``folder/<name>``; returns paths.

    ``names`` may include a suffix (``a.png``); a bare name gets ``.jpg``. Options as for
    :func:`write_image` (``size``, ``mode``, ``format``); each image gets its own seed.
    """

    def write(
        folder: str | os.PathLike, names: Iterable[str], *, seed: int = 0, **options
    ) -> list[Path]:
        paths = []
        for i, name in enumerate(names):
            file = name if Path(name).suffix else f"{name}.jpg"
            paths.append(write_image(Path(folder) / file, seed=seed + i, **options))
        return paths

    return write


@pytest.fixture
def write_ham10000(write_images) -> Callable[..., Path]:
    """``write_ham10000(folder, classes=..., lesions=3, images_per_lesion=1, layout="images")``.

    A HAM10000-shaped folder: ``HAM10000_metadata.csv`` (lesion_id, image_id, dx) and 16 px
    JPEGs in ``images/`` (``layout="images"``), split over ``HAM10000_images_part_{1,2}/``
    (``layout="parts"``) or directly in the folder (``layout="flat"``).
    """

    def write(
        folder: str | os.PathLike,
        *,
        classes: Iterable[str] = HAM_CLASSES,
        lesions: int = 3,
        images_per_lesion: int = 1,
        layout: str = "images",
    ) -> Path:
        folder = Path(folder)
        rows = []
        for c in classes:
            for lesion in range(lesions):
                for _ in range(images_per_lesion):
                    rows.append(
                        {
                            "lesion_id": f"HAM_{c}_{lesion}",
                            "image_id": f"ISIC_{len(rows):07d}",
                            "dx": c,
                            "dx_type": "histo",
                            "age": 50,
                            "sex": "female",
                            "localization": "back",
                        }
                    )
        for i, row in enumerate(rows):
            if layout == "images":
                sub = folder / "images"
            elif layout == "parts":
                sub = folder / f"HAM10000_images_part_{1 + i % 2}"
            else:
                sub = folder
            write_image(sub / f"{row['image_id']}.jpg", seed=i)
        folder.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(rows).to_csv(folder / "HAM10000_metadata.csv", index=False)
        return folder

    return write


@pytest.fixture(scope="session")
def demo_workspace(tmp_path_factory) -> Path:
    """A workspace with the demo set generated once per session (treat it as read-only)."""
    from zoo.data import demo

    workspace = tmp_path_factory.mktemp("zoo-demo-workspace")
    demo.demo_folder(workspace)
    return workspace


@pytest.fixture
def zoo_workspace(tmp_path, demo_workspace) -> Path:
    """A fresh, empty workspace whose demo data links to the session's generated copy."""
    workspace = tmp_path / "workspace"
    (workspace / "data").mkdir(parents=True)
    for entry in (demo_workspace / "data").iterdir():
        (workspace / "data" / entry.name).symlink_to(entry, target_is_directory=True)
    return workspace


@pytest.fixture
def ham10000_dir() -> Path:
    """The real HAM10000 (``$ZOO_HAM10000`` or ``../shared/data/ham10000``); skips when absent."""
    folder = Path(os.environ.get("ZOO_HAM10000") or HAM10000_DEFAULT)
    if not (folder / "HAM10000_metadata.csv").is_file():
        pytest.skip(
            f"real HAM10000 not found at {folder} (set ZOO_HAM10000 to the folder holding "
            "HAM10000_metadata.csv and the images)"
        )
    return folder


DEMO_MEMBER = "small_cnn.demo.s0"


@pytest.fixture(scope="session")
def trained_workspace(tmp_path_factory) -> Path:
    """A workspace with one tiny demo member (32 px, 1 epoch), trained once per session."""
    root = tmp_path_factory.getbasetemp() / "zoo-demo-member"
    if not (root / "members" / DEMO_MEMBER / "member.json").is_file():
        from zoo import console
        from zoo.training.trainer import TrainOptions, train

        shutil.rmtree(root, ignore_errors=True)
        console.set_quiet(True)
        train(TrainOptions(recipe="small_cnn", workspace=root, image_size=32, epochs=1))
        console.set_quiet(False)
    return root


@pytest.fixture
def workspace(trained_workspace, tmp_path) -> Path:
    """A private copy of ``trained_workspace`` (mtimes kept) that a test may change."""
    copy = tmp_path / "ws"
    shutil.copytree(trained_workspace, copy, ignore=shutil.ignore_patterns("evaluations"))
    return copy


@pytest.fixture
def headless_chromium(tmp_path):
    """Headless Chromium through selenium; skips when chromium or chromedriver is absent."""
    from browserkit import MISSING_CHROMIUM, chromium_paths, start_chromium

    if chromium_paths() is None:
        pytest.skip(MISSING_CHROMIUM)
    pytest.importorskip("selenium.webdriver", reason="pip install selenium")
    driver = start_chromium(tmp_path / "chromium-profile")
    try:
        yield driver
    finally:
        driver.quit()
