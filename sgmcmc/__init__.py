"""sgmcmc: stochastic-gradient MCMC for PyTorch, many chains at once, traces for ArviZ."""

__version__ = "0.1.0"

from sgmcmc import optim, schedules
from sgmcmc.asgld import ASGLD
from sgmcmc.chains import chain_seeds
from sgmcmc.cyclical import CyclicalSGHMC, CyclicalSGLD
from sgmcmc.data import Minibatches
from sgmcmc.ld import LD
from sgmcmc.log_density import minibatch_log_posterior
from sgmcmc.psgld import PSGLD
from sgmcmc.runner import SamplerDivergenceWarning
from sgmcmc.sampler import Sampler
from sgmcmc.sghmc import SGHMC
from sgmcmc.sgld import SGLD
from sgmcmc.sgnht import SGNHT
from sgmcmc.trace import Trace

__all__ = [
    "ASGLD",
    "PSGLD",
    "CyclicalSGHMC",
    "CyclicalSGLD",
    "LD",
    "SGHMC",
    "SGLD",
    "SGNHT",
    "Minibatches",
    "Sampler",
    "SamplerDivergenceWarning",
    "Trace",
    "chain_seeds",
    "minibatch_log_posterior",
    "optim",
    "schedules",
    "__version__",
]
