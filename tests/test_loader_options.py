"""The training loader's settings from the recipe (workers, pinned memory, prefetch) and
`sj-distill bench data`."""
import pytest
import torch

from sj_distill import cli, config
from sj_distill.bench.data import measure
from sj_distill.engine.build import loader_options, make_loaders


def _data(**overrides):
    return config.load_recipe("digits", [f"data.{k}={v}" for k, v in overrides.items()])["data"]


def test_workers_persist_and_prefetch_from_the_recipe():
    assert loader_options(_data(workers=3, prefetch_factor=5, pin_memory="true")) == dict(
        num_workers=3, pin_memory=True, persistent_workers=True, prefetch_factor=5)


def test_no_workers_means_no_prefetch_and_pinning_follows_cuda_by_default():
    assert loader_options(_data()) == dict(num_workers=0, pin_memory=torch.cuda.is_available(),
                                           persistent_workers=False)


def test_loader_settings_out_of_range_are_one_line_before_any_data(capsys):
    assert cli.main(["bench", "data", "digits", "data.prefetch_factor=0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["sj-distill: error: data.workers must be >= 0 and data.prefetch_factor >= 1, "
                   "got 0 and 0"]


def test_bench_data_counts_the_recipes_batches_and_refuses_too_few():
    result = measure("digits", ["data.batch_size=100"], None, batches=2, warmup=1)
    assert (result["batch_size"], result["workers"]) == (100, 0)
    assert result["samples_per_s"] == pytest.approx(200 / (2 * result["ms_per_batch"] / 1000))
    with pytest.raises(ValueError, match=r"the training loader has 15 batches, fewer than "
                                         r"--warmup 10 \+ --batches 10"):
        measure("digits", ["data.batch_size=100"], None, batches=10, warmup=10)


def _epochs(overrides, length, epochs=2):
    """The training loader's batches (lists of sample indices) in each of ``epochs`` epochs,
    advanced as the training loop does (``set_epoch`` when the sampler has it)."""
    recipe = config.load_recipe("digits", overrides)
    dataset = torch.utils.data.TensorDataset(torch.arange(length))
    train, _ = make_loaders(recipe, dataset, dataset, seed=0)
    order = []
    for epoch in range(epochs):
        if hasattr(train.sampler, "set_epoch"):
            train.sampler.set_epoch(epoch)
        order.append([batch.tolist() for (batch,) in train])
    return order


def test_last_partial_batch_is_kept_as_the_public_code_but_not_a_single_sample():
    (first, _) = _epochs(["data.batch_size=4"], 10)
    assert [len(b) for b in first] == [4, 4, 2]
    assert sorted(i for b in first for i in b) == list(range(10))
    (first, _) = _epochs(["data.batch_size=4"], 9)  # 4 + 4 + 1: one sample cannot train a BN
    assert [len(b) for b in first] == [4, 4]


def test_reshuffle_false_repeats_the_first_epochs_order():
    shuffled = _epochs(["data.batch_size=4"], 12)
    fixed = _epochs(["data.batch_size=4", "data.reshuffle=false"], 12)
    assert shuffled[0] != shuffled[1]
    assert fixed[0] == fixed[1] == shuffled[0]
