"""Helpers for the tests that drive headless Chromium or a running ``zoo serve``.

Used by the ``headless_chromium`` fixture (``conftest.py``), the leaderboard page and web app
tests, and ``scripts/screenshot_serve.py``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
MISSING_CHROMIUM = (
    "browser test needs Debian chromium and chromium-driver "
    "(apt-get install -y chromium chromium-driver)"
)


def chromium_paths() -> tuple[str, str] | None:
    """``(chromium, chromedriver)`` when both are installed, else None."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (chromium, driver) if chromium and driver else None


def start_chromium(profile: Path):
    """A headless Chromium driven by selenium (the caller quits it); needs :func:`chromium_paths`."""
    from selenium import webdriver

    chromium, driver_path = chromium_paths()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=webdriver.ChromeService(driver_path))


def set_width(driver, width: int, height: int = 900) -> None:
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600},
    )


SERVING = re.compile(r"Serving .* on (http://\S+/)")


class ServeProcess:
    """``python -m zoo serve TARGET --port 0 …`` in a subprocess; :attr:`url` once it listens.

    Output goes to ``serve.out``/``serve.err`` in ``log_dir``; :meth:`stop` sends SIGTERM
    (uvicorn's graceful shutdown) and returns the exit status."""

    def __init__(self, target: str, *, workspace: Path, log_dir: Path, args=(), timeout=240):
        self.out, self.err = log_dir / "serve.out", log_dir / "serve.err"
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(REPO))
        command = [sys.executable, "-m", "zoo", "serve", target, "--workspace", str(workspace)]
        with open(self.out, "wb") as out, open(self.err, "wb") as err:
            self.process = subprocess.Popen(
                [*command, "--port", "0", *args], cwd=REPO, env=env, stdout=out, stderr=err
            )
        self.url = self._wait_for_url(timeout)

    def _wait_for_url(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = SERVING.search(self.out.read_text(errors="replace"))
            if match and self._healthy(match.group(1)):
                return match.group(1)
            if self.process.poll() is not None:
                break
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(
            f"zoo serve did not start (exit {self.process.returncode}): "
            f"{self.out.read_text(errors='replace')}{self.err.read_text(errors='replace')[-3000:]}"
        )

    @staticmethod
    def _healthy(url: str) -> bool:
        try:
            with urllib.request.urlopen(url + "health", timeout=5) as response:
                return response.status == 200
        except OSError:
            return False

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode
