"""Quality of posterior predictions: accuracy, NLL, calibration, Brier score, OOD detection, RMSE.

Classification metrics take predictive probabilities of shape (num_points, num_classes) (for a
posterior, the average over draws of each draw's probabilities) and integer labels of shape
(num_points,). All return Python floats.
"""

from __future__ import annotations

import numpy as np
from scipy.special import logsumexp
from sklearn.metrics import roc_auc_score

from sgmcmc._checks import count, positive

__all__ = [
    "accuracy",
    "negative_log_likelihood",
    "expected_calibration_error",
    "reliability_bins",
    "brier_score",
    "predictive_entropy",
    "ood_auroc",
    "root_mean_squared_error",
    "gaussian_mixture_negative_log_likelihood",
    "mixture_negative_log_likelihood",
]

_TINY = np.finfo(np.float64).tiny
_SUM_TOLERANCE = 1e-3
"""How far a row of probabilities may sum from 1: float32 softmax averages are off by about
num_classes × 1e-7; logits or log-probabilities passed by mistake are off by far more."""


def _probabilities(probabilities: np.ndarray) -> np.ndarray:
    """``probabilities`` (…, num_classes) as float64, or a ValueError if they are not probabilities."""
    probabilities = np.asarray(probabilities, np.float64)
    if not np.isfinite(probabilities).all():
        raise ValueError("probabilities hold non-finite values")
    sums = probabilities.sum(axis=-1)
    if probabilities.size and (
        probabilities.min() < 0 or probabilities.max() > 1 or np.abs(sums - 1).max() > _SUM_TOLERANCE
    ):
        raise ValueError(
            f"probabilities must lie in [0, 1] and each row sum to 1; got values from {probabilities.min():.4g} "
            f"to {probabilities.max():.4g} and row sums from {sums.min():.4g} to {sums.max():.4g} (logits? "
            "pass the softmax, averaged over draws)"
        )
    return probabilities


def _values(name: str, values: np.ndarray) -> np.ndarray:
    """``values`` as float64, or a ValueError naming ``name`` if they are empty or not all finite."""
    values = np.asarray(values, np.float64)
    if values.size == 0:
        raise ValueError(f"{name} is empty: there are no points to score")
    if not np.isfinite(values).all():
        raise ValueError(f"{name} holds non-finite values")
    return values


