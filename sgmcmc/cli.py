"""The ``sgmcmc`` command: each subcommand is registered by the module that implements it."""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Sequence

from sgmcmc import bias_variance, job, playground

COMMAND_MODULES = [job, playground, bias_variance]
"""Modules with ``add_command(commands)``: it adds a subparser whose ``run`` default takes the
parsed arguments and returns the exit status."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sgmcmc", description="Stochastic-gradient MCMC for PyTorch.")
    commands = parser.add_subparsers(dest="command", required=True)
    for module in COMMAND_MODULES:
        module.add_command(commands)
    arguments = parser.parse_args(argv)
    warnings.filterwarnings("ignore", category=FutureWarning, module="arviz")
    return arguments.run(arguments)


if __name__ == "__main__":
    raise SystemExit(main())
