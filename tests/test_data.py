"""Minibatch streams: every input form, per-chain independence, epochs, and input errors."""

import numpy as np
import pytest
import torch
from torch.utils.data import BatchSampler, DataLoader, SequentialSampler, Subset, SubsetRandomSampler, TensorDataset

import sgmcmc
from sgmcmc.chains import ChainGenerators
from sgmcmc.data import chain_data

ROWS = torch.arange(20, dtype=torch.float64).reshape(10, 2)
LABELS = torch.arange(10, dtype=torch.float64)


def _generators(num_chains=3):
    return ChainGenerators(sgmcmc.chain_seeds(0, num_chains), torch.device("cpu"))


def test_minibatches_iterate_like_an_unshuffled_loader():
    batches = list(sgmcmc.Minibatches(ROWS, LABELS, batch_size=4))
    assert len(batches) == 2  # the incomplete last batch is dropped
    np.testing.assert_array_equal(batches[1][1], [4, 5, 6, 7])
    assert isinstance(next(iter(sgmcmc.Minibatches(ROWS, batch_size=5))), torch.Tensor)


def test_each_chain_sees_every_row_once_per_epoch_in_its_own_order():
    stream = chain_data(sgmcmc.Minibatches(ROWS, LABELS, batch_size=5))
    generators = _generators()
    epochs = [[stream.next(generators) for _ in range(2)] for _ in range(2)]
    labels, next_labels = (torch.cat([batch[1] for batch in epoch], dim=1) for epoch in epochs)  # (chains, 10)
    assert epochs[0][0][0].shape == (3, 5, 2)
    for chain in range(3):
        assert sorted(labels[chain].tolist()) == list(range(10))
        assert sorted(next_labels[chain].tolist()) == list(range(10))
        assert not torch.equal(labels[chain], next_labels[chain])  # reshuffled every epoch
        np.testing.assert_array_equal(epochs[0][0][0][chain, :, 0], 2 * epochs[0][0][1][chain])  # rows stay paired
    assert not torch.equal(labels[0], labels[1]) and not torch.equal(labels[1], labels[2])


def test_a_checkpoint_keeps_the_generators_of_the_epochs_start_not_its_shuffles(tmp_path):
    """Before, it kept every chain's shuffle of the rows (num_chains × rows int64: here 8 × 50 000 × 8 bytes
    = 3.2 MB) in each checkpoint, and the whole data set (400 kB here) as the storage of the one batch it keeps
    to check the model. It now holds the generators' states (2 × 8 × 5 kB), the trace so far (650 × 8 draws of
    θ, lp, step size and a flag: 130 kB) and that batch alone (800 bytes)."""
    features = torch.randn(50_000, 1, dtype=torch.float64)

    def log_posterior(theta, batch):
        return -0.5 * theta.square().sum() - 0.5 * 50_000 * (batch[:, 0] - theta).square().mean()

    sampler = sgmcmc.SGLD(log_posterior, step_size=1e-6)
    data = sgmcmc.Minibatches(features, batch_size=100)
    options = dict(num_chains=8, num_steps=750, seed=1, progress=False, checkpoint_every=250)  # 500 steps an epoch
    uninterrupted = sampler.sample(torch.zeros(()), data, **options)
    checkpoint = tmp_path / "run.pt"
    interrupted = sampler.sample(
        torch.zeros(()), data, checkpoint=checkpoint, stop_when=lambda steps: steps == 650, **options
    )
    assert interrupted.attrs["steps_done"] == 650
    assert checkpoint.stat().st_size < 300_000
    resumed = sampler.sample(torch.zeros(()), data, checkpoint=checkpoint, **options)  # mid-epoch, the second
    np.testing.assert_array_equal(resumed.posterior["theta"], uninterrupted.posterior["theta"])
    assert ChainGenerators([0, 1], torch.device("cpu")).permutations(10).dtype == torch.int32


