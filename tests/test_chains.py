"""Per-chain random streams and per-chain sums."""

import warnings

import numpy as np
import pytest
import torch

import sgmcmc
from sgmcmc.chains import (
    ChainGenerators,
    RecordingGenerators,
    ReplayedDraws,
    chain_seeds,
    seeds_of_chains,
    select_chains,
    start_seeds,
)
from targets import K_SIGMA


def test_chain_seeds_are_prefix_stable_and_distinct():
    assert sgmcmc.chain_seeds(3, 2) == sgmcmc.chain_seeds(3, 5)[:2]
    assert len(set(sgmcmc.chain_seeds(3, 100))) == 100
    assert sgmcmc.chain_seeds(3, 2) != sgmcmc.chain_seeds(4, 2)
    with pytest.raises(TypeError, match="num_chains must be an integer, got bool"):
        sgmcmc.chain_seeds(3, True)  # before: one seed
    with pytest.raises(ValueError, match="num_chains must be >= 1, got -3"):
        sgmcmc.chain_seeds(3, -3)  # before: numpy's OverflowError


def test_a_chains_stream_does_not_depend_on_its_neighbours():
    seeds = sgmcmc.chain_seeds(0, 3)
    params = {"a": torch.zeros(3, 2), "b": torch.zeros(3, dtype=torch.float64), "c": torch.zeros(3, 1, 1)}
    together = ChainGenerators(seeds, torch.device("cpu")).normal_like(params)
    alone = ChainGenerators(seeds[1:2], torch.device("cpu")).normal_like(
        {name: value[:1] for name, value in params.items()}
    )
    for name in params:
        torch.testing.assert_close(together[name][1:2], alone[name])
        assert together[name].dtype == params[name].dtype
    for draw in (lambda generators: generators.uniform(torch.float64), lambda generators: generators.permutations(7)):
        together, alone = (draw(ChainGenerators(chosen, torch.device("cpu"))) for chosen in (seeds, seeds[1:2]))
        assert torch.equal(together[1:2], alone)
        assert not torch.equal(together[0], together[1])  # each chain its own stream


def test_start_seeds_are_prefix_stable_and_shared_neither_with_other_seeds_nor_with_the_noise():
    starts = start_seeds(0, 4)
    assert starts[:2] == start_seeds(0, 2)
    others = {seed for other in range(1, 50) for seed in start_seeds(other, 4)}
    assert not set(starts) & (others | set(chain_seeds(0, 4)))  # seed + c had seed 1's chain 0 = seed 0's chain 1
    with pytest.raises(ValueError, match="seed must be an integer"):
        start_seeds(-1, 2)


def test_per_chain_seeds_given_as_a_list_go_to_their_chains():
    seeds = [5, 2**64 - 1, 0]
    assert seeds_of_chains(seeds, 3) == seeds
    together = ChainGenerators(seeds, torch.device("cpu")).uniform(torch.float64)
    for chain, seed in enumerate(seeds):
        assert torch.equal(
            together[chain : chain + 1], ChainGenerators([seed], torch.device("cpu")).uniform(torch.float64)
        )


def test_repeated_per_chain_seeds_are_warned_about_naming_the_chains():
    """Before, silent: chains 0 and 2 below are the same chain, which R-hat and ESS would count twice."""
    with pytest.warns(RuntimeWarning, match=r"chains \[0, 2\] and \[1, 3\] share a seed") as record:
        trace = sgmcmc.SGLD(lambda theta: -0.5 * theta.square().sum(), step_size=0.1).sample(
            torch.zeros(2), num_chains=4, num_steps=20, seed=[7, 8, 7, 8], progress=False
        )
    assert {warning.filename for warning in record} == {__file__}
    draws = trace.posterior["theta"]
    np.testing.assert_array_equal(draws[0], draws[2])
    assert not np.array_equal(draws[0], draws[1])


def test_select_chains():
    mask = torch.tensor([True, False])
    picked = select_chains(mask, {"x": torch.ones(2, 3)}, {"x": torch.zeros(2, 3)})
    torch.testing.assert_close(picked["x"], torch.tensor([[1.0] * 3, [0.0] * 3]))


