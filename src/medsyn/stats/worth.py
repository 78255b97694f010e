"""What extra images are worth in labelled real images: read off the matched control's learning curve.

For an arm at one learning-curve point, its worth is the number of labelled real images (train + val) with which
its matched control (`real` for real+synth@R, `real+aug` for an arm with augmentation) reaches the arm's mean test
metric. The control's curve is fitted monotone (isotonic regression of the mean on log size, so noise cannot bend
it down) and interpolated linearly in log size. The 95% interval comes from the same variance model as the
verdict's intervals: every point of the curve and the arm's mean are drawn from their t-distributions (mean,
standard error, degrees of freedom of `medsyn.stats.paired`), the curve refitted and inverted for each draw. The
draws are independent, although every point is scored on the same test split: their shared test-sampling error
would partly cancel, so the interval is conservative. An arm above the curve's end is worth "more than" the largest
size, and its interval is open at the top.
"""

from __future__ import annotations

import numpy as np

LEVEL = 0.95


def real_images_worth(sizes, curve: list[dict], arm: dict, n_draws: int = 2000, seed: int = 0) -> dict:
    """sizes (P,) labelled real images per curve point; curve: the control arm's estimate ({"mean", "se",
    "df"}) at each point; arm: the extra-image arm's estimate at one point. Returns the worth (None when the arm
    lies beyond the curve), its interval (an open end is None), and `beyond`: "above" the largest size, "below"
    the smallest, or None."""
    sizes = np.asarray(sizes, dtype=float)
    order = np.argsort(sizes)
    sizes, curve = sizes[order], [curve[i] for i in order]
    means = np.array([c["mean"] for c in curve], dtype=float)
    worth, beyond = _invert(sizes, means, arm["mean"])
    rng = np.random.default_rng(seed)
    draws = np.array([_invert(sizes, _draw(curve, rng), _draw([arm], rng)[0])[0] for _ in range(n_draws)])
    low, high = np.quantile(draws, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
    return {"worth": None if beyond else worth, "beyond": beyond, "bound": worth if beyond else None,
            "ci_low": _finite(low, sizes), "ci_high": _finite(high, sizes), "curve_sizes": sizes.tolist()}


def _draw(estimates: list[dict], rng: np.random.Generator) -> np.ndarray:
    """One draw of each estimate's mean from its t-distribution (a point without an se stays at its mean)."""
    out = []
    for e in estimates:
        se, df = e.get("se") or 0.0, e.get("df") or np.inf
        out.append(e["mean"] + se * (rng.standard_t(df) if np.isfinite(df) else rng.standard_normal()))
    return np.array(out)


def _invert(sizes: np.ndarray, means: np.ndarray, target: float) -> tuple[float, str | None]:
    """The size at which the isotonic fit of `means` on log size reaches `target`; beyond the fit's top the largest
    size (beyond "above"), below its bottom the smallest (beyond "below")."""
    from sklearn.isotonic import IsotonicRegression

    fitted = IsotonicRegression(increasing=True).fit_transform(np.log(sizes), means)
    if target > fitted[-1]:
        return float(sizes[-1]), "above"
    if target < fitted[0]:
        return float(sizes[0]), "below"
    rising = np.r_[True, np.diff(fitted) > 0]  # flat steps: the first size that reaches the level
    return float(np.exp(np.interp(target, fitted[rising], np.log(sizes[rising])))), None


def _finite(value: float, sizes: np.ndarray) -> float | None:
    """A quantile of the draws, None where it falls on an open end of the curve."""
    return None if value >= sizes[-1] or value <= sizes[0] else float(value)
