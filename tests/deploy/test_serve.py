"""``zoo serve``: the JSON answer, and the running server under a real browser and load."""

from __future__ import annotations

import base64
import dataclasses
import json
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pytest
from asgikit import asgi_request
from browserkit import ServeProcess, set_width
from conftest import DEMO_MEMBER, write_image

from zoo.cli.main import main
from zoo.deploy.serve.answer import flag, operating_point, prediction_answer
from zoo.scoring.taxonomy import class_name

pytest.importorskip("starlette", reason="pip install 'zoo[serve]'")
pytest.importorskip("uvicorn", reason="pip install 'zoo[serve]'")

CLASSES = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
UPLOAD_LIMIT_MB = 0.5


# --- the answer, without a server -----------------------------------------------------------


@dataclasses.dataclass
class Point:
    class_name: str
    criterion: str
    value: float
    threshold: float


@dataclasses.dataclass
class FakeTarget:
    name: str = "m"
    kind: str = "member"
    default_tta: str = "none"
    default_prior_correction: bool = True
    operating_point: object = None


def test_flag_uses_the_operating_point_or_says_it_has_none():
    probabilities = dict(zip(CLASSES, [0.05, 0.05, 0.05, 0.05, 0.2, 0.55, 0.05], strict=True))
    default = flag(probabilities, None)
    assert (default["threshold"], default["flagged"], default["class"]) == (0.5, False, "mel")
    assert "default threshold 0.5" in default["source"] and default["name"] == "Melanoma"
    for point in (
        {"class": "mel", "criterion": "sensitivity", "value": 0.9, "threshold": 0.15},
        Point("mel", "sensitivity", 0.9, 0.15),
    ):
        chosen = flag(probabilities, operating_point(FakeTarget(operating_point=point)))
        assert chosen["flagged"] is True and chosen["threshold"] == 0.15
        assert chosen["source"] == "operating point: sensitivity 0.90 on validation"
    at = flag(probabilities, {"class": "mel", "criterion": None, "value": None, "threshold": 0.2})
    assert at["flagged"] is True  # >= threshold, as evaluation counts a positive
    no_mel = flag({"a": 0.3, "b": 0.7}, None)
    assert no_mel["flagged"] is None and no_mel["probability"] is None


def test_answer_names_the_top_class_and_keeps_every_probability():
    row = pd.Series(
        [0.1, 0.1, 0.1, 0.1, 0.1, 0.4, 0.1, 0.4, -0.9], [*CLASSES, "ood_msp", "ood_energy"]
    )
    answer = prediction_answer(row, target=FakeTarget(), classes=CLASSES, image="x.jpg")
    assert answer["top_class"] == {"class": "nv", "name": "Melanocytic nevus", "probability": 0.4}
    assert answer["probabilities"] == {c: float(row[c]) for c in CLASSES}
    assert [c["name"] for c in answer["classes"]] == [class_name(c) for c in CLASSES]
    assert answer["ood"]["msp"] == 0.4 and "not a diagnostic device" in answer["disclaimer"]
    json.dumps(answer, allow_nan=False)


# --- a running server -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(trained_workspace, tmp_path_factory):
    """``python -m zoo serve`` on the demo member, on a free loopback port."""
    logs = tmp_path_factory.mktemp("serve-logs")
    process = ServeProcess(
        DEMO_MEMBER,
        workspace=trained_workspace,
        log_dir=logs,
        args=["--max-upload-mb", str(UPLOAD_LIMIT_MB)],
    )
    yield process
    # uvicorn shuts down gracefully on SIGTERM, then ends by that signal
    assert process.stop() in (0, -15) and "Finished server process" in process.err.read_text()


def zoo_predict(workspace: Path, image: Path, out: Path) -> pd.Series:
    """``zoo predict`` on one file: its row of probabilities."""
    argv = ["predict", DEMO_MEMBER, str(image), "--workspace", str(workspace), "--quiet"]
    assert main([*argv, "--out", str(out)]) == 0
    return pd.read_csv(out, index_col="image").iloc[0]