def test_a_stream_saves_its_position_only_if_it_kept_the_epochs_start():
    """Before, get_state() without keep_epoch_starts() saved a position that set_state() could not restore."""
    stream = chain_data(sgmcmc.Minibatches(ROWS, LABELS, batch_size=5)).to(torch.device("cpu"))
    stream.next(_generators())
    with pytest.raises(RuntimeError, match=r"needs keep_epoch_starts\(\) called before the first next\(\)"):
        stream.get_state()
    kept = chain_data(sgmcmc.Minibatches(ROWS, LABELS, batch_size=5))
    kept.keep_epoch_starts()
    kept = kept.to(torch.device("cpu"))  # the note goes with it
    generators = _generators()
    kept.next(generators)
    restored = chain_data(sgmcmc.Minibatches(ROWS, LABELS, batch_size=5))
    restored.set_state(kept.get_state())
    for first, second in zip(kept.next(generators), restored.next(generators), strict=True):
        torch.testing.assert_close(first, second, rtol=0, atol=0)


def test_a_run_without_checkpoints_does_not_read_the_generators_at_each_epoch(monkeypatch):
    """Reading K generator states took 0.7 ms an epoch at K = 1024 (a review measured 30% on one-batch epochs)."""
    reads = []
    monkeypatch.setattr(ChainGenerators, "get_states", lambda generators: reads.append(1) or [])
    sgmcmc.SGLD(lambda theta, batch: -(theta - batch).square().sum(), step_size=1e-3).sample(
        torch.zeros(()), sgmcmc.Minibatches(torch.randn(10), batch_size=5), num_chains=2, num_steps=20, progress=False
    )
    assert reads == []


def test_dataloader_over_tensor_dataset_is_read_as_minibatches():
    loader = DataLoader(TensorDataset(ROWS, LABELS), batch_size=5, shuffle=True)
    via_loader, via_minibatches = chain_data(loader), chain_data(sgmcmc.Minibatches(ROWS, LABELS, batch_size=5))
    first, second = via_loader.next(_generators()), via_minibatches.next(_generators())
    assert isinstance(first, list) and len(first) == 2  # the structure a DataLoader yields
    for from_loader, from_minibatches in zip(first, second, strict=True):
        np.testing.assert_array_equal(from_loader, from_minibatches)


def test_dataloader_over_a_subset_of_rows_samples_only_those_rows():
    """A train split by SubsetRandomSampler or random_split's Subset: the other rows are never drawn."""
    train = [7, 1, 8, 3, 0, 5]
    loaders = [
        DataLoader(TensorDataset(ROWS, LABELS), batch_size=3, sampler=torch.utils.data.SubsetRandomSampler(train)),
        DataLoader(torch.utils.data.Subset(TensorDataset(ROWS, LABELS), train), batch_size=3, shuffle=True),
        DataLoader(  # a subset sampler over a Subset picks from the Subset's rows
            torch.utils.data.Subset(TensorDataset(ROWS, LABELS), [*train, 2, 4]),
            batch_size=3,
            sampler=torch.utils.data.SubsetRandomSampler(range(6)),
        ),
    ]
    for loader in loaders:
        stream = chain_data(loader)
        generators = _generators()
        labels = torch.cat([stream.next(generators)[1] for _ in range(2)], dim=1)  # one epoch, (chains, 6)
        for chain in range(3):
            assert sorted(labels[chain].tolist()) == sorted(train)


def test_dataloader_whose_sampler_picks_other_rows_is_read_as_it_yields():
    """A SequentialSampler or RandomSampler over another source of 6 rows reads rows 0-5 of the 10 (before,
    the sequential one was sampled over all 10), and a RandomSampler with replacement repeats rows."""
    for sampler in (torch.utils.data.SequentialSampler(range(6)), torch.utils.data.RandomSampler(range(6))):
        stream = chain_data(DataLoader(TensorDataset(ROWS, LABELS), batch_size=3, sampler=sampler))
        assert sorted(stream.full_batch()[1].tolist()) == list(range(6)), type(sampler).__name__
    with_replacement = torch.utils.data.RandomSampler(range(10), replacement=True, num_samples=10)
    stream = chain_data(DataLoader(TensorDataset(ROWS, LABELS), batch_size=5, sampler=with_replacement))
    assert len(set(stream.full_batch()[1].tolist())) < 10


