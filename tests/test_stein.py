"""Kernel Stein discrepancy: the closed form against autograd, blocks, and what it detects (bias, shift, scale)."""

import math

import numpy as np
import pytest
import torch

import sgmcmc
from sgmcmc.stein import flatten_draws, imq_stein_kernel, kernel_stein_discrepancy, score_at_draws
from targets import K_SIGMA, standard_normal_log_posterior


def autograd_stein_kernel(x, y, score_x, score_y, c, beta):
    """k0 of Gorham & Mackey (2017), Prop. 2, with every derivative of the IMQ kernel taken by autograd."""

    def kernel(a, b):
        return (c**2 + ((a - b) ** 2).sum()) ** beta

    grad_x = torch.func.grad(kernel, 0)(x, y)
    grad_y = torch.func.grad(kernel, 1)(x, y)
    trace = torch.func.jacfwd(torch.func.grad(kernel, 0), 1)(x, y).trace()
    return trace + grad_x @ score_y + grad_y @ score_x + kernel(x, y) * (score_x @ score_y)


def random_draws_and_scores(num_draws, dim, seed):
    generator = torch.Generator().manual_seed(seed)
    draws = torch.randn(num_draws, dim, generator=generator, dtype=torch.float64)
    scores = -draws + 0.5 * torch.randn(num_draws, dim, generator=generator, dtype=torch.float64)
    return draws, scores


