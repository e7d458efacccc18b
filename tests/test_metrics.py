"""The report's metrics equal hand computations on fixed predictions."""

import math

import numpy as np
import pytest
from scipy import stats
from scipy.special import logsumexp

from sgmcmc import metrics
from targets import K_SIGMA

PROBABILITIES = np.array([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1], [0.5, 0.3, 0.2], [0.1, 0.1, 0.8]])
LABELS = np.array([0, 0, 0, 2])


def test_accuracy_nll_brier_by_hand():
    assert metrics.accuracy(PROBABILITIES, LABELS) == 0.75
    nll = -(math.log(0.9) + math.log(0.2) + math.log(0.5) + math.log(0.8)) / 4
    assert metrics.negative_log_likelihood(PROBABILITIES, LABELS) == pytest.approx(nll, rel=1e-12)
    brier = ((0.01 + 0.01) + (0.64 + 0.49 + 0.01) + (0.25 + 0.09 + 0.04) + (0.01 + 0.01 + 0.04)) / 4
    assert metrics.brier_score(PROBABILITIES, LABELS) == pytest.approx(brier, rel=1e-12)


def test_expected_calibration_error_by_hand():
    # confidences 0.9, 0.7, 0.5, 0.8 in 5 bins of width 0.2: (0.4, 0.6] {0.5 right}, (0.6, 0.8] {0.7 wrong,
    # 0.8 right}, (0.8, 1] {0.9 right}
    ece = (abs(1 - 0.5) + 2 * abs(0.5 - 0.75) + abs(1 - 0.9)) / 4
    assert metrics.expected_calibration_error(PROBABILITIES, LABELS, num_bins=5) == pytest.approx(ece, rel=1e-12)
    confidence, accuracy, counts = metrics.reliability_bins(PROBABILITIES, LABELS, num_bins=5)
    np.testing.assert_array_equal(counts, [0, 0, 1, 2, 1])
    np.testing.assert_allclose(accuracy[2:], [1.0, 0.5, 1.0])
    assert np.isnan(confidence[0])


def test_a_confidence_on_a_bin_edge_falls_in_the_bin_it_closes():
    """Bins are right-closed: before, 0.07 · 100 = 7.000000000000001 put 0.07 in (0.07, 0.08]."""
    for confidence in (0.07, 0.14, 0.28, 0.55, 0.56):
        num_others = math.ceil(1.0 / confidence)  # enough classes that the first holds the top probability
        probabilities = np.array([[confidence] + [(1.0 - confidence) / num_others] * num_others])
        counts = metrics.reliability_bins(probabilities, np.array([0]), num_bins=100)[2]
        assert np.flatnonzero(counts).tolist() == [round(confidence * 100) - 1]


def test_a_confidence_of_k_over_the_bin_count_falls_in_bin_k_for_every_bin_count():
    """Before, the edges came from np.linspace, whose 5/6 is one ulp below the float 5/6: with 6 bins a
    confidence of 5/6 fell in (5/6, 1] (1,261 such cases over bin counts 1 to 200; none at 10, 15, 100)."""
    misplaced = []
    for num_bins in range(1, 41):
        for k in range(1, num_bins + 1):
            confidence = k / num_bins
            num_others = math.ceil(1.0 / confidence)
            probabilities = np.array([[confidence] + [(1.0 - confidence) / num_others] * num_others])
            counts = metrics.reliability_bins(probabilities, np.array([0]), num_bins=num_bins)[2]
            if np.flatnonzero(counts).tolist() != [k - 1]:
                misplaced.append((num_bins, k))
    assert misplaced == []


def test_a_label_given_probability_zero_counts_708_nats_not_inf():
    nll = metrics.negative_log_likelihood(np.array([[1.0, 0.0], [0.5, 0.5]]), np.array([1, 0]))
    assert nll == pytest.approx((-math.log(np.finfo(np.float64).tiny) + math.log(2.0)) / 2, rel=1e-12)


def expected_ece_law(forecasts, truth, num_bins=15):
    """Mean and sd of the ECE of ``forecasts`` over labels drawn from ``truth`` (both (n, C)).

    In bin b of the top-label confidence, accuracy − confidence is the mean over its n_b points of
    1[correct] − p_i, approximately normal with mean μ_b = mean(p_true − p_forecast) and sd
    s_b = sqrt(Σ p_true (1 − p_true)) / n_b; |·| of it is folded normal, and the bins are independent.
    """
    top_label, confidence = forecasts.argmax(axis=1), forecasts.max(axis=1)
    correct_probability = truth[np.arange(len(truth)), top_label]
    bins = np.minimum(np.ceil(confidence * num_bins).astype(int) - 1, num_bins - 1)  # (k/B, (k+1)/B]
    means, variances = [], []
    for b in np.unique(bins):
        in_bin = bins == b
        weight = in_bin.mean()
        p = correct_probability[in_bin]
        gap, sd = (p - confidence[in_bin]).mean(), np.sqrt((p * (1 - p)).sum()) / in_bin.sum()
        folded = stats.foldnorm(abs(gap) / sd, scale=sd)
        means.append(weight * folded.mean())
        variances.append(weight**2 * folded.var())
    return sum(means), math.sqrt(sum(variances))


