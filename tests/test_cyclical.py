"""Cyclical SG-MCMC: the cosine schedule of eq. (1), the two stages, and the 25-Gaussian experiment."""

import math

import numpy as np
import pytest
import torch

import sgmcmc
from sgmcmc.chains import ChainGenerators
from sgmcmc.log_density import BoundPotential, ChainPotential
from sgmcmc.schedules import Cyclical
from sgmcmc.trace import group_dataset
from targets import K_SIGMA, GaussianGrid, mean_and_se, standard_normal_log_posterior


def test_schedule_equals_equation_1_at_hand_computed_points():
    schedule = Cyclical(initial_step_size=0.2, num_cycles=4, total_steps=12, exploration=0.5)
    assert schedule.cycle_length == 3  # 12/4
    # our step k is the paper's k + 1: η = η0/2 (cos(π mod(k, 3)/3) + 1)
    expected = [0.2, 0.1 * (math.cos(math.pi / 3) + 1), 0.1 * (math.cos(2 * math.pi / 3) + 1)]
    np.testing.assert_allclose(schedule.values(6), expected * 2)
    assert schedule(1) == pytest.approx(0.15) and schedule(2) == pytest.approx(0.05)
    assert [schedule.cycle(step) for step in range(7)] == [0, 0, 0, 1, 1, 1, 2]
    # r = 0, 1/3, 2/3: only r ≥ β = 0.5 samples
    assert [schedule.is_sampling(step) for step in range(6)] == [False, False, True] * 2
    assert not schedule.satisfies_robbins_monro()


def test_cycle_boundaries_are_exact():
    schedule = Cyclical(initial_step_size=1.0, num_cycles=5, total_steps=1000, exploration=0.8)
    starts = [step for step in range(1000) if schedule(step) == 1.0]
    assert starts == [0, 200, 400, 600, 800]
    sampling = [step for step in range(200) if schedule.is_sampling(step)]
    assert sampling == list(range(160, 200))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(initial_step_size=0.0), "initial_step_size"),
        (dict(num_cycles=0), "num_cycles must be >= 1"),
        (dict(total_steps=3), "total_steps must be >= 4"),
        (dict(exploration=1.0), "exploration must be in"),
        (dict(exploration=-0.1), "exploration must be a finite number >= 0"),
        # before, these planned fewer cycles than num_cycles, or a last cycle that never samples, and said nothing
        (dict(num_cycles=6, total_steps=10), r"cycles of ⌈10/6⌉ = 2 steps make only 5 cycles, not num_cycles=6"),
        (dict(num_cycles=40, total_steps=100), "make only 34 cycles, not num_cycles=40"),
        (dict(total_steps=10), r"the last of the 4 cycles has only 1 step\(s\) \(a cycle has 3\), all exploring"),
        (
            dict(total_steps=8, exploration=0.6),
            "cycles of 2 steps never reach their sampling stage with exploration=0.6",
        ),
    ],
)
def test_schedule_errors(kwargs, match):
    arguments = dict(initial_step_size=0.1, num_cycles=4, total_steps=100, exploration=0.5)
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=match):
        Cyclical(**arguments)


def test_numpy_integers_are_stored_as_the_ints_they_equal():
    """The schedule's repr goes into a run's attrs, which a resumed run compares with its checkpoint's:
    before, Cyclical(0.1, np.int64(2), np.int64(40)) kept its numpy ints and a resume with 2 and 40 was refused."""
    schedule = Cyclical(0.1, np.int64(2), np.int64(40))
    assert type(schedule.num_cycles) is int and type(schedule.total_steps) is int
    assert repr(schedule) == repr(Cyclical(0.1, 2, 40))


def _runs_at_two_temperatures(sampler, schedule, num_chains, dimension):
    """The same seeded run at T = 1 and T = 4: the same ξ at every step, scaled by sqrt(T) while sampling."""
    return {
        temperature: sampler(temperature).sample(
            torch.ones(dimension, dtype=torch.float64),
            num_chains=num_chains,
            num_steps=schedule.total_steps,
            seed=0,
            progress=False,
        )
        for temperature in (1.0, 4.0)
    }


