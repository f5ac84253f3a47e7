"""Resources have bounds: sizes over zoo's limits are refused in one line before any work,
``zoo serve`` decodes a bounded number of uploads at once and answers a decompression bomb
with 413, and a FIFO among the images never hangs ``zoo data check``.

Each test runs in seconds and measures what is bounded (exit status, concurrency, the error),
never the time a huge request would have taken.
"""

from __future__ import annotations

import io
import os
import threading
import time

import numpy as np
import pandas as pd
import pytest
from asgikit import asgi_request
from faultkit import assert_refused, png_bomb, run_cli
from PIL import Image

from zoo.data.images import MAX_BATCH_SIZE, MAX_IMAGE_SIZE
from zoo.errors import ZooError


@pytest.mark.parametrize(
    ("option", "value", "limit"),
    [
        ("--batch-size", "100000000000", MAX_BATCH_SIZE),
        ("--batch-size", str(MAX_BATCH_SIZE + 1), MAX_BATCH_SIZE),
        ("--image-size", "100000", MAX_IMAGE_SIZE),
    ],
)
def test_zoo_train_refuses_sizes_over_the_limits_before_any_work(
    tmp_path, capsys, monkeypatch, option, value, limit
):
    import zoo.data.loading

    def no_work(*args, **kwargs):
        raise AssertionError("data were read before the option was checked")

    monkeypatch.setattr(zoo.data.loading, "load_dataset", no_work)
    workspace = tmp_path / "ws"
    argv = ["train", "small_cnn", option, value, "--workspace", workspace]
    result = run_cli(argv, capsys)
    assert_refused(result, option, value, pattern=f"from 1 to {limit}")
    assert "docs/usage.md" in result.err
    assert not workspace.exists()


def test_the_library_gives_the_same_one_line_error(tmp_path, monkeypatch):
    """TrainOptions (what zoo.train builds) is checked before the run is resolved."""
    from zoo.training import trainer
    from zoo.training.trainer import TrainOptions

    def no_work(*args, **kwargs):
        raise AssertionError("the run was resolved before the options were checked")

    monkeypatch.setattr(trainer, "resolve_run", no_work)
    for field, value in (("batch_size", 100_000_000_000), ("image_size", 100_000)):
        options = TrainOptions(recipe="small_cnn", workspace=tmp_path, **{field: value})
        with pytest.raises(ZooError) as info:
            trainer.train(options)
        message = str(info.value)
        assert message.startswith(f"{field} must be a whole number") and str(value) in message
        assert "\n" not in message


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")
def test_a_fifo_named_x_jpg_does_not_hang_zoo_data_check(tmp_path, capsys):
    from conftest import write_image

    folder = tmp_path / "data"
    for label in ("a", "b"):
        for i in range(3):
            write_image(folder / label / f"{label}{i}.jpg", seed=i)
    os.mkfifo(folder / "a" / "x.jpg")
    result = {}

    def check():
        result["value"] = run_cli(
            ["data", "check", f"folder:{folder}", "--workspace", tmp_path / "ws"], capsys
        )

    thread = threading.Thread(target=check, daemon=True)
    thread.start()
    thread.join(120)
    assert not thread.is_alive(), "zoo data check hangs on a FIFO"
    answer = result["value"]
    assert "Traceback" not in answer.out + answer.err
    assert answer.code == 1  # data check's status for unreadable images
    noted = [line for line in answer.out.splitlines() if "x.jpg" in line or "a/x" in line]
    assert noted and "FIFO" in noted[0] and "skipped without opening it" in noted[0], answer.out


# --- zoo serve --------------------------------------------------------------------------------

CLASSES = ["mel", "nv"]


class FakeModel:
    """What the app needs of a loaded model; ``predict`` is instant."""

    name, kind = "fake", "member"
    classes = CLASSES
    default_tta, default_prior_correction, operating_point = "none", True, None

    def predict(self, data, *, ood_scores=True, calibrated=True):
        return pd.DataFrame(
            [[0.3, 0.7, 0.7, -1.2]], columns=[*CLASSES, "ood_msp", "ood_energy"], index=["x"]
        )


