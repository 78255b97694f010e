"""`medsyn serve`: a web page and a JSON API that apply one exported model to an uploaded image.

    GET  /             the page (static/index.html, app.js, style.css; no build step)
    GET  /api/model    the model card: training data, arm, seed choice, test metrics with CIs, notice
    POST /api/predict  multipart field `file` (PNG, JPEG or DICOM) -> label, probabilities, Grad-CAM overlay
                       (with a .pt model file; an ONNX one runs without torch, so without Grad-CAM: `heatmap_png`
                       is null and `heatmap.note` says why)

Uploads are untrusted: the body is capped before parsing, the type is sniffed from the bytes (never the file
name), the pixel count is checked from the header before decoding, and every bad upload gets a 4xx JSON
{"error": ...}. Decoding happens in a private temporary folder that is removed after each request. Requests run
concurrently; the network itself is used by one request at a time (Grad-CAM adds hooks to it).
"""

from __future__ import annotations

import base64
import io
import ipaddress
import json
import tempfile
import threading
from pathlib import Path

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from medsyn.data.images import BadImage, TooManyPixels, load_image, native_size, resize_square
from medsyn.data.images import sniff as sniff_image
from medsyn.errors import MedsynError

STATIC = Path(__file__).parent / "static"
MAX_UPLOAD_BYTES = 32 * 1024 * 1024     # a 16-bit 4k x 4k DICOM is 32 MB
MAX_PIXELS = 40_000_000                 # decoded-size guard, far above any radiograph (CR is about 15 MP)
DISPLAY_SIZE = 320                      # side of the preview and overlay pictures returned to the page
UPLOAD_KINDS = ("PNG", "JPEG", "DICOM")  # the page accepts these; the decoder's allow-list checks them again
# An ONNX model file runs without torch, for a small process; Grad-CAM needs torch's gradients, so it is off there.
GRAD_CAM_OFF = ("no Grad-CAM heat-map: this server runs the ONNX network, without torch; serve the .pt model file "
                "(`medsyn serve --model MODEL.pt`) to see one")


class UploadError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def sniff(head: bytes) -> str | None:
    """The file type from its first bytes (the decoder's own sniffing): png, jpeg or dicom, else None."""
    kind = sniff_image(head)
    return kind.lower() if kind in UPLOAD_KINDS else None


def png_data_url(rgb: np.ndarray) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def decode_upload(data: bytes, max_pixels: int) -> tuple[np.ndarray, str]:
    """Bytes -> the decoded uint8 image and its sniffed type, or an UploadError with the status and reason."""
    if not data:
        raise UploadError(400, "the uploaded file is empty.")
    kind = sniff(data[:132])
    if kind is None:
        raise UploadError(415, "not a PNG, JPEG or DICOM image: the file's content was checked, not its name.")
    with tempfile.TemporaryDirectory(prefix="medsyn-upload-") as folder:
        path = Path(folder) / f"upload.{'dcm' if kind == 'dicom' else kind}"
        path.write_bytes(data)
        try:
            width, height = native_size(path)
            if width * height > max_pixels:
                raise UploadError(413, f"the image is {width}x{height} pixels, over the limit of {max_pixels:,} "
                                       "pixels (a decompression-bomb guard); downscale it first.")
            image = load_image(path)
        except TooManyPixels as err:
            raise UploadError(413, f"the image is refused: {err}.") from err
        except BadImage as err:
            raise UploadError(422, f"the {kind.upper()} file cannot be decoded: {err}.") from err
    return image, kind


def analyse(model_file, data: bytes, max_pixels: int = MAX_PIXELS) -> dict:
    """One upload -> the prediction, its probabilities and the Grad-CAM overlay on the model's view of the image
    (with a torch model file; an ONNX one answers without it, and says why)."""
    from medsyn.app.gradcam import overlay
    from medsyn.app.predict import decide, predict_arrays, preprocess_image

    image, kind = decode_upload(data, max_pixels)
    prep = model_file.card["preprocessing"]
    batch = preprocess_image(image, prep)[None]
    with model_file.lock:
        probs = predict_arrays(model_file, batch)
        label = int(decide(probs, model_file.card.get("threshold"))[0])
        cam = None if model_file.model is None else torch_grad_cam(model_file, batch, label)
    view = resize_square(image, DISPLAY_SIZE, prep["aspect"])
    names = model_file.class_names
    heatmap = ({"method": "Grad-CAM", "class": names[label], "resolution": list(cam.shape)} if cam is not None else
               {"method": None, "class": names[label], "note": GRAD_CAM_OFF})
    return {
        "label": names[label],
        "probability": float(probs[0, label]),
        "probabilities": {name: float(p) for name, p in zip(names, probs[0])},
        "threshold": model_file.card.get("threshold"),
        "image": {"type": kind, "width": int(image.shape[1]), "height": int(image.shape[0])},
        "preview_png": png_data_url(overlay(view, np.zeros((1, 1), np.float32))),
        "heatmap_png": png_data_url(overlay(view, cam)) if cam is not None else None,
        "heatmap": heatmap,
        "notice": model_file.card.get("notice"),
    }