def test_ece_is_its_sampling_law_calibrated_or_not():
    """Labels drawn from Dirichlet forecasts: the ECE of the forecasts themselves (calibrated: only sampling
    error, mean 0.0078, sd 0.0021) and of overconfident ones p³/Σp³ (0.248 ± 0.0034) is within K_SIGMA sd
    of :func:`expected_ece_law`. Over 300 seeds the z-scores had mean 0.03 and sd 0.94-0.96."""
    generator = np.random.default_rng(0)
    probabilities = generator.dirichlet(np.ones(4), size=20_000)
    labels = np.minimum((generator.random(len(probabilities))[:, None] > probabilities.cumsum(axis=1)).sum(axis=1), 3)
    overconfident = probabilities**3 / (probabilities**3).sum(axis=1, keepdims=True)
    for forecasts in (probabilities, overconfident):
        mean, sd = expected_ece_law(forecasts, probabilities)
        assert abs(metrics.expected_calibration_error(forecasts, labels) - mean) < K_SIGMA * sd, (mean, sd)


def test_ood_auroc_and_entropy():
    uniform = np.full((3, 4), 0.25)
    confident = np.array([[0.97, 0.01, 0.01, 0.01]] * 2 + [[0.7, 0.1, 0.1, 0.1]])
    np.testing.assert_allclose(metrics.predictive_entropy(uniform), math.log(4))
    assert metrics.ood_auroc(confident, uniform) == 1.0
    assert metrics.ood_auroc(uniform, confident) == 0.0
    assert metrics.ood_auroc(confident, confident) == 0.5


def test_regression_metrics_by_hand():
    assert metrics.root_mean_squared_error(np.array([1.0, 2.0]), np.array([0.0, 4.0])) == pytest.approx(math.sqrt(2.5))
    draw_means = np.array([[0.0, 1.0], [2.0, 1.0]])
    targets = np.array([1.0, 1.0])
    normal = lambda x: math.exp(-0.5 * x**2) / math.sqrt(2 * math.pi)  # noqa: E731
    expected = -(math.log(normal(1.0)) + math.log(normal(0.0))) / 2
    assert metrics.gaussian_mixture_negative_log_likelihood(draw_means, targets, 1.0) == pytest.approx(expected)


def test_bad_shapes_are_named():
    with pytest.raises(ValueError, match="num_points, num_classes"):
        metrics.accuracy(PROBABILITIES[0], LABELS)
    with pytest.raises(ValueError, match="non-finite"):
        metrics.brier_score(np.full((2, 2), np.nan), np.zeros(2))


def test_labels_must_be_class_indices():
    probabilities = np.array([[0.7, 0.3], [0.2, 0.8]])
    with pytest.raises(ValueError, match=r"labels must be in \[0, 2\), got values from -1 to 1"):
        metrics.negative_log_likelihood(probabilities, [-1, 1])
    with pytest.raises(ValueError, match=r"labels must be in \[0, 2\), got values from 0 to 2"):
        metrics.accuracy(probabilities, [0, 2])
    with pytest.raises(ValueError, match="labels must be integer class indices"):
        metrics.accuracy(probabilities, [0.7, 1.0])
    assert metrics.accuracy(probabilities, np.array([0.0, 1.0])) == 1.0  # integer-valued floats are fine


def test_logits_and_bad_bin_counts_are_refused():
    logits = np.log(PROBABILITIES + 0.01) * 3
    for metric in (metrics.negative_log_likelihood, metrics.brier_score, metrics.expected_calibration_error):
        with pytest.raises(ValueError, match=r"probabilities must lie in \[0, 1\] and each row sum to 1.*logits\?"):
            metric(logits, LABELS)
    with pytest.raises(ValueError, match="each row sum to 1"):
        metrics.predictive_entropy(PROBABILITIES * 2)
    float32_average = np.float32(PROBABILITIES / 3) * 3  # rounding: rows sum to 1 within ~1e-7
    assert metrics.accuracy(float32_average, LABELS) == 0.75
    with pytest.raises(ValueError, match="num_bins must be >= 1, got 0"):
        metrics.expected_calibration_error(PROBABILITIES, LABELS, num_bins=0)
    with pytest.raises(TypeError, match="num_bins must be an integer"):
        metrics.reliability_bins(PROBABILITIES, LABELS, num_bins=2.5)


