"""What synthetic images are worth in real images: read off the real-only learning curve.

For an arm at one real-data size, its worth is the number of real training images with which the real-only arm
reaches the same mean test metric: the real curve (mean over replicates per size, made non-decreasing) is
interpolated linearly in log(size). The 95% interval comes from resampling replicates (the same replicate indices
for the real curve and the arm, which share seeds), so it covers training randomness, not test-set sampling.
"""

from __future__ import annotations

import numpy as np

LEVEL = 0.95


def real_images_worth(sizes, real, arm, n_bootstrap: int = 2000, seed: int = 0) -> dict:
    """sizes (P,) real train images per curve point; real (P, R) the real-only arm's metric per point and
    replicate; arm (R,) the synthetic arm's metric at one point. Returns the worth in real images, its interval,
    and where it falls outside the curve ("above" the largest size or "below" the smallest)."""
    sizes = np.asarray(sizes, dtype=float)
    real, arm = np.asarray(real, dtype=float), np.asarray(arm, dtype=float)
    order = np.argsort(sizes)
    sizes, real = sizes[order], real[order]
    point, beyond = _invert(sizes, real.mean(1), arm.mean())
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(arm), size=(n_bootstrap, len(arm)))
    draws = np.array([_invert(sizes, real[:, p].mean(1), arm[p].mean())[0] for p in picks])
    alpha = (1 - LEVEL) / 2
    low, high = np.quantile(draws, [alpha, 1 - alpha])
    return {"worth": point, "ci_low": float(low), "ci_high": float(high), "beyond": beyond,
            "n_replicates": int(len(arm)), "curve_sizes": sizes.tolist()}


def _invert(sizes: np.ndarray, curve: np.ndarray, target: float) -> tuple[float, str | None]:
    """The size at which the non-decreasing curve reaches `target`, clamped to the curve's ends."""
    monotone = np.maximum.accumulate(curve) + np.arange(len(curve)) * 1e-12  # strictly increasing for interp
    if target > monotone[-1]:
        return float(sizes[-1]), "above"
    if target < monotone[0]:
        return float(sizes[0]), "below"
    return float(np.exp(np.interp(target, monotone, np.log(sizes)))), None