def _png(size: int = 64) -> bytes:
    buffer = io.BytesIO()
    yy, xx = np.mgrid[0:size, 0:size]
    Image.fromarray(np.dstack([xx, yy, xx + yy]).astype(np.uint8) * 2).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture
def serve_app():
    pytest.importorskip("starlette", reason="pip install 'zoo[serve]'")
    from zoo.deploy.serve import app

    return app


def test_a_decompression_bomb_gets_413_not_415(tmp_path, serve_app):
    bomb = png_bomb(tmp_path / "bomb.png").read_bytes()
    with pytest.raises(serve_app.UploadRejected) as info:
        serve_app.check_image(bomb, "bomb.png")
    assert info.value.status == 413, info.value.message
    assert "bomb.png" in info.value.message and "\n" not in info.value.message
    with pytest.raises(serve_app.UploadRejected) as info:
        serve_app.check_image(b"not an image at all", "notes.jpg")
    assert info.value.status == 415


def _concurrently(predict_one, count: int) -> list:
    """``predict_one`` of a PNG from ``count`` threads at once: each answer or exception."""
    data, results = _png(), [None] * count
    start = threading.Barrier(count)

    def send(i: int) -> None:
        start.wait()
        try:
            results[i] = predict_one(data, f"upload{i}.png")
        except Exception as exc:  # noqa: BLE001 - the test looks at it
            results[i] = exc

    threads = [threading.Thread(target=send, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results


def _counting_decoder(monkeypatch, serve_app, *, seconds: float) -> list[int]:
    """Wrap the app's decoder: it takes ``seconds``; returns [most decodes seen at once]."""
    active, most, guard = [0], [0], threading.Lock()
    decode = serve_app.open_rgb

    def slow(*args, **kwargs):
        with guard:
            active[0] += 1
            most[0] = max(most[0], active[0])
        try:
            time.sleep(seconds)
            return decode(*args, **kwargs)
        finally:
            with guard:
                active[0] -= 1

    monkeypatch.setattr(serve_app, "open_rgb", slow)
    return most


def test_serve_decodes_at_most_max_decodes_uploads_at_once(monkeypatch, serve_app):
    most = _counting_decoder(monkeypatch, serve_app, seconds=0.1)
    app = serve_app.create_app(FakeModel(), max_upload_bytes=2**20)
    results = _concurrently(app.state.predict_one, 8)
    assert all(isinstance(r, dict) and r["top_class"]["class"] == "nv" for r in results), results
    assert most[0] == serve_app.MAX_DECODES == 2


def test_serve_answers_503_when_no_decoding_slot_frees_in_time(monkeypatch, serve_app):
    most = _counting_decoder(monkeypatch, serve_app, seconds=0.5)
    slots = serve_app.DecodeSlots(2, wait_s=0.05)
    app = serve_app.create_app(FakeModel(), max_upload_bytes=2**20, decodes=slots)
    results = _concurrently(app.state.predict_one, 5)
    answered = [r for r in results if isinstance(r, dict)]
    busy = [r for r in results if isinstance(r, serve_app.UploadRejected)]
    assert len(answered) == 2 and len(busy) == 3 and most[0] == 2, results
    for refusal in busy:
        assert refusal.status == 503 and "busy decoding 2 other uploads" in refusal.message
        assert "\n" not in refusal.message


def test_the_predict_route_turns_a_busy_server_into_503(monkeypatch, serve_app):
    """The route's answer for an upload that waited too long: JSON with status 503."""
    import asyncio

    slots = serve_app.DecodeSlots(1, wait_s=0.01)
    app = serve_app.create_app(FakeModel(), max_upload_bytes=2**20, decodes=slots)
    boundary = "zooboundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + _png()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    with slots.held():  # every slot taken
        status, payload = asyncio.run(_post(app, body, boundary))
    assert status == 503 and b"busy decoding" in payload
    status, payload = asyncio.run(_post(app, body, boundary))
    assert status == 200 and b'"top_class"' in payload


async def _post(app, body: bytes, boundary: str) -> tuple[int, bytes]:
    """One ``POST /predict`` through the ASGI app, without a server or a client library."""
    content_type = f"multipart/form-data; boundary={boundary}".encode()
    return await asgi_request(app, "POST", "/predict", body, [(b"content-type", content_type)])