def test_gaussian_mixture_nll_by_hand_with_distinct_draws_and_non_unit_noise():
    """σ ≠ 1 (its normaliser counts) and draws of different densities (the mixture is not the mean of logs):
    the existing test has σ = 1 and draws with equal densities at each point, where both are exact."""

    def density(y, mean, scale):
        return math.exp(-0.5 * ((y - mean) / scale) ** 2) / (scale * math.sqrt(2 * math.pi))

    draw_means = np.array([[0.0, 1.0], [3.0, -1.0]])
    targets = np.array([1.0, 0.5])
    expected = -np.mean(
        [math.log(0.5 * sum(density(y, m, 2.0) for m in draw_means[:, i])) for i, y in enumerate(targets)]
    )
    assert metrics.gaussian_mixture_negative_log_likelihood(draw_means, targets, 2.0) == pytest.approx(
        expected, rel=1e-12
    )


def test_rows_inside_zero_one_that_do_not_sum_to_one_are_refused():
    """Every value in [0, 1], so only the row-sum check can refuse these."""
    unnormalised = np.array([[0.5, 0.2], [0.3, 0.3]])
    with pytest.raises(ValueError, match="each row sum to 1"):
        metrics.negative_log_likelihood(unnormalised, np.array([0, 1]))
    with pytest.raises(ValueError, match="each row sum to 1"):
        metrics.predictive_entropy(unnormalised)


def test_empty_non_finite_and_misshapen_inputs_are_named():
    """Before, empty inputs and NaN regression targets gave NaN, a scalar target crashed in len(), a
    (num_points, 1) target was blamed on draw_means, and noise_scale <= 0 gave NaN."""
    with pytest.raises(ValueError, match="no points to score"):
        metrics.accuracy(np.zeros((0, 2)), np.zeros(0, dtype=int))
    with pytest.raises(ValueError, match="predicted_mean is empty"):
        metrics.root_mean_squared_error(np.zeros(0), np.zeros(0))
    with pytest.raises(ValueError, match="targets holds non-finite values"):
        metrics.root_mean_squared_error(np.zeros(2), np.array([0.0, np.nan]))
    for targets in (np.zeros((2, 1)), np.float64(0.0)):
        with pytest.raises(ValueError, match="targets must be \\(num_points,\\)"):
            metrics.gaussian_mixture_negative_log_likelihood(np.zeros((3, 2)), targets, 1.0)
    for noise_scale in (0.0, -1.0, np.nan):
        with pytest.raises(ValueError, match="noise_scale must be a finite number > 0"):
            metrics.gaussian_mixture_negative_log_likelihood(np.zeros((3, 2)), np.zeros(2), noise_scale)
    with pytest.raises(ValueError, match="probabilities must be \\(num_points, num_classes\\), got \\(2,\\)"):
        metrics.predictive_entropy(np.array([0.5, 0.5]))
    two_classes, ten_classes = np.full((3, 2), 0.5), np.full((3, 10), 0.1)
    with pytest.raises(ValueError, match="in_distribution has 2 classes but out_of_distribution has 10"):
        metrics.ood_auroc(two_classes, ten_classes)
    with pytest.raises(ValueError, match="AUROC needs points of both kinds; got 0 in and 3 out"):
        metrics.ood_auroc(np.zeros((0, 2)), two_classes)


def test_the_mixture_nll_from_log_likelihoods_is_exact_where_float32_probabilities_underflow():
    """Two draws giving the label log-probabilities −110 and −120 (logit gaps a float32 softmax turns into
    probability 0): −log((e^−110 + e^−120)/2) = 110.693, where the averaged probabilities' NLL is the
    708-nat floor. Where nothing underflows, both agree."""
    logits = np.array([[[0.0, 110.0]], [[0.0, 120.0]]], dtype=np.float32)  # (draws, points, classes), label 0
    probabilities = np.exp(logits - logsumexp(logits, axis=-1, keepdims=True)).astype(np.float32)
    assert metrics.negative_log_likelihood(probabilities.mean(axis=0), np.array([0])) == pytest.approx(
        708.396, abs=1e-3
    )
    log_likelihoods = np.array([[-110.0], [-120.0]])
    exact = -(math.log(math.exp(-110.0) + math.exp(-120.0)) - math.log(2.0))
    assert metrics.mixture_negative_log_likelihood(log_likelihoods) == pytest.approx(exact, rel=1e-12)
    assert exact == pytest.approx(110.693, abs=1e-3)
    both = np.log(np.array([[0.9, 0.2], [0.7, 0.4]]))  # (draws, points)
    expected = -(math.log(0.8) + math.log(0.3)) / 2
    assert metrics.mixture_negative_log_likelihood(both) == pytest.approx(expected, rel=1e-12)
    with pytest.raises(ValueError, match=r"draw_log_likelihoods must be \(num_draws, num_points\)"):
        metrics.mixture_negative_log_likelihood(np.zeros(3))


def test_negative_probabilities_are_refused_even_when_rows_sum_to_one():
    """[−0.2, 0.6, 0.6] sums to 1 and lies below 1 (found by mutation testing: dropping the check for values
    below 0 went unseen; it was scored, NLL 708)."""
    with pytest.raises(ValueError, match=r"probabilities must lie in \[0, 1\]"):
        metrics.negative_log_likelihood(np.array([[-0.2, 0.6, 0.6]]), np.array([1]))