def post(url: str, data: bytes, *, name: str = "x.jpg", field: str = "image"):
    """``POST /predict`` with one multipart file: (status, JSON body)."""
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{name}"\r\n'
            f"Content-Type: application/octet-stream\r\n\r\n"
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
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def lesion_image(tmp_path: Path, ham10000: Path | None) -> Path:
    """A real HAM10000 image when the data set is here, else a synthetic JPEG."""
    if ham10000 is not None:
        found = sorted((ham10000 / "images").glob("*.jpg"))[:1]
        if found:
            return found[0]
    return write_image(tmp_path / "lesion.jpg", size=120, seed=7)


@pytest.fixture
def maybe_ham10000(request) -> Path | None:
    try:
        return request.getfixturevalue("ham10000_dir")
    except pytest.skip.Exception:
        return None


def rendered_bars(driver) -> dict[str, tuple[float, str]]:
    bars = driver.find_elements("css selector", "#bars .bar")
    return {
        b.get_attribute("data-class"): (
            float(b.get_attribute("data-probability")),
            b.find_element("css selector", ".value").text,
        )
        for b in bars
    }


def wait_for(driver, script: str, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = driver.execute_script(script)
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for: {script}")


@pytest.mark.slow
@pytest.mark.browser
def test_page_shows_what_zoo_predict_gives(
    server, headless_chromium, trained_workspace, tmp_path, maybe_ham10000
):
    driver = headless_chromium
    set_width(driver, 1200, 860)
    driver.get(server.url)
    wait_for(driver, "return document.getElementById('target').textContent.includes('member');")
    assert "not a diagnostic device" in driver.find_element("id", "disclaimer").text
    image = lesion_image(tmp_path, maybe_ham10000)
    driver.find_element("id", "file").send_keys(str(image))
    wait_for(driver, "return document.getElementById('status').dataset.state === 'done';")

    expected = zoo_predict(trained_workspace, image, tmp_path / "p.csv")
    shown = rendered_bars(driver)
    assert list(shown) == CLASSES
    for c in CLASSES:
        probability, text = shown[c]
        assert abs(probability - expected[c]) <= 1e-4, c
        assert abs(float(text.rstrip(" %")) / 100 - expected[c]) <= 5.01e-5, (c, text)
    top = expected[CLASSES].idxmax()
    assert driver.find_element("id", "top").get_attribute("data-class") == top
    assert class_name(top) in driver.find_element("id", "top").text
    verdict = driver.find_element("id", "flag").text
    # the member's stored operating point when it has one, never a silent 0.5
    assert "Melanoma probability" in verdict
    assert "operating point:" in verdict or "default threshold 0.5" in verdict
    shot = tmp_path / "serve.png"
    driver.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000

    # dropping a file works as picking it; a text file shows the server's message
    second = write_image(tmp_path / "second.png", size=64, seed=11)
    payload = base64.b64encode(second.read_bytes()).decode()
    driver.execute_script(
        """
        const bytes = Uint8Array.from(atob(arguments[0]), (c) => c.charCodeAt(0));
        const transfer = new DataTransfer();
        transfer.items.add(new File([bytes], 'second.png', {type: 'image/png'}));
        document.getElementById('drop').dispatchEvent(
          new DragEvent('drop', {dataTransfer: transfer, bubbles: true, cancelable: true}));
        """,
        payload,
    )
    wait_for(driver, "return document.getElementById('status').textContent.includes('second');")
    wait_for(driver, "return document.getElementById('status').dataset.state === 'done';")
    expected = zoo_predict(trained_workspace, second, tmp_path / "q.csv")
    assert all(abs(p - expected[c]) <= 1e-4 for c, (p, _) in rendered_bars(driver).items())
    text_file = tmp_path / "notes.txt"
    text_file.write_text("not an image")
    driver.find_element("id", "file").send_keys(str(text_file))
    wait_for(driver, "return document.getElementById('status').dataset.state === 'error';")
    assert "notes.txt is not an image" in driver.find_element("id", "error").text
    big = tmp_path / "big.png"
    big.write_bytes(b"\x89PNG" + b"\0" * int(UPLOAD_LIMIT_MB * 2**20))
    driver.find_element("id", "file").send_keys(str(big))
    wait_for(driver, "return document.getElementById('error').textContent.includes('big.png');")
    assert "larger than the limit of 0.5 MB" in driver.find_element("id", "error").text


@pytest.mark.slow
def test_concurrent_and_bad_uploads(server, tmp_path, trained_workspace):
    good = [write_image(tmp_path / f"g{i}.png", size=48, seed=20 + i) for i in range(5)]
    expected = {f.name: zoo_predict(trained_workspace, f, tmp_path / f"{f.stem}.csv") for f in good}
    jpeg = write_image(tmp_path / "whole.jpg", size=200, seed=3).read_bytes()
    bad = {
        "oversized.png": (b"\x89PNG" + b"\0" * int(UPLOAD_LIMIT_MB * 2**20 + 1), 413),
        "notes.jpg": (b"just some text, not an image", 415),
        "truncated.jpg": (jpeg[: len(jpeg) // 2], 400),
        "empty.jpg": (b"", 400),
    }
    jobs = [(f.name, f.read_bytes(), 200) for f in good * 10]
    jobs += [(name, data, status) for name, (data, status) in bad.items()]

    def send(job):
        name, data, _ = job
        return post(server.url, data, name=name)

    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        pending = [pool.submit(send, job) for job in jobs]
        # the server answers while predictions queue for the model's lock (that it does so
        # while one holds the model: test_health_answers_while_a_prediction_holds_the_model)
        with urllib.request.urlopen(server.url + "health", timeout=60) as response:
            assert response.status == 200
        results = [p.result() for p in pending]
    assert len([j for j in jobs if j[2] == 200]) == 50
    stored = json.loads(
        (trained_workspace / "members" / DEMO_MEMBER / "calibration.json").read_text()
    )
    threshold = (stored["operating_point"] or {}).get("threshold", 0.5)
    for (name, _, status), (got, body) in zip(jobs, results, strict=True):
        assert got == status, (name, got, body)
        if status == 200:
            for c in CLASSES:
                assert abs(body["probabilities"][c] - expected[name][c]) <= 1e-6, (name, c)
            assert body["top_class"]["class"] == expected[name][CLASSES].idxmax()
            # the melanoma flag at the operating point zoo serves (calibration.json's), else 0.5
            assert body["flag"]["threshold"] == threshold
            mel = body["probabilities"]["mel"]
            top_is_mel = body["top_class"]["class"] == "mel"
            assert body["flag"]["flagged"] is (mel >= threshold or top_is_mel)
            top = max(body["probabilities"].values())  # msp: the top class's probability
            assert body["ood"]["msp"] == pytest.approx(top, abs=1e-12)
            assert body["ood"]["msp"] == pytest.approx(expected[name][CLASSES].max(), abs=1e-6)
        else:
            assert set(body) == {"error"} and "\n" not in body["error"], body
            assert name in body["error"] or status == 413, body
    assert "larger than the limit of 0.5 MB" in results[-4][1]["error"]
    assert "corrupt or truncated" in results[-2][1]["error"]
    # no multipart at all, and a form without the image field
    request = urllib.request.Request(server.url + "predict", data=jpeg, method="POST")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=30)
    assert (
        info.value.code == 415 and "multipart/form-data" in json.loads(info.value.read())["error"]
    )
    status, body = post(server.url, jpeg, field="file")
    assert status == 400 and "file field 'image'" in body["error"]
    # still serving
    status, body = post(server.url, good[0].read_bytes(), name=good[0].name)
    assert status == 200 and body["image"] == good[0].name
    with urllib.request.urlopen(server.url + "health", timeout=10) as response:
        assert json.loads(response.read())["status"] == "ok"


def test_serve_refuses_bad_options_in_one_line(trained_workspace, capsys, tmp_path):
    argv = ["serve", DEMO_MEMBER, "--workspace", str(trained_workspace)]
    assert main([*argv, "--max-upload-mb", "0"]) == 2
    assert "--max-upload-mb must be" in capsys.readouterr().err
    assert main(["serve", "nope", "--workspace", str(tmp_path)]) == 2
    assert "no member or ensemble 'nope'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*argv, "--port", "70000"])
    assert "expected a TCP port" in capsys.readouterr().err


def test_a_port_in_use_is_one_line():
    import socket

    from zoo.deploy.serve.command import listen
    from zoo.errors import ZooError

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ZooError, match=f"cannot listen on 127.0.0.1:{port}"):
            listen("127.0.0.1", port)


# --- the app in this process: what the event loop and --host are for -------------------------


class HeldModel:
    """What the app needs of a loaded model; ``predict`` waits until the test releases it."""

    name, kind = "held", "member"
    classes = CLASSES
    default_tta, default_prior_correction, operating_point = "none", True, None

    def __init__(self):
        import threading

        self.entered, self.release = threading.Event(), threading.Event()
        self.release.set()  # free unless a test holds it

    def predict(self, data, *, ood_scores=True, calibrated=True):
        self.entered.set()
        assert self.release.wait(60), "the test never released the model"
        p = [0.05, 0.05, 0.05, 0.05, 0.1, 0.65, 0.05]
        return pd.DataFrame([[*p, 0.65, -0.5]], columns=[*CLASSES, "ood_msp", "ood_energy"])


async def asgi(app, method: str, path: str, body: bytes = b"", headers=()) -> tuple[int, dict]:
    """One request through the ASGI app, without a server: (status, JSON body)."""
    status, payload = await asgi_request(app, method, path, body, headers)
    return status, json.loads(payload)


def test_health_answers_while_a_prediction_holds_the_model(tmp_path):
    """Predictions run in the thread pool, so while one holds the model the event loop still
    answers ``/health``; the prediction then finishes with its answer."""
    import asyncio

    from zoo.deploy.serve.app import create_app

    model = HeldModel()
    app = create_app(model, max_upload_bytes=2**20)
    image = write_image(tmp_path / "a.png", size=32).read_bytes()
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + image
        + f"\r\n--{boundary}--\r\n".encode()
    )
    form = [(b"content-type", f"multipart/form-data; boundary={boundary}".encode())]

    async def scenario():
        model.release.clear()
        predicting = asyncio.ensure_future(asgi(app, "POST", "/predict", body, form))
        assert await asyncio.to_thread(model.entered.wait, 60), "the model was never called"
        health = await asyncio.wait_for(asgi(app, "GET", "/health"), 30)
        still_predicting = not predicting.done()
        model.release.set()
        return health, still_predicting, await asyncio.wait_for(predicting, 60)

    health, still_predicting, (status, answer) = asyncio.run(scenario())
    assert health == (200, {"status": "ok", "target": "held"})
    assert still_predicting  # /health was answered while the model was busy
    assert status == 200 and answer["top_class"]["class"] == "nv", answer
    assert answer["ood"]["msp"] == pytest.approx(max(answer["probabilities"].values()))


