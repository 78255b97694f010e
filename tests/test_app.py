"""export / predict / serve on a really trained tiny classifier, real chest X-rays and real uploads."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from conftest import CHEST_XRAY_SMALL, DICOM_DIR
from fixtures_app import APP_SEEDS
from medsyn import classify, data
from medsyn.app import export_model, grad_cam, load_model_file, predict_files
from medsyn.app.server import create_app
from medsyn.cli import main
from medsyn.config import DataConfig
from medsyn.errors import MedsynError
from medsyn.metrics import classification_metrics
from medsyn.fileio import read_json
from tiny import TINY_CLASSIFY

XRAY = CHEST_XRAY_SMALL / "test" / "PNEUMONIA" / sorted(p.name for p in (CHEST_XRAY_SMALL / "test" / "PNEUMONIA").iterdir())[0]
DICOM = sorted(DICOM_DIR.rglob("*.dcm"))[0]
FIXTURE_IMAGES = [CHEST_XRAY_SMALL, DICOM_DIR]


@pytest.fixture(scope="module")
def model_file(app_model):
    return load_model_file(app_model)


@pytest.fixture(scope="module")
def client(app_model):
    from fastapi.testclient import TestClient

    with TestClient(create_app(app_model)) as test_client:
        yield test_client


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


# ---------------------------------------------------------------- export

@pytest.mark.slow
def test_export_picks_the_best_seed_on_validation_and_writes_the_card(app_run, model_file):
    val_auc = {f"real/seed{s}": read_json(app_run / "arms" / "real" / f"seed{s}" / "val_metrics.json")["auc"]
               for s in APP_SEEDS}
    card = model_file.card
    assert card["selection"]["metric"] == "auc" and card["selection"]["candidates"] == val_auc
    best_seed = int(max(val_auc, key=val_auc.get).split("seed")[1])
    assert card["trained_on"]["seed"] == best_seed and card["trained_on"]["arm"] == "real"
    assert card["trained_on"]["data_source"].endswith("pneumoniamnist.npz")
    assert card["test_metrics"] == read_json(app_run / "arms" / "real" / f"seed{best_seed}" / "test_metrics.json")
    assert card["arm_test_metrics"]["metrics"]["auc"]["ci_low"] <= card["arm_test_metrics"]["metrics"]["auc"]["mean"]
    assert "not a medical device" in card["notice"].lower()
    assert card["preprocessing"]["image_size"] == 28 and card["preprocessing"]["channels"] == 1


@pytest.mark.slow
def test_exported_model_reproduces_the_run_test_metrics_to_the_last_bits(model_file, app_dataset):
    test = app_dataset.subset("test")
    from medsyn.app.predict import predict_arrays

    proba = predict_arrays(model_file, test.images)
    threshold = model_file.card["threshold"]["value"]
    saved = model_file.card["test_metrics"]
    recomputed = classification_metrics(test.labels, proba, threshold)
    # The app's numpy softmax and the run's torch one may differ in the last bit of a probability, and so the AUC's
    # trapezoid sum; every count must match exactly.
    rates = {k for k, v in recomputed.items() if isinstance(v, float)}
    assert {k: recomputed[k] for k in rates} == pytest.approx({k: saved[k] for k in rates}, rel=1e-12, abs=0)
    counts = recomputed.keys() - rates
    assert {k: recomputed[k] for k in counts} == {k: saved[k] for k in counts}
    assert recomputed["n"] == 624 and {"auc", "sensitivity", "specificity"} <= rates


@pytest.mark.slow
def test_export_refuses_what_it_cannot_do(app_run, app_model, tmp_path):
    with pytest.raises(MedsynError, match="already exists"):
        export_model(app_run, app_model)
    with pytest.raises(MedsynError, match="no trained arm 'synth'.*real"):
        export_model(app_run, tmp_path / "m.pt", arm="synth")
    with pytest.raises(MedsynError, match="no trained classifier"):
        export_model(tmp_path, tmp_path / "m.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(MedsynError, match="model file .*not a file of tensors"):
        load_model_file(tmp_path / "junk.pt")
    try:
        import onnx  # noqa: F401
    except ImportError:
        with pytest.raises(MedsynError, match="pip install onnx"):
            export_model(app_run, tmp_path / "m.pt", onnx=True)
        assert not (tmp_path / "m.pt").exists()


@pytest.mark.slow
def test_export_cli_from_one_seed_folder(app_run, tmp_path, capsys):
    out = tmp_path / "seed0.pt"
    assert main(["export", str(app_run / "arms" / "real" / "seed0"), "--out", str(out)]) == 0
    assert "seed 0" in capsys.readouterr().out
    assert load_model_file(out).card["trained_on"]["seed"] == 0


# ---------------------------------------------------------------- predict

@pytest.mark.slow
def test_predict_on_real_xrays_matches_the_in_memory_model(app_run, model_file):
    """Files decoded and preprocessed by predict == the data stage's arrays through the run's own model.pt."""
    seed = model_file.card["trained_on"]["seed"]
    model, meta = classify.load_model(app_run / "arms" / "real" / f"seed{seed}" / "model.pt")
    for source in (CHEST_XRAY_SMALL, DICOM_DIR):
        dataset = data.load(source, DataConfig(size=28, channels=1))
        expected = dict(zip(map(str, dataset.paths), classify.predict_proba(model, meta, dataset.images)))
        rows = predict_files(model_file, [source])
        assert len(rows) == len(expected) == len(dataset.paths)
        for row in rows:
            assert row["p_normal"] == pytest.approx(expected[row["path"]][0], abs=1e-6)
            assert row["p_pneumonia"] == pytest.approx(expected[row["path"]][1], abs=1e-6)
            positive = expected[row["path"]][1] >= model_file.card["threshold"]["value"]
            assert row["label"] == ("pneumonia" if positive else "normal")


def test_the_training_aspect_policy_travels_with_the_model(tmp_path):
    """A model trained on padded non-square X-rays pads them again in predict (center-crop would differ)."""
    source = tmp_path / "wide"
    for path in sorted(CHEST_XRAY_SMALL.rglob("*.jpeg")):
        target = source / path.relative_to(CHEST_XRAY_SMALL)
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.open(path).resize((320, 200)).save(target)            # real X-rays, made wide
    dataset = data.load(source, DataConfig(size=32, aspect="pad"))
    run = tmp_path / "run" / "arms" / "real" / "seed0"
    classify.train_arm(dataset, "real", 0, TINY_CLASSIFY, run)
    card = export_model(run, tmp_path / "model.pt")
    assert card["preprocessing"]["aspect"] == "pad"
    model, meta = classify.load_model(run / "model.pt")
    expected = classify.predict_proba(model, meta, dataset.images)
    rows = {r["path"]: r for r in predict_files(load_model_file(tmp_path / "model.pt"), [source])}
    for path, proba in zip(map(str, dataset.paths), expected):
        assert rows[path]["p_PNEUMONIA"] == pytest.approx(proba[1], abs=1e-6)


@pytest.mark.slow
def test_predict_cli_writes_csv_and_json(app_model, tmp_path, capsys):
    out_csv, out_json = tmp_path / "p.csv", tmp_path / "p.json"
    assert main(["predict", "--model", str(app_model), str(XRAY), str(DICOM), "--out", str(out_csv)]) == 0
    printed = capsys.readouterr().out
    assert XRAY.name in printed and "not a medical device" in printed.lower()
    rows = list(csv.DictReader(out_csv.open()))
    assert [Path(r["path"]).name for r in rows] == [XRAY.name, DICOM.name]
    assert main(["predict", "--model", str(app_model), str(XRAY), "--out", str(out_json)]) == 0
    saved = json.loads(out_json.read_text())
    assert saved["predictions"][0]["p_pneumonia"] == pytest.approx(float(rows[0]["p_pneumonia"]), abs=1e-6)
    assert main(["predict", "--model", str(app_model), str(XRAY), "--out", str(out_json)]) == 2   # no overwrite


@pytest.mark.slow
def test_predict_reports_every_bad_file(app_model, tmp_path, capsys):
    (tmp_path / "fake.png").write_text("not an image")
    assert main(["predict", "--model", str(app_model), str(XRAY), str(tmp_path / "fake.png")]) == 2
    assert "fake.png" in capsys.readouterr().err
    assert main(["predict", "--model", str(app_model), str(XRAY), str(tmp_path / "fake.png"), "--skip-bad"]) == 0


# ---------------------------------------------------------------- Grad-CAM

def test_grad_cam_finds_the_evidence_in_a_known_network():
    """A network whose class-1 score is the brightness it sees: the map must peak where the bright patch is."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    with torch.no_grad():
        for conv in (model[0], model[2]):
            conv.weight.fill_(1 / 9)
            conv.bias.zero_()
        model[6].weight.copy_(torch.tensor([[-1.0] * 4, [1.0] * 4]))
        model[6].bias.zero_()
    image = torch.zeros(1, 1, 16, 16)
    image[..., 10:14, 2:6] = 1.0
    cam = grad_cam(model.eval(), image, target=1)
    assert cam.shape == (16, 16) and cam.max() == pytest.approx(1.0)
    peak = np.unravel_index(cam.argmax(), cam.shape)
    assert 9 <= peak[0] <= 14 and 1 <= peak[1] <= 6
    assert cam[:6, 10:].max() == 0.0          # no evidence far from the patch
    assert grad_cam(model, image, target=0).max() == 0.0   # class 0 is lowered by brightness: nothing raises it


