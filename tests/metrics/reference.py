"""Slow, obvious NumPy transcriptions of the published metric formulas, one image at a time.

Used by tests, as the reference the batched torch metrics must match, and by the scoring
benchmark, as what a researcher would write.  Inputs are 2-D float64 arrays of valid
(non-degenerate) maps.  ``reference_scores`` runs one metric's reference over a set of images;
``random_arrays`` makes such a set.
"""

from __future__ import annotations

import numpy as np
from skimage.metrics import structural_similarity

EPS = 2.2204e-16


def nss_reference(saliency: np.ndarray, fixation_counts: np.ndarray) -> float:
    """Mean z-score (population std) over the list of fixations, one entry per fixation."""
    z_scored = (saliency - saliency.mean()) / saliency.std()
    rows, cols = np.nonzero(fixation_counts)
    fixations = []
    for row, col in zip(rows, cols):
        fixations += [(row, col)] * int(fixation_counts[row, col])
    return float(np.mean([z_scored[row, col] for row, col in fixations]))


def cc_reference(saliency: np.ndarray, density: np.ndarray) -> float:
    """Pearson correlation of the two maps' pixels."""
    return float(np.corrcoef(saliency.ravel(), density.ravel())[0, 1])


def kl_reference(saliency: np.ndarray, density: np.ndarray, eps: float = EPS) -> float:
    """MIT benchmark KL: normalise both to sum 1, sum(G * log(eps + G / (S + eps)))."""
    s = saliency / saliency.sum()
    g = density / density.sum()
    return float(np.sum(g * np.log(eps + g / (s + eps))))


def minmax(image: np.ndarray) -> np.ndarray:
    return (image - image.min()) / (image.max() - image.min())


def ssim_reference(saliency: np.ndarray, density: np.ndarray, window: str = "gaussian") -> float:
    """scikit-image's SSIM on the min-maxed maps, under gazebench's documented settings."""
    if window == "gaussian":
        return float(structural_similarity(
            minmax(saliency), minmax(density),
            gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0,
        ))
    return float(structural_similarity(minmax(saliency), minmax(density), data_range=1.0))


def normalised(image: np.ndarray) -> np.ndarray:
    """Min-max to [0, 1], then divide by the sum (the MIT code's normalisation for SIM and IG)."""
    scaled = minmax(image)
    return scaled / scaled.sum()


def sim_reference(saliency: np.ndarray, density: np.ndarray) -> float:
    """MIT benchmark SIM: sum of the pixel-wise minimum of the two normalised maps."""
    return float(np.sum(np.minimum(normalised(saliency), normalised(density))))


def info_gain_reference(saliency: np.ndarray, fixation_counts: np.ndarray, centre_bias: np.ndarray, eps: float = EPS) -> float:
    """MIT benchmark information gain over the centre bias, one entry per fixation."""
    s, b = normalised(saliency), normalised(centre_bias)
    gains = []
    for row, col in zip(*np.nonzero(fixation_counts)):
        gains += [np.log2(eps + s[row, col]) - np.log2(eps + b[row, col])] * int(fixation_counts[row, col])
    return float(np.mean(gains))


def auc_judd_reference(saliency: np.ndarray, fixation_counts: np.ndarray) -> float:
    """MIT AUC-Judd without jitter: one ROC point per fixated value, ties counted with >=."""
    s = saliency.ravel()
    fixated_values = s[fixation_counts.ravel() > 0]
    n_fixated, n_other = fixated_values.size, s.size - fixated_values.size
    true_positive, false_positive = [0.0], [0.0]
    for threshold in np.sort(fixated_values)[::-1]:
        fixated_above = np.sum(fixated_values >= threshold)
        true_positive.append(fixated_above / n_fixated)
        false_positive.append((np.sum(s >= threshold) - fixated_above) / n_other)
    true_positive.append(1.0)
    false_positive.append(1.0)
    return float(np.trapezoid(true_positive, false_positive))


