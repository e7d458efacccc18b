"""The playground: one torch.optim loop over R starts, reproducible success rates, the Gaussian target, the CLI."""

import io
import math
import re

import numpy as np
import pytest
import torch

import sgmcmc
from sgmcmc.cli import main
from sgmcmc.landscapes import Ackley, IsotropicGaussian, Quadratic
from sgmcmc.playground import Method, compare, polynomial_decay, sweep
from sgmcmc.schedules import Polynomial
from targets import K_SIGMA, mean_and_se, variance_about_and_se

ACKLEY_STARTS = torch.tensor(  # two starts in the global cell (max |θ_i| < 1/2), six in other cells
    [[0.3, -0.2], [-0.45, 0.4], [1.2, 0.1], [-2.1, 1.7], [3.0, -2.9], [0.8, 0.8], [-1.0, -3.5], [2.5, 2.5]],
    dtype=torch.float64,
)


def _noise_seed(seed: int) -> int:
    return sgmcmc.chain_seeds(seed, 2)[1]


def test_success_rates_on_ackley_from_fixed_starts_are_reproducible_with_seeds():
    methods = sweep(learning_rates=(0.01, 0.1), num_steps=300)
    first, again, other = (
        compare(Ackley(2), methods, num_steps=300, seed=seed, starts=ACKLEY_STARTS) for seed in (0, 0, 1)
    )
    for run, run_again, run_other in zip(first.runs, again.runs, other.runs, strict=True):
        np.testing.assert_array_equal(run.loss, run_again.loss)
        assert (run.success_rate, run.best_success_rate) == (run_again.success_rate, run_again.best_success_rate)
        if run.method.optimizer == "sgld":  # the seed drives SGLD's noise …
            assert not np.array_equal(run.final, run_other.final)
        else:  # … and nothing else, given the starts
            np.testing.assert_array_equal(run.loss, run_other.loss)
    sgld_rates = [[run.success_rate for run in c.runs if run.method.optimizer == "sgld"] for c in (first, other)]
    assert sgld_rates[0] != sgld_rates[1]
    # gradient descent with a small step stays in the basin it starts in: the two starts in the global cell
    assert first.runs[0].method.label == "SGD lr=0.01"
    assert first.runs[0].final_in_basin.tolist() == [True, True] + [False] * 6


def test_random_starts_follow_the_seed_and_the_start_box():
    methods = [Method("sgd", 0.01)]
    starts = [compare(Ackley(3), methods, num_starts=16, num_steps=1, seed=seed).starts for seed in (0, 0, 1)]
    np.testing.assert_array_equal(starts[0], starts[1])
    assert not np.array_equal(starts[0], starts[2])
    assert starts[0].shape == (16, 3) and np.abs(starts[0]).max() <= Ackley.start_box[1]


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_the_loop_over_all_starts_equals_each_start_run_alone(optimizer):
    """Σ_r U(θ_r) as the loss of one (R, dim) parameter moves every row as its own optimizer would."""
    method = Method(optimizer, 0.05)
    together = compare(Ackley(2), [method], num_steps=200, num_traced=8, starts=ACKLEY_STARTS).runs[0]
    for index, start in enumerate(ACKLEY_STARTS):
        alone = compare(Ackley(2), [method], num_steps=200, num_traced=1, starts=start[None]).runs[0]
        np.testing.assert_allclose(together.trajectories[:, index], alone.trajectories[:, 0], rtol=1e-12, atol=1e-14)


def test_sgld_in_the_loop_equals_the_sampler_for_one_start():
    """The playground's SGLD (sgmcmc.optim.SGLD) is the sampler's update with the same noise stream."""
    landscape, start = Ackley(2), ACKLEY_STARTS[2]
    run = compare(landscape, [Method("sgld", 0.02, 0.5)], num_steps=100, seed=7, num_traced=1, starts=start[None])
    trace = sgmcmc.SGLD(landscape.log_density, step_size=0.02, temperature=0.5).sample(
        start, num_chains=1, num_steps=101, seed=_noise_seed(7), progress=False
    )
    np.testing.assert_allclose(run.runs[0].trajectories[:, 0], trace.posterior["theta"][0], rtol=1e-12, atol=1e-14)