def torch_grad_cam(model_file, batch: np.ndarray, label: int) -> np.ndarray:
    """Grad-CAM of the torch network on one preprocessed image (1, S, S, C) uint8, on predict's own input."""
    import torch

    from medsyn.app.gradcam import grad_cam
    from medsyn.app.predict import network_input

    inputs = network_input(batch, model_file.card["preprocessing"]["normalization"])
    return grad_cam(model_file.model, torch.from_numpy(inputs), label)


class BodyLimit:
    """ASGI middleware: read a POST body up to max_bytes before the app parses it; answer 413 beyond that."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        too_big = f"the upload is larger than the limit of {self.max_bytes / 2**20:g} MB."
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            return await self.reject(send, too_big if declared.isdigit() else "invalid Content-Length header.")
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                return await self.reject(send, too_big)
            more = message.get("more_body", False)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                body = b"".join(chunks)
                chunks.clear()  # the joined body is the one copy from here on (an upload may be 32 MB)
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)

    @staticmethod
    async def reject(send, message: str) -> None:
        body = json.dumps({"error": message}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


def create_app(model_path: str | Path, max_upload_bytes: int = MAX_UPLOAD_BYTES,
               max_pixels: int = MAX_PIXELS) -> FastAPI:
    """The FastAPI app serving one model file (loaded once, here, so a bad file fails before serving)."""
    from medsyn.app.export import load_model_file

    model_file = load_model_file(model_path)
    model_file.lock = threading.Lock()
    app = FastAPI(title="medsyn", description="Apply a medsyn classifier. Research use only, not a medical device.")
    app.state.model_file = model_file

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    @app.exception_handler(HTTPException)
    async def http_error(request, exc):
        return error(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request, exc):
        return error(422, "invalid request: " + "; ".join(e.get("msg", "") for e in exc.errors()))

    @app.get("/", include_in_schema=False)
    def index():
        return FileResponse(STATIC / "index.html")

    @app.get("/api/model")
    def model_card():
        return model_file.card

    @app.post("/api/predict")
    async def predict(request: Request):
        try:
            form = await request.form(max_files=1, max_fields=10)
        except HTTPException as exc:
            return error(400, f"the request body is not valid multipart form data ({exc.detail}).")
        except Exception as exc:  # a malformed body is the client's fault whatever the parser raises
            return error(400, f"the request body is not valid multipart form data ({type(exc).__name__}).")
        try:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                return error(400, "send the image as a multipart/form-data file field named 'file'.")
            data = await upload.read()
        finally:
            await form.close()
        try:
            result = await run_in_threadpool(analyse, model_file, data, max_pixels)
        except UploadError as exc:
            return error(exc.status, str(exc))
        return {"filename": upload.filename, **result}

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_middleware(BodyLimit, max_bytes=max_upload_bytes)
    return app


def check_port_free(host: str, port: int) -> None:
    """Refuse a port out of range or taken before loading anything (uvicorn would exit with code 3 instead)."""
    import socket

    if not 1 <= port <= 65535:
        raise MedsynError(f"--port {port} is not a TCP port; choose 1 to 65535 (default 8000).")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as err:
        raise MedsynError(f"--host {host}: not an address of this machine ({err}).") from err
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(address)
        except OSError as err:
            raise MedsynError(f"cannot listen on {host}:{port} ({err.strerror or err}); the port is in use or "
                              "needs privileges: choose another --port.") from err


def serve(model_path: str | Path, host: str = "127.0.0.1", port: int = 8000) -> None:
    import uvicorn

    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        print(f"medsyn: warning: serving on {host}, reachable from other machines; there is no authentication.")
    check_port_free(host, port)
    app = create_app(model_path)
    print(f"medsyn: serving {model_path} on http://{host}:{port}/  (research use only, not a medical device)")
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning")
    except OSError as err:
        raise MedsynError(f"cannot listen on {host}:{port} ({err}); choose another --port.") from err
    except SystemExit as err:  # uvicorn exits with code 3 when it cannot bind, after logging why
        if err.code not in (0, None):
            raise MedsynError(f"cannot listen on {host}:{port} (the server stopped with code {err.code}); choose "
                              "another --port.") from err