# ---------------------------------------------------------------- the API

@pytest.mark.slow
def test_api_predicts_a_real_jpeg_like_predict_does(client, model_file):
    reply = client.post("/api/predict", files={"file": (XRAY.name, XRAY.read_bytes(), "image/jpeg")})
    assert reply.status_code == 200
    body = reply.json()
    row = predict_files(model_file, [XRAY])[0]
    assert body["label"] == row["label"] and body["probability"] == pytest.approx(row["probability"], abs=1e-6)
    assert body["image"] == {"type": "jpeg", "width": 224, "height": 224}
    heatmap = Image.open(io.BytesIO(__import__("base64").b64decode(body["heatmap_png"].split(",", 1)[1])))
    assert heatmap.size == (320, 320) and heatmap.mode == "RGB"


@pytest.mark.slow
def test_api_reads_dicom_and_png_with_alpha(client, model_file, tmp_path):
    reply = client.post("/api/predict", files={"file": ("scan.bin", DICOM.read_bytes(), "application/octet-stream")})
    assert reply.status_code == 200 and reply.json()["image"]["type"] == "dicom"
    assert reply.json()["probability"] == pytest.approx(predict_files(model_file, [DICOM])[0]["probability"], abs=1e-6)
    rgba = Image.open(XRAY).convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(rgba.size))
    (tmp_path / "alpha.png").write_bytes(png_bytes(rgba))
    reply = client.post("/api/predict", files={"file": ("alpha.png", png_bytes(rgba), "image/png")})
    assert reply.status_code == 200 and reply.json()["image"]["type"] == "png"
    expected = predict_files(model_file, [tmp_path / "alpha.png"])[0]
    assert reply.json()["probabilities"]["pneumonia"] == pytest.approx(expected["p_pneumonia"], abs=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("name, content, status, message", [
    ("notes.png", b"just some text, named like an image", 415, "not a PNG, JPEG or DICOM"),
    ("empty.png", b"", 400, "empty"),
    ("cut.jpeg", XRAY.read_bytes()[: XRAY.stat().st_size // 2], 422, "truncated"),
    ("header.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, 422, "cannot be decoded"),
    ("fake.dcm", b"\x00" * 128 + b"DICM" + b"\x02" * 64, 422, "cannot be decoded"),
])
def test_api_rejects_bad_uploads_with_a_clear_4xx(client, name, content, status, message):
    reply = client.post("/api/predict", files={"file": (name, content, "image/png")})
    assert reply.status_code == status, reply.text
    assert message in reply.json()["error"]


@pytest.mark.slow
def test_api_rejects_huge_images_and_bodies(app_model):
    from fastapi.testclient import TestClient

    huge = Image.new("L", (9000, 5000))      # 45 MP of black: a 44 kB PNG that decodes to 45 MB
    with TestClient(create_app(app_model, max_upload_bytes=1_000_000)) as client:
        reply = client.post("/api/predict", files={"file": ("huge.png", png_bytes(huge), "image/png")})
        assert reply.status_code == 413 and "9000x5000" in reply.json()["error"]
        reply = client.post("/api/predict", files={"file": ("big.jpeg", b"\xff\xd8\xff" + b"\x00" * 1_100_000)})
        assert reply.status_code == 413 and "larger than the limit" in reply.json()["error"]


@pytest.mark.slow
def test_api_rejects_bodies_without_a_file(client):
    assert client.post("/api/predict").status_code == 400
    reply = client.post("/api/predict", content=b"--x\r\nbroken", headers={"content-type": "multipart/form-data"})
    assert reply.status_code == 400 and "multipart" in reply.json()["error"]
    reply = client.post("/api/predict", data={"image": "text"})
    assert reply.status_code == 400 and "'file'" in reply.json()["error"]


@pytest.mark.slow
def test_api_model_card(client, model_file):
    card = client.get("/api/model").json()
    assert card["trained_on"]["arm"] == "real" and card["test_metrics"]["n"] == 624
    auc = card["arm_test_metrics"]["metrics"]["auc"]
    assert auc["ci_low"] <= auc["mean"] <= auc["ci_high"] and card["arm_test_metrics"]["replicates"] == list(APP_SEEDS)
    page = client.get("/")
    assert page.status_code == 200 and "app.js" in page.text


@pytest.mark.slow
def test_live_server_answers_concurrent_mixed_requests(live_server):
    """Real uvicorn on loopback: 24 concurrent valid and malformed uploads get the right answers, identical
    images get identical predictions, and nothing is left in the temporary folder."""
    jobs = [("x.jpeg", XRAY.read_bytes(), 200), ("d.dcm", DICOM.read_bytes(), 200),
            ("t.png", b"text", 415), ("e.png", b"", 400)] * 6

    def send(job):
        name, content, _ = job
        with httpx.Client(timeout=60) as http:
            return http.post(live_server + "/api/predict", files={"file": (name, content)})

    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(send, jobs))
    assert [r.status_code for r in replies] == [status for _, _, status in jobs]
    jpeg = {r.json()["probability"] for r, job in zip(replies, jobs) if job[0] == "x.jpeg"}
    assert len(jpeg) == 1
    assert httpx.get(live_server + "/api/model").status_code == 200
    assert not list(Path(tempfile.gettempdir()).glob("medsyn-upload-*"))


# ---------------------------------------------------------------- the ONNX path: predict and serve without torch

@pytest.fixture(scope="module")
def onnx_pair(tmp_path_factory) -> tuple[Path, Path]:
    """A random-weight VGG16 (width 1/16, 28 px) as a model file with a card, and beside it its ONNX file as
    `medsyn export --onnx` writes it: one network for both backends. Its batch-norm statistics are those of the
    fixture images (random weights alone give every image the same probability to 1e-7, no decision to compare)
    and its threshold lies between the middle two images' probabilities."""
    pytest.importorskip("onnx", reason="ONNX export needs `pip install '.[onnx]'`")
    pytest.importorskip("onnxruntime", reason="the ONNX path needs `pip install '.[onnx]'`")
    import torch

    from medsyn.app.export import export_onnx, load_torch
    from medsyn.app.predict import expand_paths, network_input, preprocess_image
    from medsyn.classify import models
    from medsyn.data.images import load_image

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("onnx-pair")
    arch = {"arch": "vgg16", "n_classes": 2, "channels": 1, "width": 0.0625, "batch_norm": True, "dropout": 0.4}
    meta = {"arch": arch, "class_names": ["normal", "pneumonia"], "image_size": 28, "channels": 1,
            "aspect": "center-crop", "normalization": models.normalization(False, 1),
            "threshold": {"rule": "youden_j_on_val", "value": 0.5}}
    network = models.build(**arch)
    images = np.stack([preprocess_image(load_image(path), meta) for path in expand_paths(FIXTURE_IMAGES)])
    for layer in network.modules():
        layer.momentum = None   # batch norm: the plain mean over what it sees
    with torch.no_grad():
        network.train()(torch.from_numpy(network_input(images, meta["normalization"])))
    torch.save(models.checkpoint(network.eval(), meta), folder / "model.pt")
    probs = np.sort([row["p_pneumonia"] for row in predict_files(load_torch(folder / "model.pt"), FIXTURE_IMAGES)])
    meta["threshold"]["value"] = float(probs[len(probs) // 2 - 1:][:2].mean())
    torch.save(models.checkpoint(network, meta), folder / "model.pt")
    torch_file = load_torch(folder / "model.pt")
    export_onnx(torch_file.model, torch_file.card, folder / "model.onnx")
    return folder / "model.pt", folder / "model.onnx"


def test_predict_normalizes_bit_for_bit_as_training_does():
    """The one numpy preprocessing both backends share gives the very inputs training's torch path gave."""
    from medsyn.app.predict import network_input
    from medsyn.classify.models import normalization
    from medsyn.tensors import to_tensor

    rng = np.random.default_rng(0)
    for pretrained, channels in ((False, 1), (True, 1), (True, 3)):
        norm = normalization(pretrained, channels)
        images = rng.integers(0, 256, (5, 16, 12, channels), dtype=np.uint8)
        assert np.array_equal(network_input(images, norm), to_tensor(images, norm).numpy())


def test_the_onnx_network_gives_torch_s_predictions(onnx_pair):
    """Same model, same images (every X-ray and DICOM fixture): probabilities within 1e-5, the same decisions."""
    torch_path, onnx_path = onnx_pair
    torch_file, onnx_file = load_model_file(torch_path), load_model_file(onnx_path)
    assert (torch_file.backend, onnx_file.backend) == ("torch", "onnxruntime") and onnx_file.model is None
    assert onnx_file.card == torch_file.card
    by_torch = predict_files(torch_file, FIXTURE_IMAGES)
    by_onnx = predict_files(onnx_file, FIXTURE_IMAGES)
    assert [r["path"] for r in by_onnx] == [r["path"] for r in by_torch] and len(by_torch) == 67
    gaps = [abs(a[k] - b[k]) for a, b in zip(by_torch, by_onnx) for k in ("p_normal", "p_pneumonia")]
    assert max(gaps) < 1e-5
    assert [r["label"] for r in by_onnx] == [r["label"] for r in by_torch]
    assert {r["label"] for r in by_torch} == {"normal", "pneumonia"}  # the card's threshold splits them


def test_predict_and_serve_on_an_onnx_model_file_never_import_torch(onnx_pair, tmp_path):
    """In a fresh interpreter: `medsyn predict` and the server's answer to an upload, and then no torch module."""
    script = ("import sys\n"
              "from fastapi.testclient import TestClient\n"
              "from medsyn.app.server import create_app\n"
              "from medsyn.cli import main\n"
              "model, image, out = sys.argv[1:]\n"
              "code = main(['predict', '--model', model, image, '--out', out])\n"
              "with TestClient(create_app(model)) as client:\n"
              "    status = client.post('/api/predict', files={'file': ('x.jpeg', open(image, 'rb').read())}).status_code\n"
              "print(code, status, 'torch' in sys.modules)\n")
    source = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([source, os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", script, str(onnx_pair[1]), str(XRAY), str(tmp_path / "p.csv")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.stdout.splitlines()[-1:] == ["0 200 False"], done.stdout + done.stderr
    assert (tmp_path / "p.csv").is_file()


def test_serve_answers_from_an_onnx_model_file_and_says_why_there_is_no_grad_cam(onnx_pair):
    from fastapi.testclient import TestClient

    torch_path, onnx_path = onnx_pair
    with TestClient(create_app(onnx_path)) as client:
        body = client.post("/api/predict", files={"file": (XRAY.name, XRAY.read_bytes())}).json()
        card = client.get("/api/model").json()
    expected = predict_files(load_model_file(torch_path), [XRAY])[0]
    assert body["label"] == expected["label"]
    assert body["probabilities"]["pneumonia"] == pytest.approx(expected["p_pneumonia"], abs=1e-5)
    assert body["heatmap_png"] is None and body["heatmap"]["method"] is None
    assert "ONNX network, without torch" in body["heatmap"]["note"] and "MODEL.pt" in body["heatmap"]["note"]
    assert body["preview_png"].startswith("data:image/png;base64,")
    assert card == load_model_file(torch_path).card


def test_the_torch_path_says_in_one_line_how_to_run_without_torch(onnx_pair, capsys):
    torch_path, onnx_path = onnx_pair
    assert main(["predict", "--model", str(torch_path), str(XRAY)]) == 0
    notes = [line for line in capsys.readouterr().out.splitlines() if "with torch" in line]
    assert len(notes) == 1 and "pip install 'medsyn[onnx]'" in notes[0] and "--onnx" in notes[0], notes
    assert "--model model.onnx" in notes[0]
    assert main(["predict", "--model", str(onnx_path), str(XRAY)]) == 0
    assert "with torch" not in capsys.readouterr().out


def test_an_onnx_model_file_without_onnxruntime_is_a_message(onnx_pair, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as where it is not installed: importing it fails
    assert main(["predict", "--model", str(onnx_pair[1]), str(XRAY)]) == 2
    err = capsys.readouterr().err
    assert "needs onnxruntime" in err and "pip install 'medsyn[onnx]'" in err and ".pt model file" in err, err