def test_step_size_and_temperature_schedules_apply_at_every_step():
    """Step k uses η_k and T_k: θ_{k+1} = (1 − η_k) θ_k + sqrt(2 η_k T_k) ξ_k on U = θ²/2, with ξ from SGLD's stream."""
    step_size, temperature = Polynomial(0.5, 2.0, 0.55), Polynomial(1.0, 3.0, 1.0)
    run = compare(
        Quadratic(1), [Method("sgld", step_size, temperature)], num_steps=50, seed=3, starts=torch.ones(1, 1)
    ).runs[0]
    generator = torch.Generator().manual_seed(sgmcmc.chain_seeds(_noise_seed(3), 1)[0])
    expected = [1.0]
    for step in range(50):
        noise = float(torch.randn(1, generator=generator, dtype=torch.float64))
        eta = step_size(step)
        expected.append((1 - eta) * expected[-1] + math.sqrt(2 * eta * temperature(step)) * noise)
    np.testing.assert_allclose(run.trajectories[:, 0, 0], expected, rtol=1e-12)


def test_gaussian_target_recovers_mean_zero_and_the_exact_discrete_time_variance():
    """Seed 000's validation through the playground's loop: on N(0, σ²) at temperature T, SGLD's stationary
    variance is Tσ² / (1 − η/(2σ²)) (here 8/3, not Tσ² = 2), within K_SIGMA Monte Carlo standard errors."""
    landscape, step_size, temperature = IsotropicGaussian(2, scale=2.0), 2.0, 0.5
    run = compare(
        landscape, [Method("sgld", step_size, temperature)], num_steps=3000, num_traced=8, starts=torch.zeros(8, 2)
    ).runs[0]
    exact = float(landscape.stationary_covariance(step_size, temperature)[0, 0])
    assert exact == pytest.approx(temperature * 4 / (1 - step_size / 8))
    for dim in range(2):
        draws = run.trajectories[100:, :, dim].T  # (chain, draw), burn-in dropped
        mean, se = mean_and_se(draws)
        assert abs(mean) < K_SIGMA * se
        variance, variance_se = variance_about_and_se(draws, center=0.0)
        assert abs(variance - exact) < K_SIGMA * variance_se, (variance, exact, variance_se)
        assert abs(variance - temperature * 4) > K_SIGMA * variance_se


def test_diverged_runs_count_as_failures():
    methods = [Method("sgd", 0.1), Method("sgd", 0.1), Method("sgd", 0.001)]
    overflowing, diverged, converging = [
        compare(Quadratic(2, condition_number=100.0), [method], 4, num_steps).table()[0]
        for method, num_steps in zip(methods, (300, 400, 400), strict=True)
    ]
    for row in (overflowing, diverged):  # U = ∞ at a finite θ after 300 steps, θ = NaN after 400
        assert row["diverged"] == 1.0 and row["final in global basin"] == 0.0
        assert row["median final U − U*"] == math.inf
    assert converging["diverged"] == 0.0 and converging["final in global basin"] == 1.0
    assert "| SGD lr=0.1 | 0.0% |" in compare(Quadratic(2, condition_number=100.0), methods[:1], 4, 300).to_markdown()
    # Before, a run still finite but growing geometrically (lr 2.5 > 2/λ: |θ|² near 1e70 after 100 steps) was in
    # the basin (all of R² for a quadratic) and not diverged, and every diverged run's finite start was its "best"
    for method, num_steps in ((Method("sgd", 2.5), 100), (Method("sgd", 100.0), 400)):
        row = compare(Quadratic(2), [method], 4, num_steps).table()[0]
        assert row["diverged"] == 1.0 and row["final in global basin"] == row["best in global basin"] == 0.0, row


