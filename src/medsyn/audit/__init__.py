"""The audit stage: how good and how safe a synthetic pool is, before any classifier uses it.

Feature spaces (features.py), fidelity against real images (fidelity.py: FID, precision/recall/density/coverage),
near-copies of training images (memorization.py, with the data layer's one near-copy detector), label fidelity
(run.py) and the same measures used to choose a diffusion model's guidance scale on real val (guidance.py). Only
train and val images are read.

Public API:
    medsyn.audit.run_audit(real, synthetic, out_dir, config, generator_name) -> dict     audit.json's content
    medsyn.audit.table_rows(audit) -> list[dict]                                          the report's table
    medsyn.audit.choose_guidance(real, sample, scales, config) -> dict                   a ddpm's scale, on real val
"""

import importlib

_API = {"run_audit": "medsyn.audit.run", "table_rows": "medsyn.audit.run", "as_synthetic": "medsyn.audit.run",
        "choose_guidance": "medsyn.audit.guidance"}
__all__ = sorted(_API)


def __getattr__(name: str):
    if name not in _API:
        raise AttributeError(f"module 'medsyn.audit' has no attribute {name!r}")
    return getattr(importlib.import_module(_API[name]), name)