def test_info_gives_the_card_and_openapi_describes_every_route(trained_workspace):
    """``/info`` holds the target's model card (front matter for machines, markdown for
    people); ``/openapi.json`` describes exactly the routes the app has, with their methods."""
    import asyncio

    import yaml
    from starlette.routing import Route

    import zoo
    from zoo.deploy.serve.app import create_app

    model = zoo.load(DEMO_MEMBER, workspace=trained_workspace)
    app = create_app(model, max_upload_bytes=2**20)
    status, info = asyncio.run(asgi(app, "GET", "/info"))
    assert status == 200 and info["api"] == "/openapi.json"
    front, markdown = info["card"]["front_matter"], info["card"]["markdown"]
    assert front["pipeline_tag"] == "image-classification" and front["license"]
    assert front["zoo"]["classes"] == list(model.classes)
    assert front["zoo"]["intended_use"].endswith("not a diagnostic device")
    stored = (trained_workspace / "members" / DEMO_MEMBER / "card.md").read_text()
    assert markdown == stored and f"# {DEMO_MEMBER}" in markdown
    assert yaml.safe_load(markdown.split("---\n")[1])["license"] == front["license"]
    status, document = asyncio.run(asgi(app, "GET", "/openapi.json"))
    assert status == 200 and document["openapi"].startswith("3.1")
    routes = {r.path: set(r.methods) - {"HEAD"} for r in app.routes if isinstance(r, Route)}
    described = {path: {m.upper() for m in ops} for path, ops in document["paths"].items()}
    assert described == routes
    answer = document["paths"]["/predict"]["post"]["responses"]["200"]
    schema = answer["content"]["application/json"]["schema"]["properties"]["probabilities"]
    assert schema["required"] == list(model.classes)
