"""The ``sgmcmc`` command."""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Sequence

from sgmcmc.demo import logistic_regression_demo


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sgmcmc", description="Stochastic-gradient MCMC for PyTorch.")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo", help="Bayesian logistic regression on breast-cancer data: 4 SGLD chains, ArviZ summary"
    )
    demo.add_argument("--output", default="sgmcmc-output", help="folder for posterior.nc (default: %(default)s)")
    demo.add_argument("--num-chains", type=int, default=4)
    demo.add_argument("--num-steps", type=int, default=20_000)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    arguments = parser.parse_args(argv)
    warnings.filterwarnings("ignore", category=FutureWarning, module="arviz")
    logistic_regression_demo(
        output=arguments.output,
        num_chains=arguments.num_chains,
        num_steps=arguments.num_steps,
        seed=arguments.seed,
        progress=not arguments.no_progress,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
