"""Per-chain random streams."""

import torch

import sgmcmc
from sgmcmc.chains import ChainGenerators, select_chains


def test_chain_seeds_are_prefix_stable_and_distinct():
    assert sgmcmc.chain_seeds(3, 2) == sgmcmc.chain_seeds(3, 5)[:2]
    assert len(set(sgmcmc.chain_seeds(3, 100))) == 100
    assert sgmcmc.chain_seeds(3, 2) != sgmcmc.chain_seeds(4, 2)


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


def test_select_chains():
    mask = torch.tensor([True, False])
    picked = select_chains(mask, {"x": torch.ones(2, 3)}, {"x": torch.zeros(2, 3)})
    torch.testing.assert_close(picked["x"], torch.tensor([[1.0] * 3, [0.0] * 3]))