def auc_shuffled_reference(saliency: np.ndarray, fixation_counts: np.ndarray, negative_counts: np.ndarray) -> float:
    """Share of (fixation, other image's fixation) pairs where the fixation's saliency is higher, ties 1/2."""
    positives = np.repeat(saliency.ravel(), fixation_counts.ravel().astype(int))
    negatives = np.repeat(saliency.ravel(), negative_counts.ravel().astype(int))
    higher = positives[:, None] > negatives[None, :]
    tied = positives[:, None] == negatives[None, :]
    return float(np.mean(higher + 0.5 * tied))


def centre_bias_corrected(reference, saliency: np.ndarray, centre_bias: np.ndarray, *targets) -> float:
    """A reference metric of the map minus the same metric of the centre-bias map."""
    return reference(saliency, *targets) - reference(centre_bias, *targets)


REFERENCES = {
    "ssim": lambda a, i: ssim_reference(a["maps"][i], a["density"][i]),
    "kl": lambda a, i: kl_reference(a["maps"][i], a["density"][i]),
    "nss": lambda a, i: nss_reference(a["maps"][i], a["fixations"][i]),
    "cc": lambda a, i: cc_reference(a["maps"][i], a["density"][i]),
    "sim": lambda a, i: sim_reference(a["maps"][i], a["density"][i]),
    "auc_judd": lambda a, i: auc_judd_reference(a["maps"][i], a["fixations"][i]),
    "auc_shuffled": lambda a, i: auc_shuffled_reference(a["maps"][i], a["fixations"][i], a["negatives"][i]),
    "info_gain": lambda a, i: info_gain_reference(a["maps"][i], a["fixations"][i], a["centre_bias"]),
    "cc_cb": lambda a, i: centre_bias_corrected(cc_reference, a["maps"][i], a["centre_bias"], a["density"][i]),
    "nss_cb": lambda a, i: centre_bias_corrected(nss_reference, a["maps"][i], a["centre_bias"], a["fixations"][i]),
    "sim_cb": lambda a, i: centre_bias_corrected(sim_reference, a["maps"][i], a["centre_bias"], a["density"][i]),
    "kl_cb": lambda a, i: centre_bias_corrected(kl_reference, a["maps"][i], a["centre_bias"], a["density"][i]),
}
"""metric name -> reference of image i of ``arrays`` (keys maps, density, fixations, negatives, centre_bias)."""


def reference_scores(name: str, arrays: dict) -> list[float]:
    """One metric's reference, image by image, over every map of ``arrays``."""
    return [REFERENCES[name](arrays, index) for index in range(len(arrays["maps"]))]


def random_arrays(shape: tuple[int, int, int], seed: int = 0, levels: int | None = None) -> dict:
    """Random float64 inputs for every metric: non-negative ``maps`` (quantised to ``levels``
    values, so with many ties, if given), ``density`` summing to 1, ``fixations`` counts (some
    pixels fixated twice, at least one fixation per map), ``negatives`` (the other maps' fixations),
    a ``centre_bias`` summing to 1 and a random localisation ``mask``.  Values are float32-exact.
    """
    rng = np.random.default_rng(seed)
    maps = rng.random(shape) ** 2
    if levels is not None:
        maps = np.floor(maps * levels) / levels
    density = rng.random(shape) ** 3
    density /= density.sum(axis=(1, 2), keepdims=True)
    fixations = rng.choice([0, 0, 0, 0, 0, 0, 1, 2], size=shape).astype(float)
    fixations[:, 0, 0] = 1
    centre_bias = rng.random(shape[1:]) + 0.1
    arrays = {
        "maps": maps,
        "density": density,
        "fixations": fixations,
        "negatives": fixations.sum(axis=0, keepdims=True) - fixations + rng.choice([0, 1], size=shape),
        "centre_bias": centre_bias / centre_bias.sum(),
        "mask": rng.random(shape) < 0.3,
    }
    return {key: value if value.dtype == bool else value.astype(np.float32).astype(np.float64) for key, value in arrays.items()}