def test_sweep_methods_and_schedules():
    methods = sweep(("sgd", "adam", "sgld"), (0.01, 0.05, 0.1), temperature=2.0, num_steps=500)
    assert [method.label for method in methods[-2:]] == ["SGLD lr=0.1→0.01 T=2", "SGLD lr=0.1→0.01 T=2→0.1"]
    assert len(methods) == 11 and len(sweep(("sgd", "sgld"), (0.1,), annealed=True)) == 2
    decay = methods[-1].learning_rate
    assert decay(0) == pytest.approx(0.1) and decay(500) == pytest.approx(0.01) and decay.satisfies_robbins_monro()
    cooling = methods[-1].temperature
    assert cooling(0) == pytest.approx(2.0) and cooling(500) == pytest.approx(0.1) and cooling.gamma == 1.0
    with pytest.raises(ValueError, match="final must be < initial"):
        polynomial_decay(0.1, 0.2, 100)
    # before, a bare OverflowError, and "a must be a finite number > 0" of an a the caller never gave
    for initial, final, gamma in ((1.0, 1e-5, 0.01), (1e300, 1e-300, 0.55)):
        with pytest.raises(ValueError, match=re.escape(f"no decay a (b + k)^(−{gamma:g}) from initial={initial:g}")):
            polynomial_decay(initial, final, 100, gamma=gamma)
    at_zero = sweep(("sgld",), (0.01, 0.1), temperature=0.0, num_steps=500)  # nothing to cool: no annealed run
    assert [method.label for method in at_zero][-1] == "SGLD lr=0.1→0.01 T=0" and len(at_zero) == 3
    assert decay.gamma == 0.55  # seed 000's decaying rate, Robbins–Monro with room to spare
    # before, a final_temperature that no run uses was ignored, even one that would be refused
    for settings in (dict(temperature=0.0), dict(optimizers=("sgd",)), dict(learning_rates=(0.1,))):
        with pytest.raises(ValueError, match="final_temperature=5 sets the cooled SGLD run, which these settings"):
            sweep(**{"optimizers": ("sgld",), "learning_rates": (0.01, 0.1), **settings, "final_temperature": 5.0})


def test_the_table_measures_the_loss_above_the_minimum_and_the_first_runs_are_traced():
    """The double well's minimum is below 0: gradient descent started at it stays there, at U − U* = 0. The
    traced trajectories are those of the first starts."""
    well = sgmcmc.landscapes.DoubleWell(2)
    starts = torch.stack([well.minimum, well.minimum, well.minimum + 0.3])  # the median run stays at the minimum
    comparison = compare(well, [Method("sgd", 0.01)], starts=starts, num_steps=5, num_traced=2)
    assert well.minimum_value < -0.5 and comparison.table()[0]["median final U − U*"] == pytest.approx(0, abs=1e-12)
    np.testing.assert_array_equal(comparison.runs[0].trajectories[0], starts[:2].numpy())


def test_method_arguments_are_checked():
    assert Method("sgld", 0.1).temperature == 1.0
    with pytest.raises(ValueError, match="temperature applies to sgld only"):
        Method("adam", 0.1, temperature=1.0)
    with pytest.raises(ValueError, match="optimizer must be one of"):
        Method("rmsprop", 0.1)
    with pytest.raises(ValueError, match="starts must have shape"):
        compare(Ackley(2), [Method("sgd", 0.1)], starts=torch.zeros(3, 5))


