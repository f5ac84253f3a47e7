"""A screenshot of the ``zoo serve`` page after one upload (``docs/screenshots/serve.png``).

    python scripts/screenshot_serve.py TARGET IMAGE [--workspace DIR] [--out FILE] [--width PX]

Starts ``python -m zoo serve TARGET`` on a free loopback port, uploads IMAGE through the
page's file picker in headless Chromium (Debian ``chromium`` + ``chromium-driver``), waits for
the answer and saves the screenshot. Shares its helpers with the browser tests
(``tests/browserkit.py``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from browserkit import (  # noqa: E402
    MISSING_CHROMIUM,
    ServeProcess,
    chromium_paths,
    set_width,
    start_chromium,
)

DONE = "return document.getElementById('status').dataset.state;"


def screenshot(target: str, image: Path, *, workspace: Path, out: Path, width: int) -> Path:
    if chromium_paths() is None:
        raise SystemExit(MISSING_CHROMIUM)
    with tempfile.TemporaryDirectory() as scratch:
        server = ServeProcess(target, workspace=workspace, log_dir=Path(scratch))
        driver = start_chromium(Path(scratch) / "profile")
        try:
            set_width(driver, width, 860)
            driver.get(server.url)
            driver.find_element("id", "file").send_keys(str(image.resolve()))
            deadline = time.monotonic() + 120
            while driver.execute_script(DONE) != "done":
                if time.monotonic() > deadline or driver.execute_script(DONE) == "error":
                    raise SystemExit(driver.find_element("id", "error").text or "no answer")
                time.sleep(0.2)
            height = driver.execute_script("return document.documentElement.scrollHeight;")
            set_width(driver, width, int(height))
            out.parent.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(str(out))
        finally:
            driver.quit()
            server.stop()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", help="member or ensemble name, or its directory")
    parser.add_argument("image", type=Path, help="the image to upload")
    parser.add_argument("--workspace", type=Path, default=Path("zoo-runs"), help="workspace")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots" / "serve.png")
    parser.add_argument("--width", type=int, default=1200, help="window width in pixels")
    args = parser.parse_args()
    out = screenshot(
        args.target, args.image, workspace=args.workspace, out=args.out, width=args.width
    )
    print(f"Wrote {out}")


if __name__ == "__main__":
    main()
