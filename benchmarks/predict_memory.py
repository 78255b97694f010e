"""Peak memory (resident set) of `medsyn predict` on a normal chest X-ray, a DICOM deflate bomb and a multi-frame
DICOM, beside `python -c "import torch"`, the floor of any process that runs a torch model; and of `medsyn serve`
answering the two hostile files as uploads. Each for both backends: the .pt model file (torch) and the .onnx one
that `medsyn export --onnx` writes beside it (onnxruntime, without torch; beside `import onnxruntime`).

    python benchmarks/predict_memory.py [--out benchmarks/results/predict_memory.json]

Every command runs in a child process of its own, and its peak is the kernel's high-water mark for that child
(`ru_maxrss` from os.wait4, what resource.getrusage(RUSAGE_CHILDREN) reports for one child), exit included. The
models are random-weight VGG16 classifiers saved as `medsyn classify train` saves them, at the quick preset's width
(0.125, 28 px) and the full preset's (1.0, 128 px), and their ONNX files as `medsyn export --onnx` writes them:
their memory does not depend on the weights' values.
The hostile files: a 128x128 DICOM in the deflated transfer syntax that inflates to 1.5 GiB (followed, after the
pixel data, by a private element of zeros), and a DICOM whose header and pixel data hold 2000 frames (900 for the
server, whose upload limit is 32 MB).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

from common import write_results  # a script in benchmarks/ imports its sibling

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
DICOM = FIXTURES / "dicom" / "NORMAL" / "IM-0152-0001.dcm"              # 128 x 128, 16 bits, one frame
XRAY = FIXTURES / "chest_xray_small" / "test" / "NORMAL" / "IM-0016-0001.jpeg"
LIMIT_MIB = 500  # issue 21's target for predict and the server on these files


# ---------------------------------------------------------------- the files

def dicom_from_fixture(path: Path, **header) -> Path:
    """The fixture DICOM with header elements replaced (e.g. NumberOfFrames=2000, Rows=8000)."""
    import pydicom

    ds = pydicom.dcmread(DICOM)
    for key, value in header.items():
        setattr(ds, key, value)
    ds.save_as(path)
    return path


def multi_frame(path: Path, frames: int) -> Path:
    """A DICOM holding `frames` real frames (its header and its pixel data agree): frames x 32 KiB on disk."""
    import pydicom

    ds = pydicom.dcmread(DICOM)
    ds.NumberOfFrames = frames
    ds.PixelData = ds.PixelData * frames
    ds.save_as(path)
    return path


def deflate_bomb(path: Path, inflated_mib: int) -> Path:
    """A valid 128x128 DICOM in the deflated transfer syntax, followed (after the pixel data) by a private element
    of `inflated_mib` MiB of zeros: a few MB on disk."""
    import pydicom
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset, write_file_meta_info

    plain = pydicom.dcmread(DICOM)
    body = DicomBytesIO()
    body.is_little_endian, body.is_implicit_VR = True, False
    write_dataset(body, plain)
    plain.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1.99"
    head = DicomBytesIO()
    head.is_little_endian, head.is_implicit_VR = True, False
    head.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(head, plain.file_meta, enforce_standard=True)
    deflater = zlib.compressobj(1, zlib.DEFLATED, -zlib.MAX_WBITS)
    chunks = [deflater.compress(body.getvalue()),
              deflater.compress(struct.pack("<HH2sHI", 0x7FE1, 0x1010, b"OB", 0, inflated_mib << 20))]
    zeros = bytes(1 << 20)
    chunks += [deflater.compress(zeros) for _ in range(inflated_mib)]
    path.write_bytes(head.getvalue() + b"".join(chunks) + deflater.flush())
    return path


def model_file(path: Path, width: float, size: int) -> Path:
    """A grayscale two-class VGG16 classifier file as training writes model.pt, with random weights."""
    import torch

    from medsyn.classify import models

    arch = {"arch": "vgg16", "n_classes": 2, "channels": 1, "width": width, "batch_norm": True, "dropout": 0.4}
    meta = {"arch": arch, "class_names": ["normal", "pneumonia"], "image_size": size, "channels": 1,
            "aspect": "center-crop", "normalization": models.normalization(False, 1),
            "threshold": {"rule": "youden_j_on_val", "value": 0.5}}
    torch.save(models.checkpoint(models.build(**arch), meta), path)
    return path


def onnx_file(model: Path) -> Path:
    """The model file's ONNX network and card, beside it, as `medsyn export --onnx` writes them."""
    from medsyn.app.export import export_onnx, load_torch

    torch_model = load_torch(model)
    export_onnx(torch_model.model, torch_model.card, model.with_suffix(".onnx"))
    return model.with_suffix(".onnx")


# ---------------------------------------------------------------- measuring

