"""The main job, ``sgmcmc demo``, on a short run."""

import arviz as az

from sgmcmc.cli import main


def test_demo_writes_an_inference_data_and_reports(tmp_path, capsys):
    assert main(["demo", "--num-steps", "400", "--output", str(tmp_path), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "r_hat" in printed and "held-out accuracy" in printed
    idata = az.from_netcdf(str(tmp_path / "posterior.nc"))
    assert idata.posterior["weights"].shape == (4, 40, 10)
    accuracy = float(printed.split("held-out accuracy of the posterior predictive: ")[1].split()[0])
    assert accuracy > 0.9  # a 10-component logistic regression; chance is 0.63