def test_exploration_is_noise_free_and_only_states_made_by_sampling_updates_are_kept():
    schedule = Cyclical(initial_step_size=0.1, num_cycles=3, total_steps=30, exploration=0.5)
    traces = _runs_at_two_temperatures(
        lambda temperature: sgmcmc.CyclicalSGLD(standard_normal_log_posterior, schedule, temperature=temperature),
        schedule,
        num_chains=2,
        dimension=2,
    )
    trace = traces[1.0]
    steps = trace.draw_coords["step"]
    # the state at step s is made by update s − 1: kept when that update sampled (updates 5-9, 15-19, 25-28)
    np.testing.assert_array_equal(steps, [s for s in range(1, 30) if schedule.is_sampling(s - 1)])
    np.testing.assert_array_equal(trace.draw_coords["cycle"], (steps - 1) // 10)
    # updates 0-4 are SGD from θ = 1, θ_5 = Π (1 − η_j); update 5 moves it to θ_5 (1 − η_5) + sqrt(2 η_5 T) ξ
    drift = np.prod([1 - schedule(step) for step in range(6)])
    noise = {temperature: trace.posterior["theta"][:, 0] - drift for temperature, trace in traces.items()}
    assert np.abs(noise[1.0]).min() > 1e-3
    np.testing.assert_allclose(noise[4.0], 2 * noise[1.0], rtol=1e-10)
    idata = trace.to_arviz()
    assert idata.posterior["cycle"].dims == ("draw",)
    assert [cycle for cycle, _ in group_dataset(idata, "posterior").groupby("cycle")] == [0, 1, 2]


def test_cyclical_sghmc_runs_sgd_with_momentum_while_exploring():
    schedule = Cyclical(initial_step_size=0.1, num_cycles=2, total_steps=20, exploration=0.5)
    traces = _runs_at_two_temperatures(
        lambda temperature: sgmcmc.CyclicalSGHMC(
            standard_normal_log_posterior, schedule, friction=0.5, temperature=temperature
        ),
        schedule,
        num_chains=1,
        dimension=1,
    )
    theta, velocity = 1.0, 0.0  # momentum starts at N(0, η T) with T = 0 in exploration
    for step in range(6):  # updates 0-4 explore; update 5 is this recursion plus its noise
        velocity = velocity - schedule(step) * theta - 0.5 * velocity
        theta += velocity
    noise = {temperature: trace.posterior["theta"][0, 0, 0] - theta for temperature, trace in traces.items()}
    assert abs(noise[1.0]) > 1e-3
    assert noise[4.0] == pytest.approx(2 * noise[1.0], rel=1e-10)
    assert set(traces[1.0].sample_stats) >= {"kinetic_energy", "lp"}


def test_cyclical_sghmc_draws_no_momentum_noise_while_exploring():
    """The initial momentum is N(0, η·0) and every momentum resampled in exploration is its noiseless law given
    θ, −(η/2) ∇log p(θ) / (1 − α/2) (sgmcmc.sghmc.refreshed_momentum at T = 0): the kernel's first five updates
    are the SGD-with-momentum recursion whatever the seed. Through ``sample`` this cannot be seen: the first
    kept state carries the sampling update's noise, which scales with √T like a leak would."""
    schedule = Cyclical(initial_step_size=0.1, num_cycles=3, total_steps=30, exploration=0.5)
    # with a noise estimate, a refresh at T > 0 restores the gradient noise it cancels; at T = 0 it adds none
    sampler = sgmcmc.CyclicalSGHMC(
        standard_normal_log_posterior,
        schedule,
        friction=0.5,
        noise_estimate=0.1,
        temperature=4.0,
        resample_momentum_every=2,
    )
    to_user = lambda params: params["theta"]  # noqa: E731
    potential = BoundPotential(
        ChainPotential(standard_normal_log_posterior, to_user, has_data=False, batch_per_chain=False), None
    )
    theta, velocity = 1.0, 0.0
    for step in range(5):
        if step in (2, 4):  # resampled at T_k = 0: ∇log p(θ) = −θ, friction 0.5
            velocity = 0.5 * schedule(step) * theta / (1 - 0.5 / 2)
        velocity = velocity - schedule(step) * theta - 0.5 * velocity
        theta += velocity
    for seed in (0, 1):
        generators = ChainGenerators([seed], torch.device("cpu"))
        state = sampler.init({"theta": torch.ones(1, 1, dtype=torch.float64)}, potential, generators)
        for step in range(5):
            state, _ = sampler.step(state, potential, schedule(step), sampler.temperature_at(step), generators)
        assert float(state["params"]["theta"][0, 0]) == pytest.approx(theta, rel=1e-12)


def test_cyclical_sghmc_passes_every_sghmc_setting_on():
    """With no exploration stage every update samples, so CyclicalSGHMC with a mass and a noise estimate
    makes SGHMC's chain with the same settings and seed, draw for draw (found by mutation testing: with the
    defaults in every test, dropping mass or noise_estimate went unseen). SGHMC keeps the state of step 0,
    which cSGHMC does not (no sampling update made it)."""
    schedule = Cyclical(0.05, num_cycles=2, total_steps=20, exploration=0.0)
    settings = dict(friction=0.3, mass=2.0, noise_estimate=0.1)
    options = dict(num_chains=2, num_steps=20, seed=0, progress=False)
    init = torch.ones(2, dtype=torch.float64)
    cyclical = sgmcmc.CyclicalSGHMC(standard_normal_log_posterior, schedule, **settings).sample(init, **options)
    plain = sgmcmc.SGHMC(standard_normal_log_posterior, schedule, **settings).sample(init, **options)
    np.testing.assert_array_equal(cyclical.posterior["theta"], plain.posterior["theta"][:, 1:])


def test_a_run_that_ends_before_its_first_sampling_stage_is_refused():
    schedule = Cyclical(initial_step_size=0.1, num_cycles=2, total_steps=100, exploration=0.8)
    with pytest.raises(
        ValueError, match="no state of this run would be kept: CyclicalSGLD keeps none of steps 0 to 39"
    ):
        sgmcmc.CyclicalSGLD(standard_normal_log_posterior, schedule).sample(
            torch.zeros(1), num_chains=1, num_steps=40, seed=0, progress=False
        )


def test_a_run_longer_than_its_cycles_warns_and_a_shorter_one_does_not(recwarn):
    """3 cycles of ⌈20/3⌉ = 7 steps last 21 steps: a run of 21 stays within them, one of 22 starts a 4th."""
    schedule = Cyclical(initial_step_size=0.1, num_cycles=3, total_steps=20, exploration=0.5)
    sampler = sgmcmc.SGLD(standard_normal_log_posterior, schedule)
    for num_steps in (15, 20, 21):
        sampler.sample(torch.zeros(1), num_chains=1, num_steps=num_steps, seed=0, progress=False)
    assert not [warning for warning in recwarn if "Cyclical" in str(warning.message)]
    expected = r"total_steps=20 \(3 cycles of 7 steps\).*num_steps=22, so it starts cycle 4"
    with pytest.warns(RuntimeWarning, match=expected) as record:
        sgmcmc.CyclicalSGLD(standard_normal_log_posterior, schedule).sample(
            torch.zeros(1), num_chains=1, num_steps=22, seed=0, progress=False
        )
    assert [warning.filename for warning in record] == [__file__]


def test_cyclical_samplers_need_a_cyclical_schedule():
    with pytest.raises(TypeError, match="must be a sgmcmc.schedules.Cyclical"):
        sgmcmc.CyclicalSGLD(standard_normal_log_posterior, 0.1)
    with pytest.raises(TypeError, match="must be a sgmcmc.schedules.Cyclical"):
        sgmcmc.CyclicalSGHMC(standard_normal_log_posterior, 0.1, friction=0.1)


def test_25_gaussians_csgld_finds_every_mode_with_equal_weights_sgld_does_not():
    """Same budget (16 chains x 20 000 gradients). cSGLD explores with noisy large steps (exploration=0):
    on this target a noise-free exploration stage only descends into the nearest mode (see docs)."""
    target = GaussianGrid()
    common = dict(num_chains=16, num_steps=20_000, seed=0, init_jitter=3.0, progress=False)
    init = torch.zeros(2, dtype=torch.float64)
    cyclical = sgmcmc.CyclicalSGLD(
        target.log_posterior, Cyclical(0.05, num_cycles=50, total_steps=20_000, exploration=0.0)
    ).sample(init, **common)
    constant = sgmcmc.SGLD(target.log_posterior, step_size=0.01).sample(init, **common)

    near = target.mode_indicators(cyclical.posterior["theta"]).astype(np.float64)  # (chain, draw, 25)
    assert near.any(axis=(0, 1)).all(), "cSGLD missed a mode"
    weights = near.sum(axis=(0, 1)) / near.sum()
    for mode in range(25):
        _, se = mean_and_se(near[..., mode])
        # Bonferroni over 25 modes at 1e-3 family-wise: z = 4.1; se of a share of all near-mode draws
        assert abs(weights[mode] - 1 / 25) < 4.1 * se / near.sum(axis=-1).mean(), (mode, weights[mode], se)
    cyclical_per_chain = near.any(axis=1).sum(axis=-1)
    constant_near = target.mode_indicators(constant.posterior["theta"])
    constant_per_chain = constant_near.any(axis=1).sum(axis=-1)
    assert cyclical_per_chain.min() >= 10, cyclical_per_chain  # every cSGLD chain crosses between many modes
    assert constant_per_chain.max() <= 2, constant_per_chain  # every SGLD chain stays where it fell
    assert constant_near.any(axis=(0, 1)).sum() < 25


def test_only_the_sampling_update_adds_noise_in_distribution():
    """CyclicalSGLD on N(0, 1) from θ = 1, η from Cyclical(0.1, 3 cycles of 10, β = 0.5): updates 0-4 explore
    (SGD), update 5 samples, so θ_6 − Π_{j≤5}(1 − η_j) = sqrt(2 η_5) ξ exactly: mean 0, variance 2η_5 = 0.1.

    That θ_6 − drift scales with sqrt(T) holds for any set of noisy updates (the chain is linear in ξ), so
    the variance itself is checked. 4000 chains: the s.e. of the sample variance is about
    0.1·sqrt(2/4000) = 2.2 %, so K_SIGMA s.e. ≈ 9 %. A noisy exploration stage would give variance
    Σ_j 2η_j Π_{k>j}(1−η_k)² ≈ 0.66 (6.6×); noise one update early 2η_4(1−η_5)² + 2η_5 ≈ 0.22 (2.2×).
    """
    schedule = Cyclical(initial_step_size=0.1, num_cycles=3, total_steps=30, exploration=0.5)
    num_chains = 4000
    trace = sgmcmc.CyclicalSGLD(standard_normal_log_posterior, schedule).sample(
        torch.ones(1, dtype=torch.float64), num_chains=num_chains, num_steps=7, seed=0, progress=False
    )
    np.testing.assert_array_equal(trace.draw_coords["step"], [6])
    drift = np.prod([1 - schedule(step) for step in range(6)])
    residual = trace.posterior["theta"][:, 0, 0] - drift
    variance = 2 * schedule(5)
    assert abs(residual.mean()) < K_SIGMA * math.sqrt(variance / num_chains)
    fourth = ((residual - residual.mean()) ** 4).mean()
    assert abs(residual.var() - variance) < K_SIGMA * math.sqrt((fourth - variance**2) / num_chains), residual.var()


def test_a_plan_whose_last_cycle_samples_once_is_warned_of():
    """Its one sampled state is the run's final state, which no draw records: before, the trace silently had
    cycles 0-2 of 4 (a review found it), though the plan passes Cyclical's own checks."""
    schedule = Cyclical(initial_step_size=0.1, num_cycles=4, total_steps=12, exploration=0.5)
    with pytest.warns(UserWarning, match="the last of the 4 cycles .* samples at one step only, .* has 3 cycles"):
        sampler = sgmcmc.CyclicalSGLD(standard_normal_log_posterior, schedule)
    trace = sampler.sample(torch.zeros(2), num_chains=2, num_steps=12, progress=False)
    assert sorted(set(trace.draw_coords["cycle"].tolist())) == [0, 1, 2]