def test_dataloader_that_changes_its_rows_is_read_as_it_yields():
    """A TensorDataset subclass's __getitem__ or a weighted sampler decides what the loader yields."""

    class Shifted(TensorDataset):
        def __getitem__(self, index):
            (row,) = super().__getitem__(index)
            return (row - 100,)

    batch = chain_data(DataLoader(Shifted(LABELS), batch_size=5)).next(_generators())
    assert batch[0].max() < 0
    weighted = torch.utils.data.WeightedRandomSampler([1.0] + [0.0] * 9, num_samples=10)
    batch = chain_data(DataLoader(TensorDataset(LABELS), batch_size=5, sampler=weighted)).next(_generators())
    assert (batch[0] == 0).all()  # every row the sampler picks is row 0


def test_dataloader_with_its_own_collate_fn_yields_what_the_loader_yields():
    loader = DataLoader(
        TensorDataset(ROWS, LABELS),
        batch_size=5,
        collate_fn=lambda rows: {"x": torch.stack([x for x, _ in rows]), "y": torch.stack([y for _, y in rows])},
    )
    batch = chain_data(loader).next(_generators())
    assert set(batch) == {"x", "y"} and batch["x"].shape == (3, 5, 2)
    np.testing.assert_array_equal(batch["x"][..., 0], 2 * batch["y"])


def test_list_of_batches_each_chain_its_own_order():
    batches = [(ROWS[i : i + 2], LABELS[i : i + 2]) for i in range(0, 10, 2)]
    stream = chain_data(batches)
    generators = _generators()
    epochs = [torch.stack([stream.next(generators)[1][:, 0] for _ in range(5)], dim=1) for _ in range(2)]
    visited, next_visited = epochs  # (chains, 5) each: the first label of each batch
    for chain in range(3):
        assert sorted(visited[chain].tolist()) == [0, 2, 4, 6, 8]
        assert sorted(next_visited[chain].tolist()) == [0, 2, 4, 6, 8]
        assert not torch.equal(visited[chain], next_visited[chain])  # reshuffled every epoch
    assert not torch.equal(visited[0], visited[1]) and not torch.equal(visited[1], visited[2])
    full_rows, full_labels = stream.full_batch()
    np.testing.assert_array_equal(full_labels, LABELS)
    np.testing.assert_array_equal(full_rows, ROWS)


def test_dataloader_over_other_datasets_is_read_once_as_batches():
    class Squares(torch.utils.data.Dataset):
        def __len__(self):
            return 6

        def __getitem__(self, index):
            return {"x": torch.tensor(float(index)), "y": torch.tensor(float(index**2))}

    stream = chain_data(DataLoader(Squares(), batch_size=3))
    batch = stream.next(_generators())
    assert batch["x"].shape == (3, 3)
    np.testing.assert_array_equal(batch["y"], batch["x"] ** 2)


def test_a_loader_read_once_gives_the_same_batches_whatever_the_global_seed_and_leaves_that_rng_alone(monkeypatch):
    """A shuffling DataLoader over a dataset other than a TensorDataset shuffles with the global RNG:
    read as it was, two runs with the same seed (or a run and its resumption) got other batches.
    The CPU generator's state is restored, and the GPUs' generators are not reseeded."""
    reseeded = []
    monkeypatch.setattr(torch.cuda, "manual_seed_all", reseeded.append)

    class Rows(torch.utils.data.Dataset):
        def __len__(self):
            return 10

        def __getitem__(self, index):
            return ROWS[index]

    loader = DataLoader(Rows(), batch_size=2, shuffle=True)
    batches = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)
        before = torch.random.get_rng_state()
        batches.append(chain_data(loader).full_batch())
        assert torch.equal(torch.random.get_rng_state(), before)
    assert torch.equal(batches[0], batches[1])
    assert not torch.equal(batches[0], ROWS)  # shuffled, by the fixed seed
    assert reseeded == [1, 2]  # the test's own torch.manual_seed calls only