def test_command_prints_the_table_and_writes_the_figures(tmp_path, capsys):
    arguments = ["--num-starts", "4", "--num-steps", "20", "--output", str(tmp_path)]
    assert main(["landscape", "ackley", *arguments]) == 0
    rosenbrock = ["landscape", "rosenbrock", "--dim", "3", "--optimizers", "sgd", "sgld", "--lr", "1e-4", "1e-5"]
    assert main([*rosenbrock, "--final-temperature", "0.2", *arguments]) == 0
    assert main(["landscape", "double-well", "--dim", "1", *arguments]) == 0  # θ over the steps
    printed = capsys.readouterr().out
    assert "| SGLD lr=0.1→0.01 T=1→0.05 |" in printed and "| SGLD lr=0.0001→1e-05 T=1→0.2 |" in printed
    for name in ("ackley", "rosenbrock", "double-well"):
        for kind in ("trajectories", "loss", "success"):
            assert (tmp_path / f"landscape_{name}_{kind}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_loss_that_rises_from_its_start_is_drawn():
    """SGLD started near θ* rises to its stationary loss (about T·dim/2 = 1). Before, the scale was 10× the
    start's quartiles and every value above it was dropped: the SGLD panel was empty."""
    from sgmcmc.playground import plot_loss_curves

    starts = 0.05 * torch.randn(32, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    comparison = compare(
        IsotropicGaussian(2), [Method("sgd", 0.1), Method("sgld", 0.1, 1.0)], num_steps=300, starts=starts
    )
    sgld_loss_panel = plot_loss_curves(comparison).axes[1]
    median = sgld_loss_panel.get_lines()[0].get_ydata()
    assert np.isfinite(median).all() and len(median) == 301
    assert median[-1] < sgld_loss_panel.get_ylim()[1]


def test_trajectory_panels_need_a_column():
    """Before, columns=0 failed inside the layout with a ZeroDivisionError."""
    from sgmcmc.playground import plot_trajectories

    comparison = compare(Ackley(2), [Method("sgd", 0.01)], num_steps=2, num_starts=2)
    with pytest.raises(ValueError, match="columns"):
        plot_trajectories(comparison, columns=0)
    assert len(plot_trajectories(comparison, columns=3).axes) == 1


def test_starts_may_be_a_parameter_but_not_non_finite():
    """Before, a Parameter's graph made compare fail after every run; a NaN start was run and called diverged."""
    starts = torch.nn.Parameter(torch.tensor([[1.2, -0.4], [3.0, 2.5]], dtype=torch.float64))
    comparison = compare(Ackley(2), [Method("sgd", 0.01)], num_steps=5, starts=starts)
    np.testing.assert_array_equal(comparison.starts, starts.detach().numpy())
    with pytest.raises(ValueError, match="starts must be finite"):
        compare(Ackley(2), [Method("sgd", 0.01)], num_steps=5, starts=torch.tensor([[math.nan, 0.0]]))


def test_flags_must_be_booleans_and_methods_distinct():
    """Before, the string "False" read as True, and a method given twice merged its runs in the figures."""
    with pytest.raises(TypeError, match="rotated must be True or False, got str 'False'"):
        Quadratic(2, rotated="False")
    with pytest.raises(TypeError, match="annealed must be True or False"):
        sweep(annealed="False")
    with pytest.raises(ValueError, match=r"methods \['SGD lr=0.01'\] are given more than once"):
        compare(Ackley(2), [Method("sgd", 0.01), Method("sgd", 0.01)], num_steps=2)


def test_best_is_the_lowest_loss_state_visited_and_random_starts_fill_the_box():
    """SGLD at T = 1 from θ* = 0 of a Gaussian: the start is the lowest-loss state of every run, the last
    state is not. Random starts lie on both sides of 0, over the start box."""
    starts = torch.zeros(8, 2, dtype=torch.float64)
    run = compare(IsotropicGaussian(2), [Method("sgld", 0.1, 1.0)], num_steps=50, starts=starts).runs[0]
    np.testing.assert_array_equal(run.best, np.zeros((8, 2)))
    np.testing.assert_array_equal(run.loss.min(axis=0), run.loss[0])
    assert (np.abs(run.final) > 0).all()
    drawn = compare(Ackley(3), [Method("sgd", 0.01)], num_starts=64, num_steps=1, seed=0).starts
    low, high = Ackley.start_box
    assert drawn.min() < low / 2 and drawn.max() > high / 2


def test_methods_may_come_from_a_generator():
    """Before, the label check used the generator up: no runs came back, and to_markdown failed with an IndexError."""
    methods = (Method(kind, 0.01) for kind in ("sgd", "sgld"))
    comparison = compare(Ackley(2), methods, num_steps=5, starts=ACKLEY_STARTS)
    assert [run.method.label for run in comparison.runs] == [Method("sgd", 0.01).label, Method("sgld", 0.01).label]
    comparison.to_markdown()


def test_bad_settings_of_the_command_are_usage_errors_naming_them(capsys):
    """Before, they left as tracebacks, and a final temperature above T was blamed on "initial"/"final"."""
    with pytest.raises(SystemExit) as exit_status:
        main(["landscape", "ill-conditioned", "--dim", "1", "--num-steps", "2"])
    assert exit_status.value.code == 2
    assert "a 1-D quadratic has one curvature" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # before, "step_size must be ...": the samplers' name, not the option's
        main(["landscape", "quadratic", "--lr", "0", "--num-steps", "2"])
    assert "learning_rate must be a finite number > 0, got 0.0" in capsys.readouterr().err
    with pytest.raises(TypeError, match="learning_rate must be a real number, got str"):
        Method("adam", "0.1")
    with pytest.raises(ValueError, match=r"final_temperature must be in \(0, temperature = 1\), got 2"):
        sweep(temperature=1.0, final_temperature=2.0)


@pytest.mark.parametrize("learning_rate", [3.0, 10.0])
def test_the_loss_plot_of_a_diverging_run_is_drawn(learning_rate):
    """SGD at lr 3 or 10 on a quadratic grows 5- or 19-fold a step: before, its largest finite quartile (near
    1.8e308) times 10 was inf, and the plot failed with "Axis limits cannot be NaN or Inf"; then, capped at
    the float64 maximum, the figure failed to save (matplotlib's log ticks overflowed), which made the
    default `sgmcmc landscape ill-conditioned` crash."""
    from sgmcmc.playground import plot_loss_curves

    comparison = compare(Quadratic(2), [Method("sgd", learning_rate)], num_starts=4, num_steps=600, seed=0)
    assert comparison.runs[0].diverged.all()
    figure = plot_loss_curves(comparison)
    bottom, top = figure.axes[0].get_ylim()
    assert 0 < bottom < top <= np.finfo(np.float64).max
    figure.savefig(io.BytesIO(), format="png")


def test_a_diverging_run_leaves_the_top_of_the_loss_plot_of_the_runs_that_do_not():
    """The top was 10× the largest finite quartile of any run, a diverging one's near 1e308, and the 16
    decades below it left every converging run off the bottom."""
    from sgmcmc.playground import plot_loss_curves

    comparison = compare(Quadratic(2), [Method("sgd", 10.0), Method("sgd", 0.1)], num_starts=4, num_steps=600, seed=0)
    diverging, converging = comparison.runs
    assert diverging.diverged.all() and not converging.diverged.any()
    upper = np.quantile(converging.loss - comparison.landscape.minimum_value, 0.75, axis=1, method="inverted_cdf")
    _, top = plot_loss_curves(comparison).axes[0].get_ylim()
    assert top == pytest.approx(10 * upper.max(), rel=1e-12)


@pytest.mark.parametrize(
    "options, match",
    [
        (["--num-starts", "0"], "num_starts must be >= 1"),
        (["--seed", "-1"], r"seed must be an integer in [0, 2**64), got -1"),
        (["--lr", "0.1", "0.1"], "given more than once"),
    ],
)
def test_settings_that_the_runs_refuse_leave_no_output_folder(tmp_path, capsys, options, match):
    """These are checked by compare(), after the folder was made: it was left behind, empty."""
    with pytest.raises(SystemExit) as exit_status:
        main(["landscape", "quadratic", "--num-steps", "2", "--output", str(tmp_path / "out"), *options])
    assert exit_status.value.code == 2
    assert match in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_an_output_that_cannot_be_a_folder_is_a_usage_error_before_the_runs(tmp_path, capsys):
    """Before, the runs went first and the figures then failed with a FileExistsError traceback."""
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    with pytest.raises(SystemExit) as exit_status:
        main(["landscape", "quadratic", "--num-starts", "2", "--num-steps", "2", "--output", str(not_a_folder)])
    assert exit_status.value.code == 2
    captured = capsys.readouterr()
    assert f"cannot write to --output {not_a_folder}" in captured.err and "| SGD" not in captured.out
