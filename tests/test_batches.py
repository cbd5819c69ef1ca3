import math

import numpy as np
import torch
from hypothesis import given
from hypothesis import strategies as st

from gmvae.data.batches import BatchSource, batch_bounds, epoch_batches
from gmvae.data.preprocessing import ScaledRows


def test_memory_mapped_batches_come_back_in_the_order_asked(digits, tmp_path):
    x, _ = digits
    np.save(tmp_path / "x.npy", x)
    rows = ScaledRows(np.load(tmp_path / "x.npy", mmap_mode="r"), None)
    wanted = torch.tensor([9, 2, 700, 2, 0])
    cpu = torch.device("cpu")
    for source in (BatchSource(rows, cpu), BatchSource(torch.as_tensor(x), cpu)):
        assert torch.equal(source.read(wanted), torch.from_numpy(x[wanted.numpy()]))


def test_labels_give_the_labelled_rows():
    source = BatchSource(torch.rand(5, 3), torch.device("cpu"), np.array([-1, 2, -1, 0, -1]))
    assert source.labelled_rows.tolist() == [1, 3] and source.labels.dtype == torch.int64


def test_an_epoch_is_the_fewest_batches_of_sizes_within_one_of_each_other():
    assert batch_bounds(569, 256) == [0, 190, 379, 569]  # not 256 / 256 / 57
    assert batch_bounds(512, 256) == [0, 256, 512]  # a dividing batch size keeps its batches


@given(st.integers(1, 5000), st.integers(1, 600))
def test_batches_cover_every_row_once_and_none_exceeds_the_batch_size(n_rows, batch_size):
    bounds = batch_bounds(n_rows, batch_size)
    sizes = np.diff(bounds)
    assert bounds[0] == 0 and bounds[-1] == n_rows
    assert len(sizes) == math.ceil(n_rows / batch_size)
    assert sizes.max() <= batch_size and sizes.max() - sizes.min() <= 1


def test_an_epochs_batches_are_its_order_cut_at_the_bounds():
    order = torch.randperm(569)
    batches = epoch_batches(order, 256)
    assert [len(b) for b in batches] == [190, 189, 190]
    assert torch.equal(torch.cat(batches), order)
