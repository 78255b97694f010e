"""Distribution metrics between real and synthetic feature sets: FID, KID, precision/recall/density/coverage,
and within-set diversity.

The metric code is the reference implementations': torch-fidelity's Frechet distance and KID (the code behind its
`fidelity` command and torchmetrics' FID), and the `prdc` package by the authors of density and coverage
(Naeem et al. 2020), whose precision and recall are Kynkaanniemi et al. 2019's k-NN manifold estimates.
medsyn only subsamples, feeds features and names the results.
"""

from __future__ import annotations

import contextlib
import io

import numpy as np


def frechet_distance(mu_1: np.ndarray, sigma_1: np.ndarray, mu_2: np.ndarray, sigma_2: np.ndarray) -> float:
    """||mu_1 - mu_2||^2 + Tr(S_1 + S_2 - 2 (S_1 S_2)^(1/2)) between two Gaussians."""
    from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_statistics_to_metric

    stats = [{"mu": np.asarray(m, np.float64), "sigma": np.atleast_2d(np.asarray(s, np.float64))}
             for m, s in ((mu_1, sigma_1), (mu_2, sigma_2))]
    return fid_statistics_to_metric(stats[0], stats[1], verbose=False)[KEY_METRIC_FID]


def fid(real: np.ndarray, fake: np.ndarray) -> float:
    """Frechet distance between the Gaussians fitted to two (N, D) feature sets."""
    return frechet_distance(real.mean(0), np.cov(real, rowvar=False), fake.mean(0), np.cov(fake, rowvar=False))


def kid(real: np.ndarray, fake: np.ndarray, subsets: int, subset_size: int, seed: int) -> tuple[float, float]:
    """Kernel Inception Distance (unbiased MMD^2, cubic polynomial kernel): mean and std over random subsets.

    The subset size shrinks to the smaller set's size, so small classes still get a value (a noisier one).
    """
    import torch
    from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric

    size = min(subset_size, len(real), len(fake))
    out = kid_features_to_metric(torch.from_numpy(real), torch.from_numpy(fake), kid_subsets=subsets,
                                 kid_subset_size=size, kid_kernel="poly",
                                 kid_kernel_poly_degree=3, kid_kernel_poly_gamma=None, kid_kernel_poly_coef0=1,
                                 rng_seed=seed, verbose=False)
    return out[KEY_METRIC_KID_MEAN], out[KEY_METRIC_KID_STD]


def prdc(real: np.ndarray, fake: np.ndarray, k: int) -> dict[str, float]:
    """Precision, recall (Kynkaanniemi et al. 2019), density and coverage (Naeem et al. 2020) with k neighbours."""
    from prdc import compute_prdc

    with contextlib.redirect_stdout(io.StringIO()):  # prdc prints the set sizes
        values = compute_prdc(real_features=real, fake_features=fake, nearest_k=k)
    return {name: float(value) for name, value in values.items()}


def mean_pairwise_distance(features: np.ndarray) -> float:
    """Mean Euclidean distance between distinct members of a set: its spread in feature space."""
    from scipy.spatial.distance import pdist

    return float(pdist(features).mean()) if len(features) > 1 else float("nan")


def compare(real: np.ndarray, fake: np.ndarray, k: int, kid_subsets: int, kid_subset_size: int, seed: int) -> dict:
    """Every distribution metric between one real and one synthetic feature set, with the set sizes."""
    if min(len(real), len(fake)) <= k + 1:  # prdc's k-th neighbour within a set counts the point itself
        return {"n_real": len(real), "n_synthetic": len(fake),
                "skipped": f"needs more than k+1={k + 1} images on each side"}
    kid_mean, kid_std = kid(real, fake, kid_subsets, kid_subset_size, seed)
    diversity_real, diversity_fake = mean_pairwise_distance(real), mean_pairwise_distance(fake)
    return {"n_real": len(real), "n_synthetic": len(fake), "fid": fid(real, fake), "kid": kid_mean,
            "kid_std": kid_std, **prdc(real, fake, k),
            "diversity_real": diversity_real, "diversity_synthetic": diversity_fake,
            "diversity_ratio": diversity_fake / diversity_real}
