"""Apply a trained classifier: a portable model file (export), batch prediction (predict), a web page (serve).

Public API:
    export_model(run_dir, out, arm=None, overwrite=False, onnx=False) -> dict    the best seed by validation
    load_model_file(path) -> ModelFile                                          card, network: .pt by torch, .onnx by onnxruntime
    predict_files(model_file, paths, skip_bad=False) -> list[dict]              per-file probabilities
    grad_cam(model, inputs, target) -> np.ndarray                               heat-map in [0, 1]
    create_app(model_path) -> FastAPI, serve(model_path, host, port)
"""

from medsyn.app.export import ModelFile, export_model, load_model_file
from medsyn.app.gradcam import grad_cam
from medsyn.app.predict import predict_files, preprocess_image

__all__ = ["ModelFile", "export_model", "grad_cam", "load_model_file", "predict_files", "preprocess_image"]