def test_select_chains_keeps_a_leaf_carried_over_unchanged():
    """A constant of the state (here a (3,) centre expanded over 2 chains) is passed through, not copied per chain."""
    centre = torch.arange(3.0).expand(2, 3)
    picked = select_chains(
        torch.tensor([True, False]), {"x": torch.ones(2, 3), "c": centre}, {"x": torch.zeros(2, 3), "c": centre}
    )
    assert picked["c"] is centre and picked["c"].stride(0) == 0
    torch.testing.assert_close(picked["x"], torch.tensor([[1.0] * 3, [0.0] * 3]))


def test_recorded_draws_made_again_continue_each_chains_stream():
    """What a compiled step gets: the draws one eager step recorded, made again before each step,
    are the next values of the same per-chain streams as eager sampling would draw."""
    seeds, cpu = sgmcmc.chain_seeds(0, 2), torch.device("cpu")
    params = {"a": torch.zeros(2, 3), "b": torch.zeros(2, dtype=torch.float64)}
    eager = ChainGenerators(seeds, cpu)
    expected = [eager.normal_like(params), eager.uniform(torch.float32), eager.normal_like(params)]
    replayed = ChainGenerators(seeds, cpu)
    recording = RecordingGenerators(replayed)
    first = [recording.normal_like(params), recording.uniform(torch.float32)]
    assert recording.requests == [("normal", (4, torch.float64)), ("uniform", (torch.float32,))]
    draws = ReplayedDraws(replayed.draw(recording.requests[:1]), cpu, num_chains=2)
    for got, want in zip([*first, draws.normal_like(params)], expected, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_replayed_draws_refuse_a_different_pattern():
    draws = ReplayedDraws([("normal", torch.zeros(2, 3))], torch.device("cpu"), num_chains=2)
    with pytest.raises(RuntimeError, match=r"asked for uniform as random draw 0.*drew \['normal'\]"):
        draws.uniform(torch.float32)
    draws.normal_like({"a": torch.zeros(2, 3)})
    with pytest.raises(RuntimeError, match="asked for normal as random draw 1"):
        draws.normal_like({"a": torch.zeros(2, 3)})


@pytest.mark.parametrize("sampler, step_size", [("SGHMC", 1e-3), ("SGHMC", 1e-6), ("SGNHT", 1e-2)])
def test_float16_chains_of_many_params_sum_their_kinetic_energy_without_overflow(sampler, step_size):
    """d = 150,000 float16 params: Σ p²/2 ≈ d T/2 = 75,000 is past float16's largest value (65,504).
    Before, the sum was taken in float16: its inf froze every chain at step 0 as "diverged" (SGNHT's
    thermostat, driven by that sum, became inf too). And SGHMC squared v in float16 before summing:
    at η = 1e-6, v² ~ 1e-6 is a subnormal, rounded to multiples of 6e-8, and the energy came out 8%
    low. Draw 0's energy is a sum of d independent χ²₁/2 (the stationary momentum): mean d/2, sd √(d/2)."""
    dimension = 150_000
    make = {
        "SGHMC": lambda: sgmcmc.SGHMC(float32_standard_normal, step_size, friction=0.1),
        "SGNHT": lambda: sgmcmc.SGNHT(float32_standard_normal, step_size),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("error", sgmcmc.SamplerDivergenceWarning)
        trace = make[sampler]().sample(
            torch.zeros(dimension, dtype=torch.float16), num_chains=2, num_steps=3, seed=0, keep=(), progress=False
        )
    energy = trace.sample_stats["kinetic_energy"][:, 0]
    assert np.abs(energy - dimension / 2).max() < K_SIGMA * np.sqrt(dimension / 2)
    if sampler == "SGNHT":
        assert np.isfinite(trace.sample_stats["thermostat"]).all()


def float32_standard_normal(theta):
    return -0.5 * (theta.float() ** 2).sum()


@pytest.mark.parametrize("friction", [0.1, 0.45])
def test_float16_sghmc_noise_has_its_variance_at_small_steps(friction):
    """η = 1e-7 (a common step on the full-data scale): the injected variance 2αη is 2e-8 or 9e-8,
    below or near float16's smallest subnormal (6e-8). Before, it was formed in float16: 2e-8 rounded
    to 0, so no noise was injected (SGD with momentum), and 9e-8 to 1.19e-7, 32% too much. Over n
    draws, the sample sd's relative sd is 1/√(2n)."""
    from sgmcmc.sghmc import sghmc_step, stationary_momentum

    size, step_size = 200_000, 1e-7
    generators = ChainGenerators([0], torch.device("cpu"))
    zeros = {"theta": torch.zeros(1, size, dtype=torch.float16)}
    mass = {"theta": torch.ones(1, size, dtype=torch.float16)}
    _, momentum = sghmc_step(
        zeros, zeros, zeros, generators.normal_like(zeros), mass, step_size, friction, 0.0, temperature=1.0
    )
    fresh = stationary_momentum(mass, step_size, 1.0, generators)
    tolerance = K_SIGMA / np.sqrt(2 * size)
    for draws, expected in ((momentum, np.sqrt(2 * friction * step_size)), (fresh, np.sqrt(step_size))):
        sd = draws["theta"].double().std().item()
        assert abs(sd / expected - 1) < tolerance


@pytest.mark.parametrize("sampler", ["PSGLD", "ASGLD"])
def test_float16_moments_of_large_gradients_do_not_overflow(sampler):
    """A gradient of 1000 squares to 10⁶, past float16's largest value: before, pSGLD's V and ASGLD's C
    were kept in the params' dtype, became inf at step 0, and every chain was frozen as "diverged",
    with advice to lower a step size the overflow did not depend on. The moments are now float32, the
    params stay float16, and the run follows the float32 one."""

    def log_posterior(theta):  # N(0.1, 1e-4) per coordinate: gradient 1000 at 0
        return -0.5 * 1e4 * ((theta.float() - 0.1) ** 2).sum()

    make = {
        "PSGLD": lambda: sgmcmc.PSGLD(log_posterior, step_size=1e-4, alpha=0.99),
        "ASGLD": lambda: sgmcmc.ASGLD(log_posterior, step_size=1e-5),
    }
    traces = {}
    for dtype in (torch.float16, torch.float32):
        with warnings.catch_warnings():
            warnings.simplefilter("error", sgmcmc.SamplerDivergenceWarning)
            traces[dtype] = make[sampler]().sample(
                torch.zeros(100, dtype=dtype), num_chains=2, num_steps=300, seed=0, progress=False
            )
    state = traces[torch.float16].final_state
    assert state["params"]["theta"].dtype == torch.float16
    moments = [moment for name, moment in state.items() if name != "params"]
    assert {value.dtype for moment in moments for value in moment.values()} == {torch.float32}
    # the same noise rounded to float16: the chains' last 100 draws agree to float16's precision
    half, single = (traces[dtype].posterior["theta"][:, -100:].astype(np.float64) for dtype in traces)
    np.testing.assert_allclose(half.mean(), single.mean(), atol=2e-3)


def test_float16_parameters_of_the_psgld_optimizer_keep_float32_moments():
    parameter = torch.nn.Parameter(torch.zeros(10, dtype=torch.float16))
    optimizer = sgmcmc.optim.PSGLD([parameter], lr=1e-4)
    parameter.grad = torch.full_like(parameter, -1000.0)  # the gradient of the loss: squared, 10⁶
    optimizer.step()
    assert torch.isfinite(parameter).all() and parameter.dtype == torch.float16
    assert optimizer.state[parameter]["square_average"].dtype == torch.float32


def test_a_seed_of_2_to_the_64_is_refused_by_name():
    """The largest 64-bit seed is 2**64 − 1 (found by mutation testing: letting 2**64 through failed later in
    torch with 'Overflow when unpacking long long')."""
    with pytest.raises(ValueError, match=r"in \[0, 2\*\*64\), got 18446744073709551616"):
        sgmcmc.chain_seeds(2**64, 2)
    assert len(sgmcmc.chain_seeds(2**64 - 1, 2)) == 2