def _check(probabilities: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    probabilities, labels = np.asarray(probabilities, np.float64), np.asarray(labels)
    if probabilities.ndim != 2 or labels.shape != probabilities.shape[:1]:
        raise ValueError(
            f"probabilities must be (num_points, num_classes) and labels (num_points,); "
            f"got {probabilities.shape} and {labels.shape}"
        )
    if len(labels) == 0:
        raise ValueError("there are no points to score: probabilities and labels are empty")
    probabilities = _probabilities(probabilities)
    num_classes = probabilities.shape[1]
    if not (np.issubdtype(labels.dtype, np.number) and (labels == np.round(labels)).all()):
        raise ValueError(f"labels must be integer class indices, got dtype {labels.dtype} values such as {labels[:3]}")
    if labels.size and not (0 <= labels.min() and labels.max() < num_classes):
        raise ValueError(f"labels must be in [0, {num_classes}), got values from {labels.min()} to {labels.max()}")
    return probabilities, labels.astype(np.int64)


def accuracy(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """The fraction of points whose most probable class is the label."""
    probabilities, labels = _check(probabilities, labels)
    return float((probabilities.argmax(axis=1) == labels).mean())


def negative_log_likelihood(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """−(1/n) Σ_i log p(y_i | x_i), in nats per point, with p floored at the smallest normal float64
    (2.2e-308): a label given probability 0 counts 708.4 nats, not inf, so one such point does not
    hide every other point's score."""
    probabilities, labels = _check(probabilities, labels)
    return float(-np.log(np.maximum(probabilities[np.arange(len(labels)), labels], _TINY)).mean())


def reliability_bins(
    probabilities: np.ndarray, labels: np.ndarray, num_bins: int = 15
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top-label confidence and accuracy in ``num_bins`` equal-width confidence bins of (0, 1].

    Returns:
        (mean confidence, accuracy, number of points), each of shape (num_bins,); empty bins
        have NaN confidence and accuracy.
    """
    probabilities, labels = _check(probabilities, labels)
    num_bins = count("num_bins", num_bins, 1)
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    # by the edges themselves: ceil(confidence · num_bins) puts 0.07 in (0.07, 0.08] of 100 bins (7.000000000000001);
    # edge k is k / num_bins, the float a confidence of exactly k/num_bins is (linspace's 5/6 is one ulp below it)
    edges = np.arange(num_bins + 1) / num_bins
    bins = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, num_bins - 1)
    counts = np.bincount(bins, minlength=num_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_confidence = np.bincount(bins, weights=confidence, minlength=num_bins) / counts
        bin_accuracy = np.bincount(bins, weights=correct, minlength=num_bins) / counts
    return mean_confidence, bin_accuracy, counts


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, num_bins: int = 15) -> float:
    """ECE = Σ_b (n_b / n) |accuracy_b − confidence_b| over equal-width bins of top-label confidence
    (Guo, Pleiss, Sun & Weinberger 2017, eq. 3)."""
    confidence, bin_accuracy, counts = reliability_bins(probabilities, labels, num_bins)
    filled = counts > 0
    return float((counts[filled] * np.abs(bin_accuracy[filled] - confidence[filled])).sum() / counts.sum())


def brier_score(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """(1/n) Σ_i Σ_c (p_ic − 1[y_i = c])² (Brier 1950; ranges over [0, 2])."""
    probabilities, labels = _check(probabilities, labels)
    one_hot = np.eye(probabilities.shape[1])[labels]
    return float(((probabilities - one_hot) ** 2).sum(axis=1).mean())


def predictive_entropy(probabilities: np.ndarray) -> np.ndarray:
    """H[p(y | x)] = −Σ_c p_c log p_c for each point of ``probabilities`` (num_points, num_classes);
    shape (num_points,)."""
    probabilities = np.asarray(probabilities, np.float64)
    if probabilities.ndim != 2:
        raise ValueError(f"probabilities must be (num_points, num_classes), got {probabilities.shape}")
    probabilities = _probabilities(probabilities)
    return -(probabilities * np.log(np.maximum(probabilities, _TINY))).sum(axis=-1)


def ood_auroc(in_distribution: np.ndarray, out_of_distribution: np.ndarray) -> float:
    """AUROC of telling out-of-distribution points from in-distribution ones by predictive entropy.

    Args:
        in_distribution: predictive probabilities (n_in, num_classes) of test points.
        out_of_distribution: predictive probabilities (n_out, num_classes) of OOD points.

    Returns:
        P(entropy of a random OOD point > that of a random test point), ties counting half.
    """
    in_entropy, out_entropy = predictive_entropy(in_distribution), predictive_entropy(out_of_distribution)
    in_classes, out_classes = np.shape(in_distribution)[1], np.shape(out_of_distribution)[1]
    if in_classes != out_classes:
        raise ValueError(f"in_distribution has {in_classes} classes but out_of_distribution has {out_classes}")
    if len(in_entropy) == 0 or len(out_entropy) == 0:
        raise ValueError(f"AUROC needs points of both kinds; got {len(in_entropy)} in and {len(out_entropy)} out")
    scores = np.concatenate([in_entropy, out_entropy])
    is_out = np.concatenate([np.zeros(len(in_distribution)), np.ones(len(out_of_distribution))])
    return float(roc_auc_score(is_out, scores))


def root_mean_squared_error(predicted_mean: np.ndarray, targets: np.ndarray) -> float:
    """sqrt((1/n) Σ_i (ŷ_i − y_i)²)."""
    predicted_mean, targets = _values("predicted_mean", predicted_mean), _values("targets", targets)
    if predicted_mean.shape != targets.shape:
        raise ValueError(f"predicted_mean {predicted_mean.shape} and targets {targets.shape} differ in shape")
    return float(np.sqrt(((predicted_mean - targets) ** 2).mean()))


def gaussian_mixture_negative_log_likelihood(draw_means: np.ndarray, targets: np.ndarray, noise_scale: float) -> float:
    """−(1/n) Σ_i log (1/S) Σ_s N(y_i; μ_si, σ²): the NLL of the posterior predictive of S draws.

    Args:
        draw_means: μ, shape (num_draws, num_points), each draw's predicted mean.
        targets: y, shape (num_points,).
        noise_scale: σ, the likelihood's noise standard deviation.
    """
    draw_means, targets = _values("draw_means", draw_means), _values("targets", targets)
    noise_scale = positive("noise_scale", noise_scale)
    if targets.ndim != 1:
        raise ValueError(f"targets must be (num_points,), got {targets.shape}")
    if draw_means.ndim != 2 or draw_means.shape[1:] != targets.shape:
        raise ValueError(f"draw_means must be (num_draws, {len(targets)}), got {draw_means.shape}")
    log_densities = -0.5 * ((targets - draw_means) / noise_scale) ** 2 - np.log(noise_scale * np.sqrt(2 * np.pi))
    return mixture_negative_log_likelihood(log_densities)


def mixture_negative_log_likelihood(draw_log_likelihoods: np.ndarray) -> float:
    """−(1/n) Σ_i log (1/S) Σ_s p(y_i | θ_s): the NLL of the posterior predictive of S draws, from each
    draw's log-likelihoods log p(y_i | θ_s), shape (num_draws, num_points), by a logsumexp over the
    draws. Exact where the probabilities themselves underflow: a float32 softmax is 0 beyond a logit gap
    of about 104, which :func:`negative_log_likelihood` of the averaged probabilities floors at 708 nats."""
    draw_log_likelihoods = _values("draw_log_likelihoods", draw_log_likelihoods)
    if draw_log_likelihoods.ndim != 2:
        raise ValueError(f"draw_log_likelihoods must be (num_draws, num_points), got {draw_log_likelihoods.shape}")
    return float(-(logsumexp(draw_log_likelihoods, axis=0) - np.log(len(draw_log_likelihoods))).mean())
