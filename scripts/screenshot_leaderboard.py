"""Screenshots of a published leaderboard page (``docs/screenshots/leaderboard-<W>px.png``).

    python scripts/screenshot_leaderboard.py [PAGE] [--out-dir DIR] [--widths 1400 414]

Opens PAGE (default ``docs/leaderboard/index.html``) in headless Chromium (Debian ``chromium``
+ ``chromium-driver``) at each width and saves the top of the page (``--height`` pixels).
Shares its helpers with the browser tests (``tests/browserkit.py``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from browserkit import MISSING_CHROMIUM, chromium_paths, set_width, start_chromium  # noqa: E402


def screenshots(page: Path, *, out_dir: Path, widths: list[int], height: int) -> list[Path]:
    if chromium_paths() is None:
        raise SystemExit(MISSING_CHROMIUM)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    with tempfile.TemporaryDirectory() as scratch:
        driver = start_chromium(Path(scratch) / "profile")
        try:
            for width in widths:
                set_width(driver, width, height)
                driver.get(page.resolve().as_uri())
                out = out_dir / f"leaderboard-{width}px.png"
                driver.save_screenshot(str(out))
                written.append(out)
        finally:
            driver.quit()
    return written


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "page", nargs="?", default=str(ROOT / "docs" / "leaderboard" / "index.html")
    )
    parser.add_argument("--out-dir", default=str(ROOT / "docs" / "screenshots"))
    parser.add_argument("--widths", type=int, nargs="+", default=[1400, 414])
    parser.add_argument("--height", type=int, default=1600, help="pixels of page shown")
    args = parser.parse_args(argv)
    for path in screenshots(
        Path(args.page), out_dir=Path(args.out_dir), widths=args.widths, height=args.height
    ):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
