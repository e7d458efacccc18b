"""The ``sgmcmc`` command: ``demo`` is ``run`` with the digits defaults."""

import json
import subprocess
import sys

import pytest

from sgmcmc.cli import main


def test_demo_is_the_job_on_digits(tmp_path, capsys):
    arguments = ["--num-steps", "100", "--burn-in", "50", "--thin", "10", "--hidden", "8", "--no-progress"]
    assert main(["demo", *arguments, "--output", str(tmp_path / "demo")]) == 0
    printed = capsys.readouterr().out
    assert "digits (classification)" in printed and "SGD ensemble of 4" in printed
    report = json.loads((tmp_path / "demo" / "report.json").read_text())
    assert report["config"]["dataset"] == "digits" and report["config"]["num_steps"] == 100


def test_unknown_command_and_bad_flag_exit_with_usage(capsys):
    with pytest.raises(SystemExit):
        main(["fly"])
    with pytest.raises(SystemExit):
        main(["run", "--num-steps", "many"])
    assert "invalid int value" in capsys.readouterr().err


def test_python_dash_m_sgmcmc_is_the_command():
    """Before, python -m sgmcmc failed with 'No module named sgmcmc.__main__'."""
    finished = subprocess.run([sys.executable, "-m", "sgmcmc", "run", "--help"], capture_output=True, text=True)
    assert finished.returncode == 0 and "usage: sgmcmc run" in finished.stdout
