"""`medsyn export`, `medsyn predict`, `medsyn serve`."""

from __future__ import annotations

import json
from pathlib import Path

from medsyn.config import count

MODEL_HELP = ("a model file from `medsyn export`: MODEL.pt runs with torch, MODEL.onnx (from `export --onnx`) with "
              "onnxruntime, without torch, in far less memory")


def register(verbs) -> None:
    export = verbs.add_parser("export", help="write a portable model file from a run's best seed (by validation)")
    export.add_argument("run_dir", type=Path, help="a run folder (RUN/arms/<arm>/seed<k>/) or one seed folder")
    export.add_argument("--arm", default=None, help="the arm to export (default: the best arm and seed on validation)")
    export.add_argument("--out", required=True, type=Path, help="the model file to write, e.g. model.pt")
    export.add_argument("--onnx", action="store_true", help="also write OUT with suffix .onnx: the network and its "
                        "card, which predict and serve run without torch (needs `pip install 'medsyn[onnx]'`)")
    export.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    export.set_defaults(func=run_export)

    predict = verbs.add_parser("predict", help="apply a model file to images (PNG, JPEG, DICOM, ...) or folders")
    predict.add_argument("--model", required=True, type=Path, help=MODEL_HELP)
    predict.add_argument("inputs", nargs="+", help="image files or folders (searched recursively)")
    predict.add_argument("--out", type=Path, default=None, help="also write the predictions to a .csv or .json file")
    predict.add_argument("--skip-bad", action="store_true", help="leave out unreadable files instead of failing")
    predict.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    predict.set_defaults(func=run_predict)

    serve = verbs.add_parser("serve", help="a web page and JSON API to apply a model file to uploaded images")
    serve.add_argument("--model", required=True, type=Path, help=MODEL_HELP + "; Grad-CAM needs the .pt file")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=count("--port", 65535), default=8000, help="port (default 8000)")
    serve.set_defaults(func=run_serve)


def run_export(args) -> int:
    from medsyn.app.export import export_model

    card = export_model(args.run_dir, args.out, arm=args.arm, overwrite=args.overwrite, onnx=args.onnx)
    trained = card["trained_on"]
    print(f"wrote {args.out}: arm {trained['arm']}, seed {trained['seed']} ({card['selection']['rule']}), "
          f"classes {card['class_names']}")
    if card.get("test_metrics"):
        shown = {k: v for k, v in card["test_metrics"].items() if isinstance(v, float)}
        print("test metrics of this seed (held-out real test split): " + json.dumps(shown))
    if card.get("onnx"):
        print(f"wrote {card['onnx']}")
    return 0


def run_predict(args) -> int:
    from medsyn.app.export import load_model_file
    from medsyn.app.predict import check_output, format_table, predict_files, write_predictions

    if args.out is not None:
        check_output(args.out, args.overwrite)
    model_file = load_model_file(args.model)
    rows = predict_files(model_file, args.inputs, skip_bad=args.skip_bad)
    print(format_table(rows))
    if args.out is not None:
        write_predictions(rows, args.out, model_file.card, overwrite=args.overwrite)
        print(f"wrote {args.out}")
    print(model_file.card["notice"])
    return 0


def run_serve(args) -> int:
    from medsyn.app.server import serve

    serve(args.model, host=args.host, port=args.port)
    return 0
