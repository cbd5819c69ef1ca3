import numpy as np
import torch

from gmvae.data.batches import BatchSource
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
