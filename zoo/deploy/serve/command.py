"""``zoo serve TARGET [--host 127.0.0.1] [--port 8000]``: load, warm up, listen.

The target is loaded and one blank image predicted before the socket opens, so a damaged
member fails with one line and the first upload does not wait for the model. The socket is
bound here, so a port in use is a one-line error too. Binds to the loopback address unless
``--host`` says otherwise (then with a warning: the app has no authentication).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import ipaddress
import socket
from pathlib import Path

from zoo import console
from zoo.console import escape
from zoo.errors import ZooError

INSTALL = "pip install 'zoo[serve]'"


def _check_installed() -> None:
    missing = []
    for modules, package in (
        (("starlette",), "starlette"),
        (("uvicorn",), "uvicorn"),
        (("python_multipart", "multipart"), "python-multipart"),
    ):
        if not any(importlib.util.find_spec(m) for m in modules):
            missing.append(package)
    if missing:
        raise ZooError(f"zoo serve needs {', '.join(missing)}: {INSTALL}.")


def blank_png(size: int = 64) -> bytes:
    """A black PNG: the warm-up image."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (size, size)).save(buffer, format="PNG")
    return buffer.getvalue()


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port``; a one-line error when that is impossible."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except (socket.gaierror, UnicodeError) as exc:
        raise ZooError(f"--host {host!r}: not an address of this machine ({exc}).") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise ZooError(
            f"cannot listen on {host}:{port} ({exc.strerror or exc}); pick another --port or "
            "--host."
        ) from None
    sock.set_inheritable(True)
    return sock


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def serve_command(
    target: str,
    *,
    workspace: Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    max_upload_mb: float = 20.0,
    calibrated: bool = True,
) -> int:
    """Serve ``target`` (a member or ensemble) on ``host:port`` until Ctrl-C (or SIGTERM);
    ``calibrated=False`` serves uncalibrated probabilities."""
    _check_installed()
    import uvicorn

    from zoo.deploy.model import load
    from zoo.deploy.serve.app import create_app
    from zoo.inference.members import require_image_only

    if not 0 < max_upload_mb <= 1024:
        raise ZooError(
            f"--max-upload-mb must be a number of megabytes in (0, 1024]; got {max_upload_mb}."
        )
    model = load(target, workspace)
    require_image_only(model.target, "zoo serve")
    # loads and traces the model (a damaged one fails here) and fits the OOD score once
    model.predict(blank_png(), ood_scores=True, calibrated=calibrated)
    app = create_app(model, max_upload_bytes=int(max_upload_mb * 2**20), calibrated=calibrated)
    sock = listen(host, port)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    if not _is_loopback(host):
        console.warn(
            f"--host {host}: the page is reachable from other machines and has no authentication."
        )
    console.info(
        f"Serving {model.kind} [bold]{escape(model.name)}[/bold] on http://{shown}:{port}/ "
        f"(research software, not a diagnostic device). Ctrl-C stops it.",
        markup=True,
    )
    config = uvicorn.Config(
        app,
        log_level="warning" if console.is_quiet() else "info",
        access_log=not console.is_quiet(),
        timeout_graceful_shutdown=5,
    )
    with contextlib.suppress(KeyboardInterrupt):  # uvicorn stops gracefully, then passes it on
        uvicorn.Server(config).run(sockets=[sock])
    console.info("Stopped.")
    return 0