def test_data_errors():
    with pytest.raises(ValueError, match="no batches"):
        chain_data([])
    with pytest.raises(ValueError, match="0 rows"):
        sgmcmc.Minibatches(torch.zeros(0, 2), batch_size=1)
    with pytest.raises(ValueError, match="batch_size 11 is larger than the 10 rows"):
        sgmcmc.Minibatches(ROWS, batch_size=11)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        sgmcmc.Minibatches(ROWS, batch_size=0)
    with pytest.raises(ValueError, match="share their first dim"):
        sgmcmc.Minibatches(ROWS, LABELS[:5], batch_size=2)
    with pytest.raises(ValueError, match="data tensor 1 is 0-dim; rows must be along dim 0"):
        sgmcmc.Minibatches(ROWS, torch.tensor(1.0), batch_size=2)
    # stacking would promote batch 0 to float64 silently
    with pytest.raises(ValueError, match=r"batch 1 has a tensor of shape \(5, 2\) \(torch.float64\) where batch 0"):
        chain_data([ROWS[:5].float(), ROWS[5:]])
    # before, the advice was drop_last=True, which leaves the same rows out of every epoch of such batches
    with pytest.raises(ValueError, match="would leave the same rows out of every epoch.*sgmcmc.Minibatches"):
        chain_data([ROWS[:4], ROWS[4:8], ROWS[8:]])  # batches of 4, 4, 2 rows
    # before, torch's own "Could not run 'aten::ne.Scalar' ... 'SparseCPU' backend", naming no data
    sparse = ROWS.to_sparse()
    with pytest.raises(TypeError, match=r"data tensor 0 is a torch.sparse_coo tensor.*to_dense\(\)"):
        sgmcmc.Minibatches(sparse, LABELS, batch_size=2)
    with pytest.raises(TypeError, match=r"batch 0 is a torch.sparse_coo tensor"):
        chain_data([ROWS[:5].to_sparse(), ROWS[5:].to_sparse()])
    with pytest.raises(TypeError, match=r"data tensor 0 is a torch.sparse_coo tensor"):
        chain_data(DataLoader(TensorDataset(sparse, LABELS), batch_size=2))
    with pytest.raises(TypeError, match=r"data tensor 0 of the DataLoader's TensorDataset is a torch.sparse_coo"):
        chain_data(DataLoader(Subset(TensorDataset(sparse, LABELS), [0, 2, 4]), batch_size=2))
    with pytest.raises(TypeError, match="one-shot iterator"):
        chain_data(iter([ROWS]))
    with pytest.raises(TypeError, match="bare tensor"):
        chain_data(ROWS)
    with pytest.raises(TypeError, match=r"tuple of tensors.*sgmcmc.Minibatches\(\*data, batch_size=...\)"):
        chain_data((ROWS, LABELS))  # not two pre-made batches
    with pytest.raises(TypeError, match=r"dict of tensors.*sgmcmc.Minibatches\(\*data.values\(\), batch_size=...\)"):
        chain_data({"x": ROWS, "y": LABELS})  # not its keys
    with pytest.raises(TypeError, match="must hold tensors"):
        chain_data([("a",), ("b",)])
    with pytest.raises(ValueError, match="batch 0 holds a 0-dim tensor; batches need a leading batch dim"):
        chain_data([(ROWS[i], LABELS[i]) for i in range(10)])
    with_nan = ROWS.clone()
    with_nan[3, 1] = float("nan")
    with pytest.raises(ValueError, match=r"data tensor 0 holds non-finite values \(NaN or inf\), first in row 3"):
        sgmcmc.Minibatches(with_nan, LABELS, batch_size=2)
    with_inf = LABELS.clone()
    with_inf[5] = float("inf")
    with pytest.raises(ValueError, match="batch 2 holds non-finite values .*, first in row 1"):
        chain_data([(ROWS[i : i + 2], with_inf[i : i + 2]) for i in range(0, 10, 2)])


