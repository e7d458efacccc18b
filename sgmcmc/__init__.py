"""sgmcmc: stochastic-gradient MCMC for PyTorch, many chains at once, traces for ArviZ."""

__version__ = "0.1.0"

from sgmcmc import distributed, landscapes, optim, playground, schedules
from sgmcmc.asgld import ASGLD
from sgmcmc.bias_variance import BiasVarianceStudy, GaussianTarget, bias_variance_study
from sgmcmc.chains import chain_seeds
from sgmcmc.cyclical import CyclicalSGHMC, CyclicalSGLD
from sgmcmc.data import Minibatches
from sgmcmc.laplace import LaplaceApproximation, laplace_approximation
from sgmcmc.ld import LD
from sgmcmc.log_density import minibatch_log_posterior
from sgmcmc.psgld import PSGLD
from sgmcmc.runner import SamplerDivergenceWarning
from sgmcmc.sampler import Sampler
from sgmcmc.sghmc import SGHMC
from sgmcmc.sgld import SGLD
from sgmcmc.sgldcv import SGLDCV, find_mode
from sgmcmc.sgnht import SGNHT
from sgmcmc.stein import kernel_stein_discrepancy, score_at_draws
from sgmcmc.trace import Trace

__all__ = [
    "ASGLD",
    "PSGLD",
    "CyclicalSGHMC",
    "CyclicalSGLD",
    "LD",
    "SGHMC",
    "SGLD",
    "SGLDCV",
    "SGNHT",
    "BiasVarianceStudy",
    "GaussianTarget",
    "LaplaceApproximation",
    "Minibatches",
    "Sampler",
    "SamplerDivergenceWarning",
    "Trace",
    "bias_variance_study",
    "chain_seeds",
    "distributed",
    "find_mode",
    "kernel_stein_discrepancy",
    "laplace_approximation",
    "landscapes",
    "minibatch_log_posterior",
    "optim",
    "playground",
    "schedules",
    "score_at_draws",
    "__version__",
]
