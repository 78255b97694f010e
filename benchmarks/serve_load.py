"""Load test of `medsyn serve`: 1,000 mixed valid and malformed uploads, concurrently, on loopback.

    python benchmarks/serve_load.py --model model.pt [--requests 1000] [--workers 16] [--note TEXT]

Starts the real app on real uvicorn (a free loopback port, in a thread), sends a shuffled mix of real chest
X-rays (JPEG, DICOM, PNG with alpha) and bad uploads (text named .png, empty, truncated JPEG, a 45-megapixel
PNG, a non-multipart body) from a thread pool with httpx, and prints p50/p95 latency per kind, the count of
answers with an unexpected status, and whether the server still answers afterwards.
Without --model it trains a tiny classifier on the bundled data first (about half a minute).
Writes benchmarks/results/serve_load_<date>.json (with the machine's reference speed: benchmarks/common.py).
"""

from __future__ import annotations

import argparse
import io
import random
import socket
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import uvicorn
from PIL import Image

from common import add_note_argument, dated, write_results

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures"


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def payloads() -> dict[str, tuple[dict, int]]:
    """kind -> (httpx request keyword arguments, expected status)."""
    xray = next((FIXTURES / "chest_xray_small" / "test" / "PNEUMONIA").iterdir())
    dicom = next((FIXTURES / "dicom").rglob("*.dcm"))
    rgba = Image.open(xray).convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(rgba.size))
    jpeg = xray.read_bytes()
    return {
        "jpeg": ({"files": {"file": (xray.name, jpeg)}}, 200),
        "dicom": ({"files": {"file": (dicom.name, dicom.read_bytes())}}, 200),
        "png_alpha": ({"files": {"file": ("alpha.png", png(rgba))}}, 200),
        "text_as_png": ({"files": {"file": ("notes.png", b"not an image at all")}}, 415),
        "empty": ({"files": {"file": ("empty.png", b"")}}, 400),
        "truncated_jpeg": ({"files": {"file": ("cut.jpeg", jpeg[: len(jpeg) // 2])}}, 422),
        "huge_png": ({"files": {"file": ("huge.png", png(Image.new("L", (9000, 5000))))}}, 413),
        "not_multipart": ({"content": b"\x00" * 512, "headers": {"content-type": "application/octet-stream"}}, 400),
    }


def tiny_model(folder: Path) -> Path:
    from medsyn import classify, data
    from medsyn.app import export_model
    from medsyn.config import ClassifyConfig

    classify.train_arm(data.load(), "real", 0, ClassifyConfig(width=0.0625, epochs=1), folder / "arms/real/seed0")
    export_model(folder, folder / "model.pt")
    return folder / "model.pt"


def start(model: Path) -> tuple[str, uvicorn.Server]:
    from medsyn.app.server import create_app

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(model), host="127.0.0.1", port=port, log_level="error"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return f"http://127.0.0.1:{port}", server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=16)
    add_note_argument(parser)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        model = args.model or tiny_model(Path(scratch))
        url, server = start(model)
        kinds = payloads()
        plan = [list(kinds)[i % len(kinds)] for i in range(args.requests)]
        random.Random(0).shuffle(plan)
        local = threading.local()

        def send(kind: str) -> tuple[str, float, int]:
            if not hasattr(local, "client"):
                local.client = httpx.Client(timeout=120)
            started = time.perf_counter()
            try:
                status = local.client.post(url + "/api/predict", **kinds[kind][0]).status_code
            except httpx.HTTPError:
                status = -1
            return kind, time.perf_counter() - started, status

        began = time.perf_counter()
        with ThreadPoolExecutor(args.workers) as pool:
            results = list(pool.map(send, plan))
        wall = time.perf_counter() - began
        alive = httpx.get(url + "/api/model", timeout=10).status_code == 200
        server.should_exit = True

    print(f"{args.requests} requests, {args.workers} concurrent clients, loopback, {wall:.1f} s "
          f"({args.requests / wall:.1f} requests/s)")
    print(f"{'kind':<16}{'n':>6}{'status':>8}{'p50 ms':>10}{'p95 ms':>10}{'unexpected':>12}")
    by_kind = []
    for kind, (_, expected) in kinds.items():
        rows = [r for r in results if r[0] == kind]
        ms = np.array([r[1] for r in rows]) * 1000
        wrong = sum(r[2] != expected for r in rows)
        print(f"{kind:<16}{len(rows):>6}{expected:>8}{np.percentile(ms, 50):>10.1f}{np.percentile(ms, 95):>10.1f}"
              f"{wrong:>12}")
        by_kind.append({"kind": kind, "n": len(rows), "expected_status": expected, "unexpected": int(wrong),
                        "p50_ms": round(float(np.percentile(ms, 50)), 1),
                        "p95_ms": round(float(np.percentile(ms, 95)), 1)})
    ms = np.array([r[1] for r in results]) * 1000
    errors = sum(r[2] != kinds[r[0]][1] for r in results)
    server_errors = sum(r[2] >= 500 or r[2] < 0 for r in results)
    print(f"{'all':<16}{len(results):>6}{'':>8}{np.percentile(ms, 50):>10.1f}{np.percentile(ms, 95):>10.1f}"
          f"{errors:>12}")
    print(f"unexpected statuses: {errors}; 5xx or connection errors: {server_errors}; "
          f"server still answering afterwards: {alive}")
    write_results(dated("serve_load"), {"requests": args.requests, "clients": args.workers, "wall_s": round(wall, 1),
                                        "by_kind": by_kind, "p50_ms": round(float(np.percentile(ms, 50)), 1),
                                        "p95_ms": round(float(np.percentile(ms, 95)), 1), "unexpected": int(errors),
                                        "server_errors": int(server_errors), "alive_afterwards": alive},
                  note=args.note)


if __name__ == "__main__":
    main()
