"""Peak memory of ``zoo serve`` under many concurrent large uploads.

Starts ``zoo serve TARGET`` on a free port, sends ``--uploads`` concurrent uploads of one
``--side`` × ``--side`` JPEG (smooth, so the file is small and the decoded picture large), and
prints the server's resident memory before, its peak (``VmHWM``) and after, with the answers'
status codes. Linux only (``/proc``).

    python scripts/bench_serve_memory.py small_cnn.demo.s0 --workspace zoo-runs
"""

from __future__ import annotations

import argparse
import io
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

SERVING = re.compile(r"on (http://[\d.]+:\d+/)")


def memory_mb(pid: int, field: str) -> float:
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(rf"{field}:\s+(\d+) kB", text).group(1)) / 1024


def large_jpeg(side: int) -> bytes:
    ramp = np.linspace(0, 255, side, dtype=np.float32)
    red = np.add.outer(ramp, ramp) / 2
    rgb = np.stack([red, np.broadcast_to(ramp, red.shape), np.full_like(red, 128)], -1)
    buffer = io.BytesIO()
    Image.fromarray(rgb.astype(np.uint8)).save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def post(url: str, data: bytes) -> int:
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="big.jpg"\r\n'
            "Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    request = urllib.request.Request(
        url + "predict",
        data=body,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=600) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("target")
    parser.add_argument("--workspace", default="zoo-runs")
    parser.add_argument("--uploads", type=int, default=30)
    parser.add_argument("--side", type=int, default=7000)
    args = parser.parse_args(argv)
    data = large_jpeg(args.side)
    with tempfile.TemporaryDirectory() as folder:
        log = Path(folder) / "serve.out"
        with open(log, "wb") as out:
            server = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "zoo",
                    "serve",
                    args.target,
                    "--workspace",
                    args.workspace,
                    "--port",
                    "0",
                    "--max-upload-mb",
                    "50",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
            )
        try:
            for _ in range(600):
                match = SERVING.search(log.read_text(errors="replace"))
                if match:
                    break
                time.sleep(0.5)
            else:
                raise SystemExit(f"zoo serve did not start: {log.read_text()[-2000:]}")
            url = match.group(1)
            time.sleep(2)
            before = memory_mb(server.pid, "VmRSS")
            start = time.perf_counter()
            with ThreadPoolExecutor(max_workers=args.uploads) as pool:
                codes = list(pool.map(lambda _: post(url, data), range(args.uploads)))
            seconds = time.perf_counter() - start
            peak, after = memory_mb(server.pid, "VmHWM"), memory_mb(server.pid, "VmRSS")
        finally:
            server.terminate()
            server.wait(timeout=60)
    print(
        f"{args.uploads} concurrent uploads of a {args.side} x {args.side} JPEG "
        f"({len(data) / 1e6:.1f} MB) in {seconds:.0f} s; answers {dict(Counter(codes))}\n"
        f"zoo serve resident memory: before {before:.0f} MB, peak {peak:.0f} MB, "
        f"after {after:.0f} MB"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