def test_complex_data_with_nan_is_refused_as_real_data_is():
    """Before, only floating-point tensors were checked: a complex NaN went on into every gradient."""
    complex_rows = ROWS.to(torch.complex64)
    complex_rows[4, 0] = complex(0.0, float("nan"))
    with pytest.raises(ValueError, match=r"data tensor 0 holds non-finite values \(NaN or inf\), first in row 4"):
        sgmcmc.Minibatches(complex_rows, LABELS, batch_size=2)
    sgmcmc.Minibatches(ROWS.to(torch.complex64), LABELS, batch_size=2)  # finite complex data is accepted


def test_a_non_finite_row_of_a_subset_loader_is_named_by_its_dataset_row():
    """Before, the row was counted among the rows the loader selects (2 here), which the user cannot look up."""
    with_nan = ROWS.clone()
    with_nan[7, 0] = float("nan")
    dataset = TensorDataset(with_nan, LABELS)
    for loader in (
        DataLoader(Subset(dataset, [1, 4, 7, 9]), batch_size=2),
        DataLoader(dataset, batch_size=2, sampler=SubsetRandomSampler([9, 1, 7])),
    ):
        with pytest.raises(ValueError, match=r"TensorDataset holds non-finite values \(NaN or inf\), first in row 7"):
            chain_data(loader)


def test_empty_loader_is_reported_by_sample():
    with pytest.raises(ValueError, match="data is empty"):
        sgmcmc.SGLD(lambda theta, batch: -theta.square().sum(), step_size=0.1).sample(
            torch.zeros(1),
            data=DataLoader(TensorDataset(torch.zeros(0, 1)), batch_size=2, drop_last=True),
            num_steps=2,
            progress=False,
        )


def test_premade_batches_without_rows_are_refused():
    """Minibatches refuses 0 rows; a list of empty batches was sampled, each step on no data."""
    with pytest.raises(ValueError, match="batch 0 has no rows"):
        chain_data([(ROWS[:0], LABELS[:0])] * 3)


def test_a_loader_that_yields_single_rows_of_a_tensor_dataset_is_refused():
    """With batch_size=None a loader yields rows; a row of features alone, shape (d,), was read as a batch of d
    examples, and the run sampled another posterior without a word (sds 0.13 against 0.07, in a review)."""
    for dataset in (TensorDataset(ROWS), Subset(TensorDataset(ROWS), range(10))):
        with pytest.raises(ValueError, match="DataLoader with batch_size=None, which yields its TensorDataset's rows"):
            chain_data(DataLoader(dataset, batch_size=None))


def test_a_loader_batched_by_its_batch_sampler_is_read_as_its_batches():
    """A loader given batch_sampler= has batch_size None (DataLoader forbids both) yet yields whole batches;
    it was refused as one that yields single rows."""
    dataset = TensorDataset(ROWS, LABELS)
    loader = DataLoader(dataset, batch_sampler=BatchSampler(SequentialSampler(dataset), 5, drop_last=True))
    stream = chain_data(loader)
    assert not stream.rows and stream.num_units == 2
    batch = stream.next(_generators(num_chains=1))
    assert batch[0].shape == (1, 5, 2)
    assert sorted(batch[1][0].tolist()) in ([0, 1, 2, 3, 4], [5, 6, 7, 8, 9])


def test_a_batch_of_every_row_is_allowed():
    """batch_size = N, full-batch minibatches (found by mutation testing: refusing it went unseen)."""
    assert sgmcmc.Minibatches(ROWS, LABELS, batch_size=len(ROWS)).batch_size == len(ROWS)