@pytest.mark.parametrize("c, beta", [(1.0, -0.5), (1.7, -0.2), (0.5, -0.9)])
def test_agrees_with_a_direct_double_sum_over_autograd_stein_kernels(c, beta):
    draws, scores = random_draws_and_scores(17, 3, seed=0)
    weights = torch.rand(17, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    pairs = list(zip(draws, scores, strict=True))
    kernel = torch.tensor([[autograd_stein_kernel(x, y, sx, sy, c, beta) for y, sy in pairs] for x, sx in pairs])
    torch.testing.assert_close(imq_stein_kernel(draws, scores, draws, scores, c, beta), kernel, rtol=1e-12, atol=1e-12)
    direct = float(kernel.mean())
    assert kernel_stein_discrepancy(draws, scores, c=c, beta=beta, squared=True) == pytest.approx(direct, rel=1e-12)
    normalised = weights / weights.sum()
    weighted = float(normalised @ kernel @ normalised)
    assert kernel_stein_discrepancy(
        draws.numpy(), scores.numpy(), weights=weights.numpy(), c=c, beta=beta
    ) == pytest.approx(weighted**0.5, rel=1e-12)


@pytest.mark.parametrize("block_size", [1, 6, 23, 1000])
def test_every_block_size_gives_the_same_value(block_size):
    draws, scores = random_draws_and_scores(23, 4, seed=2)
    weights = torch.arange(1, 24, dtype=torch.float64)
    reference = kernel_stein_discrepancy(draws, scores, weights=weights, block_size=23)
    assert kernel_stein_discrepancy(draws, scores, weights=weights, block_size=block_size) == pytest.approx(
        reference, rel=1e-13
    )


def replicate_statistics(make_draws, num_replicates=20, num_draws=300, dim=3):
    """n · KSD² of ``num_replicates`` independent sets of N(0, I) draws passed through ``make_draws``, scored
    against N(0, I) (s(x) = −x). The base draws are the same on every call, so comparisons are paired."""
    generator = torch.Generator().manual_seed(3)
    values = []
    for _ in range(num_replicates):
        draws = make_draws(torch.randn(num_draws, dim, generator=generator, dtype=torch.float64))
        values.append(num_draws * kernel_stein_discrepancy(draws, -draws, squared=True))
    return np.array(values)


@pytest.fixture(scope="module")
def exact_statistics():
    return replicate_statistics(lambda x: x)


def test_exact_draws_give_the_expected_order_one_over_n(exact_statistics):
    """For exact draws E[KSD²] = E[k0(x, x)]/n = (d + E|x|²)/n = 2d/n (c = 1, β = −1/2)."""
    mean, se = exact_statistics.mean(), exact_statistics.std(ddof=1) / np.sqrt(len(exact_statistics))
    assert abs(mean - 2 * 3) < K_SIGMA * se
    assert K_SIGMA * se < 3, "too imprecise to tell 2d from d, the value without the trace term"


@pytest.mark.parametrize("error", ["shift", "scale"])
def test_shifted_or_scaled_draws_are_strictly_further(error, exact_statistics):
    """The same base draws, shifted by 0.3 or scaled by 1.3: n · KSD² grows by many standard errors."""
    wrong = replicate_statistics((lambda x: x + 0.3) if error == "shift" else (lambda x: 1.3 * x))
    difference = wrong - exact_statistics
    assert difference.mean() > K_SIGMA * difference.std(ddof=1) / np.sqrt(len(difference))


def test_decreases_with_the_sgld_step_size():
    """SGLD on N(0, 1) samples N(0, 1/(1 − η/2)): a smaller η is closer to the target and KSD sees it.

    1000 chains per η with the same seeds, 4 draws each 25 steps apart (lag correlation (1 − η)^25 ≤ 0.004)
    after 100 steps of burn-in, split into 10 independent groups of 400 draws: paired differences of KSD²
    between consecutive step sizes are positive by K_SIGMA standard errors.
    """
    squared = {}
    for step_size in (0.8, 0.4, 0.2):
        trace = sgmcmc.SGLD(standard_normal_log_posterior, step_size=step_size).sample(
            torch.zeros(1, dtype=torch.float64),
            num_chains=1000,
            num_steps=200,
            burn_in=100,
            thin=25,
            seed=0,
            init_jitter=1.0,
            progress=False,
        )
        groups = trace.posterior["theta"].reshape(10, -1, 1)
        squared[step_size] = np.array([kernel_stein_discrepancy(g, -g, squared=True) for g in groups])
    for larger, smaller in [(0.8, 0.4), (0.4, 0.2)]:
        difference = squared[larger] - squared[smaller]
        assert difference.mean() > K_SIGMA * difference.std(ddof=1) / np.sqrt(len(difference)), (larger, smaller)


def test_a_trace_and_its_exact_scores_go_in_as_mappings():
    def log_posterior(params):
        return -0.5 * (params["weights"] ** 2).sum() - 0.5 * ((params["bias"] - 1.0) / 2.0) ** 2

    init = {"weights": torch.zeros(2, 2, dtype=torch.float64), "bias": torch.zeros((), dtype=torch.float64)}
    trace = sgmcmc.SGLD(log_posterior, step_size=0.2).sample(init, num_chains=3, num_steps=40, seed=0, progress=False)
    scores = score_at_draws(log_posterior, trace.posterior)
    assert {name: value.shape for name, value in scores.items()} == {"weights": (3, 40, 2, 2), "bias": (3, 40)}
    torch.testing.assert_close(scores["weights"], -torch.as_tensor(trace.posterior["weights"]))
    torch.testing.assert_close(scores["bias"], -(torch.as_tensor(trace.posterior["bias"]) - 1.0) / 4.0)
    matrix = flatten_draws(trace.posterior)
    assert matrix.shape == (120, 5)
    reordered_scores = {"bias": scores["bias"], "weights": scores["weights"]}
    assert kernel_stein_discrepancy(trace.posterior, reordered_scores) == pytest.approx(
        kernel_stein_discrepancy(matrix, flatten_draws(scores)), rel=1e-13
    )
    draws = matrix[:, :4]
    assert score_at_draws(lambda theta: -0.5 * (theta**2).sum(), draws).shape == (120, 4)
    posterior = trace.to_arviz().posterior  # an xarray Dataset: name -> DataArray (chain, draw, ...)
    idata_scores = score_at_draws(log_posterior, posterior)
    torch.testing.assert_close(idata_scores["weights"], scores["weights"], rtol=0, atol=0)
    assert kernel_stein_discrepancy(posterior, idata_scores) == kernel_stein_discrepancy(trace.posterior, scores)


def test_draws_far_from_the_origin_give_the_value_of_the_same_draws_near_it():
    """k0 depends on x − y only; |x|² + |y|² − 2x·y taken at |x| ~ 1e7 would lose about 1.5% of KSD²."""
    draws, scores = random_draws_and_scores(200, 3, seed=4)
    near = kernel_stein_discrepancy(draws, scores, squared=True)
    assert kernel_stein_discrepancy(draws + 1e7, scores, squared=True) == pytest.approx(near, rel=1e-9)


@pytest.mark.parametrize(
    "change, error, match",
    [
        ({"scores": torch.zeros(5, 3)}, ValueError, "shape"),
        ({"draws": torch.tensor([[0.0, float("nan")]] * 5)}, ValueError, "non-finite"),
        ({"scores": torch.full((5, 2), float("inf"))}, ValueError, "non-finite"),
        ({"c": 0.0}, ValueError, "c must be"),
        ({"beta": -1.0}, ValueError, "beta"),
        ({"beta": 0.0}, ValueError, "beta"),
        ({"weights": torch.ones(4)}, ValueError, "weights"),
        ({"weights": -torch.ones(5)}, ValueError, "weights"),
        ({"weights": torch.zeros(5)}, ValueError, "weights must be finite, >= 0 and not all zero"),
        ({"block_size": 0}, ValueError, "block_size"),
        ({"draws": torch.zeros(5, 2, 2)}, ValueError, r"\(n, d\)"),
        (
            {"draws": {"theta": torch.zeros(1, 5, 2)}, "scores": {"other": torch.zeros(1, 5, 2)}},
            ValueError,
            "parameters",
        ),
        ({"draws": {"theta": torch.zeros(1, 5, 2)}}, TypeError, "both"),
        # the same number of columns in all, but a's scores are b's: before, draws and scores were mis-paired
        (
            {
                "draws": {"a": torch.zeros(1, 5, 3), "b": torch.zeros(1, 5)},
                "scores": {"a": torch.zeros(1, 5), "b": torch.zeros(1, 5, 3)},
            },
            ValueError,
            r"parameter 'a': draws have shape \(1, 5, 3\) but scores have \(1, 5\)",
        ),
        # 2 chains × 6 draws against 3 × 4: before, the rows of one chain were paired with another's
        (
            {
                "draws": {"x": torch.zeros(2, 6), "y": torch.zeros(3, 4)},
                "scores": {"x": torch.zeros(2, 6), "y": torch.zeros(3, 4)},
            },
            ValueError,
            "different \\(num_chains, num_draws\\)",
        ),
        ({"draws": torch.zeros(5, 0), "scores": torch.zeros(5, 0)}, ValueError, r"no coordinates \(d = 0\)"),
    ],
)
def test_clear_errors(change, error, match):
    arguments = {"draws": torch.zeros(5, 2), "scores": torch.zeros(5, 2), **change}
    with pytest.raises(error, match=match):
        kernel_stein_discrepancy(arguments.pop("draws"), arguments.pop("scores"), **arguments)


@pytest.mark.parametrize(
    "change, match",
    [
        ({"scores_b": torch.zeros(4, 2)}, r"one dtype and device, got .*'scores_b': 'torch.float32 on cpu'"),
        ({"draws_b": torch.zeros(4, 3, dtype=torch.float64)}, r"shapes \(m, d\), .*'draws_b': \(4, 3\)"),
        ({"scores_a": torch.zeros(5, dtype=torch.float64)}, r"scores_a must be a 2-d floating-point tensor .* \(5,\)"),
        (
            {"draws_a": torch.zeros(5, 2, dtype=torch.long)},
            r"draws_a must be a 2-d floating-point tensor \(points, d\), got torch.int64",
        ),
    ],
)
def test_the_kernel_names_mismatched_inputs(change, match):
    """Before, torch's own errors from inside the closed form ("expected m1 and m2 to have the same dtype")."""
    arguments = {"draws_a": torch.zeros(5, 2, dtype=torch.float64), "scores_a": torch.zeros(5, 2, dtype=torch.float64)}
    arguments |= {"draws_b": torch.zeros(4, 2, dtype=torch.float64), "scores_b": torch.zeros(4, 2, dtype=torch.float64)}
    with pytest.raises(ValueError, match=match):
        imq_stein_kernel(**(arguments | change))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_tensors_give_the_cpu_value():
    draws, scores = random_draws_and_scores(300, 5, seed=4)
    on_cpu = kernel_stein_discrepancy(draws, scores, block_size=64)
    assert kernel_stein_discrepancy(draws.cuda(), scores.cuda(), block_size=64) == pytest.approx(on_cpu, rel=1e-10)


def test_scores_need_floating_draws():
    with pytest.raises(TypeError, match="draws must be floating point"):
        score_at_draws(lambda theta: -0.5 * theta.square().sum(), torch.arange(6).reshape(3, 2))
    with pytest.raises(TypeError, match=r"draws\['w'\] must be floating point"):
        score_at_draws(lambda params: -0.5 * params["w"].square().sum(), {"w": torch.zeros(1, 3, 2, dtype=torch.int64)})


def test_scores_of_no_draws_are_refused_as_the_discrepancy_refuses_them():
    """Before, an IndexError from taking the first draw."""
    with pytest.raises(ValueError, match=r"no draws to take the score at: draws have shape \(0, d\)"):
        score_at_draws(lambda theta: -0.5 * theta.square().sum(), torch.zeros(0, 2))
    with pytest.raises(ValueError, match="no draws to take the score at: draws have 2 chains of 0 draws"):
        score_at_draws(lambda params: -0.5 * params["w"].square().sum(), {"w": torch.zeros(2, 0, 3)})


def test_scores_need_a_log_density_that_returns_a_differentiable_scalar():
    """Before, a detached value gave scores of zeros, and a KSD from them, without a word; a wrong shape
    failed inside torch.func."""
    draws = torch.randn(5, 2, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="log_density's value does not depend on the params at the first draw"):
        score_at_draws(lambda theta: -(theta.detach() ** 2).sum(), draws)
    with pytest.raises(ValueError, match=r"log_density must return a 0-dim tensor, got shape \(2,\) at the first"):
        score_at_draws(lambda theta: -(theta**2), draws)
    with pytest.raises(ValueError, match="log_density's value does not depend on the params at the first draw"):
        score_at_draws(lambda params: -(params["w"].detach() ** 2).sum(), {"w": draws.reshape(1, 5, 2)})
    with pytest.raises(ValueError, match="log_density draws from torch's global random number generator at the first"):
        score_at_draws(lambda theta: -(torch.nn.functional.dropout(theta, 0.5, training=True) ** 2).sum(), draws)


def test_score_at_draws_inside_no_grad_and_its_messages_name_log_density():
    draws = torch.ones(3, 2, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(score_at_draws(lambda theta: -0.5 * (theta**2).sum(), draws), -draws)
    with pytest.raises(ValueError, match=r"log_density returned a non-finite value \(nan\) at the first draw"):
        score_at_draws(lambda theta: (theta * math.nan).sum(), draws)
    with pytest.raises(TypeError, match="log_density must return a torch.Tensor, got float at the first draw"):
        score_at_draws(lambda theta: 0.5, draws)
    with pytest.raises(TypeError, match="log_density must return a floating tensor, got torch.int64 at the first"):
        score_at_draws(lambda theta: (theta > 0).sum(), draws)


def test_scores_of_a_trace_with_a_parameter_of_no_elements():
    def log_posterior(params):
        return -0.5 * params["w"].square().sum() + params["unused"].sum()

    init = {"w": torch.zeros(2, dtype=torch.float64), "unused": torch.zeros(0, dtype=torch.float64)}
    trace = sgmcmc.SGLD(log_posterior, step_size=0.1).sample(init, num_chains=2, num_steps=5, seed=0, progress=False)
    scores = score_at_draws(log_posterior, trace.posterior)
    assert scores["unused"].shape == (2, 5, 0)
    np.testing.assert_array_equal(scores["w"].numpy(), -trace.posterior["w"])


def test_a_tensor_log_density_on_the_trace_of_a_tensor_run_says_how_to_pass_the_draws():
    """Before, only the TypeError of ``dict ** 2`` from inside the user's function."""

    def log_posterior(theta):
        return -0.5 * (theta**2).sum()

    trace = sgmcmc.SGLD(log_posterior, step_size=0.1).sample(torch.zeros(2), num_chains=2, num_steps=5, progress=False)
    with pytest.raises(TypeError) as raised:
        score_at_draws(log_posterior, trace.posterior)
    assert "pass trace.posterior['theta'].reshape(-1, d)" in "".join(raised.value.__notes__)
    scores = score_at_draws(log_posterior, trace.posterior["theta"].reshape(-1, 2))
    np.testing.assert_allclose(scores.numpy(), -trace.posterior["theta"].reshape(-1, 2), rtol=1e-6)


@pytest.mark.parametrize(
    "draws, match",
    [
        ({"a": torch.zeros(2, 6), "b": torch.zeros(3, 4)}, "different \\(num_chains, num_draws\\)"),
        ({"a": torch.zeros(5)}, r"parameter 'a' has shape \(5,\); expected \(num_chains, num_draws, ...\)"),
        ({}, "the mapping is empty"),
    ],
)
def test_scores_need_trace_shaped_draws(draws, match):
    """Before, (2, 6) and (3, 4) were both flattened to 12 rows: the score paired one chain's draws with another's."""
    with pytest.raises(ValueError, match=match):
        score_at_draws(lambda params: -0.5 * sum(value.square().sum() for value in params.values()), draws)


def test_weights_count_only_in_proportion_even_near_the_largest_float():
    """Before, weights up to 2.3e307 summed to inf and every normalised weight became 0: a KSD of 0."""
    draws, scores = random_draws_and_scores(23, 4, seed=2)
    weights = torch.arange(1, 24, dtype=torch.float64)
    reference = kernel_stein_discrepancy(draws, scores, weights=weights)
    assert kernel_stein_discrepancy(draws, scores, weights=weights * 1e306) == pytest.approx(reference, rel=1e-13)


@pytest.mark.parametrize("dtype", [torch.int16, torch.uint8, torch.int64])
def test_integer_draws_give_the_value_of_the_same_numbers_as_floats(dtype):
    draws = torch.arange(12).reshape(6, 2) % 5
    reference = kernel_stein_discrepancy(draws.double(), -draws.double())
    assert kernel_stein_discrepancy(draws.to(dtype), -draws.double()) == pytest.approx(reference, rel=1e-15)


def test_boolean_draws_are_refused():
    with pytest.raises(
        TypeError, match=r"draws must be real numbers \(floating point or integer\), got dtype torch.bool"
    ):
        kernel_stein_discrepancy(torch.ones(5, 2, dtype=torch.bool), torch.zeros(5, 2))


def test_boolean_and_complex_weights_are_refused_as_such_draws_are():
    """Before, a boolean mask was read as weights 0 and 1, and complex weights lost their imaginary part
    (with only torch's cast warning)."""
    draws = torch.randn(4, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for weights in (torch.tensor([True, False, True, True]), torch.ones(4, dtype=torch.complex128)):
        with pytest.raises(TypeError, match=f"weights must be real numbers .*, got dtype {weights.dtype}"):
            kernel_stein_discrepancy(draws, -draws, weights=weights)
    kernel_stein_discrepancy(draws, -draws, weights=torch.tensor([1, 0, 2, 1]))  # integers are counts


def test_one_dimensional_draws_are_points_of_one_dimension():
    """(n,) draws are n points in d = 1, as documented, not one point in n dimensions; flattened traces are
    chain-major, the order of trace.posterior[name].reshape(-1, d) (both found by mutation testing)."""
    draws = torch.randn(50, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert kernel_stein_discrepancy(draws, -draws) == kernel_stein_discrepancy(draws[:, None], -draws[:, None])
    assert score_at_draws(standard_normal_log_posterior, draws).shape == (50, 1)
    chains_by_draws = np.arange(6.0).reshape(2, 3)
    np.testing.assert_array_equal(flatten_draws({"a": chains_by_draws}).numpy()[:, 0], chains_by_draws.reshape(-1))


def test_flags_and_chunk_sizes_of_the_wrong_type_are_named():
    """Before, squared="no" (truthy) returned KSD², and chunk_size=2.5 failed in vmap with "can't multiply
    sequence by non-int of type 'float'"."""
    draws = torch.randn(10, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with pytest.raises(TypeError, match="squared must be True or False, got str 'no'"):
        kernel_stein_discrepancy(draws, -draws, squared="no")
    with pytest.raises(TypeError, match="chunk_size must be an integer, got float"):
        score_at_draws(lambda x: -0.5 * (x**2).sum(), draws, chunk_size=2.5)
    with pytest.raises(ValueError, match="chunk_size must be >= 1, got 0"):
        score_at_draws(lambda x: -0.5 * (x**2).sum(), draws, chunk_size=0)
