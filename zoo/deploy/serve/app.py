"""The web app of ``zoo serve``: the page, ``POST /predict``, ``GET /info``, ``GET /health``.

``POST /predict`` takes one image as the multipart file field ``image`` and answers JSON
(:func:`zoo.deploy.serve.answer.prediction_answer`), or ``{"error": message}`` with status 413 (upload
over the size limit, an image of too many pixels, a decompression bomb), 415 (not an image, or
one zoo cannot show faithfully), 400 (no file, a malformed form, a corrupt or truncated image)
or 503 (no decoding slot free within :data:`DECODE_WAIT_S` seconds). Bad uploads never stop
the server.

Uploads are checked by decoding them as zoo decodes them (:func:`zoo.data.images.open_rgb`),
at most :data:`MAX_DECODES` at a time (:class:`DecodeSlots`); the others wait for a slot.
The model then runs under one lock (Keras models are not safe to call from several threads at
once), in Starlette's thread pool, so the event loop keeps answering while a prediction runs.
"""

from __future__ import annotations

import contextlib
import functools
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

from zoo import __version__
from zoo.data.images import ImageProblem, ImageTooLarge, UnsupportedImage, open_rgb
from zoo.deploy.serve.answer import DISCLAIMER, operating_point, prediction_answer
from zoo.deploy.serve.openapi import OPENAPI_PATH, openapi_document
from zoo.ensembles.card import target_card
from zoo.errors import ZooError

PAGE = Path(__file__).with_name("page.html")
FIELD = "image"
FORM_OVERHEAD = 64 * 1024  # multipart headers and boundaries around the file
MAX_PIXELS = 50_000_000  # ~7000 × 7000; larger images are refused before decoding
MAX_DECODES = 2  # uploads decoded at once (a 50-megapixel image takes 150 MB and more)
DECODE_WAIT_S = 30.0  # how long an upload waits for a decoding slot before a 503
CHECK_DRAFT = 512  # the check decodes JPEGs at no less than this (libjpeg's scaled decoding)


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
    """Refuse what is no image (415), has too many pixels (413: from the header alone, or
    PIL's decompression-bomb refusal), cannot be shown faithfully (415) or does not decode
    whole (400: corrupt or truncated); decodes it as zoo does, reduced (:data:`CHECK_DRAFT`)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            pixels, kind = image.width * image.height, image.format
    except Image.DecompressionBombError as exc:
        raise UploadRejected(
            413, f"{name} has too many pixels to decode ({exc}); send a smaller image."
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise UploadRejected(
            415, f"{name} is not an image this server can read; send a JPEG or PNG file."
        ) from None
    if pixels > MAX_PIXELS:
        raise UploadRejected(
            413,
            f"{name} is a {kind} of {pixels:,} pixels, over the limit of {MAX_PIXELS:,}; send "
            "a smaller image.",
        )
    try:
        open_rgb(io.BytesIO(data), draft=CHECK_DRAFT)
    except ImageTooLarge as exc:
        raise UploadRejected(413, f"{name}: {exc}.") from None
    except UnsupportedImage as exc:
        raise UploadRejected(415, f"{name}: {exc}.") from None
    except ImageProblem as exc:
        raise UploadRejected(
            400, f"{name} is a corrupt or truncated {kind} file ({exc}); send it whole."
        ) from None


class DecodeSlots:
    """At most ``limit`` uploads decoded at once; an upload that finds no slot free within
    ``wait_s`` seconds is answered 503."""

    def __init__(self, limit: int = MAX_DECODES, *, wait_s: float = DECODE_WAIT_S):
        self.limit, self.wait_s = limit, wait_s
        self._free = threading.BoundedSemaphore(limit)

    @contextlib.contextmanager
    def held(self):
        if not self._free.acquire(timeout=self.wait_s):
            raise UploadRejected(
                503,
                f"the server is busy decoding {self.limit} other uploads; try again in a moment.",
            )
        try:
            yield
        finally:
            self._free.release()


class _Uncalibrated:
    """``model`` as served uncalibrated: the operating point stored with the target when it
    was built (chosen on uncalibrated outputs), never the one of its calibration."""

    def __init__(self, model):
        self.model = model

    def __getattr__(self, name: str):
        if name == "operating_point":
            return getattr(self.model.target, "operating_point", None)
        return getattr(self.model, name)


def create_app(
    model,
    *,
    max_upload_bytes: int,
    calibrated: bool = True,
    decodes: DecodeSlots | None = None,
) -> Starlette:
    """The app around ``model`` (a :class:`zoo.api.Model`), which is loaded and warm;
    ``calibrated=False`` serves uncalibrated probabilities, without the operating point that
    was chosen on calibrated ones. ``decodes`` bounds the uploads decoded at once (default
    :data:`MAX_DECODES`, waiting up to :data:`DECODE_WAIT_S`). ``app.state.predict_one(data,
    name)`` is what ``POST /predict`` runs in the thread pool."""
    lock = threading.Lock()
    decodes = decodes or DecodeSlots()
    classes = [str(c) for c in model.classes]
    shown = model if calibrated else _Uncalibrated(model)
    card = functools.cache(lambda: target_card(model.target))  # read once, on the first /info
    document = openapi_document(
        title=f"zoo serve: {model.name}",
        version=__version__,
        classes=classes,
        field=FIELD,
        max_bytes=max_upload_bytes,
    )

    def predict_one(data: bytes, name: str) -> dict:
        with decodes.held():
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
                "card": dict(zip(("front_matter", "markdown"), card(), strict=True)),
                "api": OPENAPI_PATH,
                "disclaimer": DISCLAIMER,
            }
        )

    async def openapi(request: Request) -> JSONResponse:
        return JSONResponse(document)

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
        Route(OPENAPI_PATH, openapi),
    ]
    app = Starlette(routes=routes)
    app.state.predict_one = predict_one
    return app
