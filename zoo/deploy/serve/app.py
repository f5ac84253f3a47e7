"""The web app of ``zoo serve``: the page, ``POST /predict``, ``GET /info``, ``GET /health``.

``POST /predict`` takes one image as the multipart file field ``image`` and answers JSON
(:func:`zoo.deploy.serve.answer.prediction_answer`), or ``{"error": message}`` with status 413 (upload
over the size limit, or an image of too many pixels), 415 (not an image) or 400 (no file,
a malformed form, a corrupt or truncated image). Bad uploads never stop the server.

The model runs under one lock (Keras models are not safe to call from several threads at
once), in Starlette's thread pool, so the event loop keeps answering while a prediction runs.
"""

from __future__ import annotations

import io
import threading
from pathlib import Path

from PIL import Image, UnidentifiedImageError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import Route

from zoo.deploy.serve.answer import DISCLAIMER, operating_point, prediction_answer
from zoo.errors import ZooError

PAGE = Path(__file__).with_name("page.html")
FIELD = "image"
FORM_OVERHEAD = 64 * 1024  # multipart headers and boundaries around the file
MAX_PIXELS = 50_000_000  # ~7000 × 7000; larger images are refused before decoding


class UploadRejected(Exception):
    """A bad upload: the HTTP status and a one-line message for the person who sent it."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


class _BodyTooLarge(Exception):
    pass


def _limited(receive, limit: int):
    """An ASGI ``receive`` that raises once the request body passes ``limit`` bytes (also
    for uploads sent without a Content-Length)."""
    received = 0

    async def wrapped():
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise _BodyTooLarge
        return message

    return wrapped


def _too_large(limit: int) -> UploadRejected:
    return UploadRejected(
        413, f"the upload is larger than the limit of {limit / 2**20:g} MB; send a smaller image."
    )


async def read_upload(request: Request, limit: int) -> tuple[bytes, str]:
    """The bytes and file name of the ``image`` field; :class:`UploadRejected` otherwise."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "multipart/form-data":
        raise UploadRejected(
            415,
            f"expected a multipart/form-data upload with the file field {FIELD!r}; got "
            f"{kind or 'no content type'} (curl -F {FIELD}=@lesion.jpg).",
        )
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit + FORM_OVERHEAD:
        raise _too_large(limit)
    limited = Request(request.scope, _limited(request.receive, limit + FORM_OVERHEAD))
    try:
        form = await limited.form(max_files=1, max_fields=8)
    except _BodyTooLarge:
        raise _too_large(limit) from None
    except HTTPException as exc:
        raise UploadRejected(400, f"malformed multipart form ({exc.detail}).") from None
    upload = form.get(FIELD)
    if upload is None or isinstance(upload, str):
        raise UploadRejected(
            400,
            f"no image: send it as the multipart/form-data file field {FIELD!r} "
            f"(curl -F {FIELD}=@lesion.jpg).",
        )
    data = await upload.read()
    name = Path(upload.filename or "upload").name
    await form.close()
    if len(data) > limit:
        raise _too_large(limit)
    if not data:
        raise UploadRejected(400, f"{name} is empty (0 bytes); send an image file.")
    return data, name


def check_image(data: bytes, name: str) -> None:
    """Refuse what is no image (415), has too many pixels (413, from the header alone) or
    does not decode whole (400: corrupt or truncated)."""
    try:
        image = Image.open(io.BytesIO(data))
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError):
        raise UploadRejected(
            415, f"{name} is not an image this server can read; send a JPEG or PNG file."
        ) from None
    with image:
        pixels = image.width * image.height
        if pixels > MAX_PIXELS:
            raise UploadRejected(
                413,
                f"{name} is a {image.format} of {pixels:,} pixels, over the limit of "
                f"{MAX_PIXELS:,}; send a smaller image.",
            )
        try:
            image.load()
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
            raise UploadRejected(
                400, f"{name} is a corrupt or truncated {image.format} file ({exc}); send it whole."
            ) from None


class _Uncalibrated:
    """``model`` as served uncalibrated: the operating point stored with the target when it
    was built (chosen on uncalibrated outputs), never the one of its calibration."""

    def __init__(self, model):
        self.model = model

    def __getattr__(self, name: str):
        if name == "operating_point":
            return getattr(self.model.target, "operating_point", None)
        return getattr(self.model, name)


def create_app(model, *, max_upload_bytes: int, calibrated: bool = True) -> Starlette:
    """The app around ``model`` (a :class:`zoo.api.Model`), which is loaded and warm;
    ``calibrated=False`` serves uncalibrated probabilities, without the operating point that
    was chosen on calibrated ones."""
    lock = threading.Lock()
    classes = [str(c) for c in model.classes]
    shown = model if calibrated else _Uncalibrated(model)

    def predict_one(data: bytes, name: str) -> dict:
        check_image(data, name)
        with lock:
            frame = model.predict(data, ood_scores=True, calibrated=calibrated)
        return prediction_answer(frame.iloc[0], target=shown, classes=classes, image=name)

    async def page(request: Request) -> HTMLResponse:
        return HTMLResponse(PAGE.read_text(encoding="utf-8"))

    async def info(request: Request) -> JSONResponse:
        from zoo.scoring.taxonomy import class_name

        return JSONResponse(
            {
                "target": {"name": model.name, "kind": model.kind},
                "classes": [{"class": c, "name": class_name(c)} for c in classes],
                "operating_point": operating_point(shown),
                "max_upload_bytes": max_upload_bytes,
                "disclaimer": DISCLAIMER,
            }
        )

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "target": model.name})

    async def predict(request: Request) -> JSONResponse:
        try:
            data, name = await read_upload(request, max_upload_bytes)
            answer = await run_in_threadpool(predict_one, data, name)
        except UploadRejected as exc:
            return JSONResponse({"error": exc.message}, status_code=exc.status)
        except ZooError as exc:  # the decoder's one line, for what check_image let through
            return JSONResponse({"error": f"{name}: {exc}"}, status_code=400)
        return JSONResponse(answer)

    routes = [
        Route("/", page),
        Route("/info", info),
        Route("/health", health),
        Route("/predict", predict, methods=["POST"]),
    ]
    return Starlette(routes=routes)