def environment() -> dict:
    """The child's environment: this checkout's medsyn first on the path."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}


def peak(argv: list[str]) -> dict:
    """Run `argv` as a child; its exit code, peak resident set in MiB and the error it wrote (stderr). Linux
    counts into a child's ru_maxrss the resident set of the process that spawned it, as it was at the exec, so the
    command is spawned by a launcher (this file with --peak-of) that holds only the standard library."""
    launched = subprocess.run([sys.executable, __file__, "--peak-of", *argv], capture_output=True, text=True,
                              env=environment(), check=True)
    return json.loads(launched.stdout)


def _launch(argv: list[str]) -> dict:
    """The launcher's side of `peak`."""
    with tempfile.TemporaryFile() as err:
        child = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        message = err.read().decode("utf-8", "replace").strip()
    return {"rc": child.returncode, "peak_mib": round(usage.ru_maxrss / 1024, 1), "message": message[:600]}


def floors() -> dict:
    """`import torch` alone, with its exit, and ended by os._exit (without torch's native teardown at exit); and
    `import onnxruntime` alone."""
    return {"import_torch": peak([sys.executable, "-c", "import torch"]),
            "import_torch_without_exit_teardown": peak([sys.executable, "-c", "import os, torch; os._exit(0)"]),
            "import_onnxruntime": peak([sys.executable, "-c", "import onnxruntime"])}


def predict_peak(model: Path, image: Path) -> dict:
    return peak([sys.executable, "-m", "medsyn", "predict", "--model", str(model), str(image)])


def _high_water_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        return round(next(int(line.split()[1]) for line in status if line.startswith("VmHWM")) / 1024, 1)


def serve_peak(model: Path, uploads: dict[str, Path]) -> dict:
    """`medsyn serve`: its peak resident set (VmHWM, which a new process starts afresh) once it answers, and after
    each upload (kind -> status and peak)."""
    import httpx

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    child = subprocess.Popen([sys.executable, "-m", "medsyn", "serve", "--model", str(model), "--port", str(port)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=environment())
    out = {"uploads": {}}
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(url + "/api/model", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or child.poll() is not None:
                raise RuntimeError("medsyn serve did not start")
            time.sleep(0.2)
        out["answering_peak_mib"] = _high_water_mib(child.pid)
        for kind, path in uploads.items():
            answer = httpx.post(url + "/api/predict", files={"file": (path.name, path.read_bytes())}, timeout=300)
            out["uploads"][kind] = {"status": answer.status_code, "bytes": path.stat().st_size,
                                    "peak_mib_after": _high_water_mib(child.pid),
                                    "message": answer.json().get("error", "")[:300] if answer.status_code >= 400
                                    else ""}
    finally:
        child.send_signal(signal.SIGINT)  # uvicorn's graceful stop
        child.wait(timeout=60)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "predict_memory.json")
    parser.add_argument("--peak-of", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)  # the launcher (see peak)
    args = parser.parse_args()
    if args.peak_of:
        print(json.dumps(_launch(args.peak_of)))
        return
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        inputs = {"normal chest X-ray (JPEG)": XRAY,
                  "deflate bomb (DICOM inflating to 1.5 GiB)": deflate_bomb(scratch / "bomb.dcm", 1536),
                  "multi-frame DICOM (2000 frames)": multi_frame(scratch / "frames.dcm", 2000)}
        torch_models = {"quick (vgg16 width 0.125, 28 px)": model_file(scratch / "quick.pt", 0.125, 28),
                        "full (vgg16 width 1, 128 px)": model_file(scratch / "full.pt", 1.0, 128)}
        backends = {"torch": torch_models, "onnxruntime": {m: onnx_file(path) for m, path in torch_models.items()}}
        floor = floors()
        predict = [{"backend": backend, "model": m, "input": i, **predict_peak(models[m], inputs[i])}
                   for backend, models in backends.items() for m in models for i in inputs]
        uploads = {"deflate bomb": inputs["deflate bomb (DICOM inflating to 1.5 GiB)"],
                   "multi-frame DICOM (900 frames)": multi_frame(scratch / "frames900.dcm", 900),
                   "normal chest X-ray": XRAY}
        serve = {backend: serve_peak(models["quick (vgg16 width 0.125, 28 px)"], uploads)
                 for backend, models in backends.items()}
        sizes = {name: path.stat().st_size for name, path in inputs.items()}
    result = {"method": "peak resident set in MiB: of each command's process (os.wait4 ru_maxrss through a launcher, "
                        "exit included); of the server, VmHWM after each upload",
              "limit_mib": LIMIT_MIB, "input_bytes": sizes, "floors": floor, "predict": predict, "serve": serve}
    write_results(args.out.stem, result, folder=args.out.parent)  # memory, but the machine's speed beside it
    print(f"import torch: {floor['import_torch']['peak_mib']} MiB "
          f"({floor['import_torch_without_exit_teardown']['peak_mib']} MiB ended before torch's exit teardown); "
          f"import onnxruntime: {floor['import_onnxruntime']['peak_mib']} MiB")
    for row in predict:
        print(f"predict {row['backend']:<12} {row['model']:<34} {row['input']:<44} rc {row['rc']}  "
              f"{row['peak_mib']:>7} MiB")
    for backend, answers in serve.items():
        print(f"serve {backend}: answering {answers['answering_peak_mib']} MiB; " + "; ".join(
            f"{k}: {v['status']}, {v['peak_mib_after']} MiB" for k, v in answers["uploads"].items()))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
