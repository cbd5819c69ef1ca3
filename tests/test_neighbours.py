import numpy as np
import pytest
import torch
from sklearn.neighbors import NearestNeighbors

from gmvae.data.neighbours import nearest_neighbours
from gmvae.data.preprocessing import ScaledRows
from gmvae.errors import GMVAEError

CPU = torch.device("cpu")


def test_neighbours_are_the_exact_nearest_rows_when_pca_keeps_every_dimension():
    # 20 features < 50 components: the projection is a rotation, so distances are unchanged.
    x = np.random.default_rng(0).normal(size=(300, 20)).astype(np.float32)
    found = nearest_neighbours(torch.from_numpy(x), 4, seed=0, device=CPU).numpy()
    expected = NearestNeighbors(n_neighbors=5).fit(x).kneighbors(x)[1][:, 1:]  # minus itself
    np.testing.assert_array_equal(found, expected)


def test_no_row_is_its_own_neighbour_and_the_search_is_chunked(monkeypatch):
    monkeypatch.setattr("gmvae.data.neighbours.CHUNK", 7)  # several blocks, a short last one
    x = torch.rand(50, 10)
    found = nearest_neighbours(x, 3, seed=0, device=CPU)
    assert found.shape == (50, 3)
    assert not (found == torch.arange(50)[:, None]).any()


def test_memory_mapped_rows_give_the_same_neighbours_as_a_tensor(digits, tmp_path):
    x, _ = digits
    np.save(tmp_path / "x.npy", x)
    rows = ScaledRows(np.load(tmp_path / "x.npy", mmap_mode="r"), None)
    from_file = nearest_neighbours(rows, 5, seed=1, device=CPU)
    assert torch.equal(from_file, nearest_neighbours(torch.from_numpy(x), 5, seed=1, device=CPU))


def test_digit_images_mostly_share_a_label_with_their_neighbours(digits):
    x, y = digits
    found = nearest_neighbours(torch.from_numpy(x), 5, seed=0, device=CPU).numpy()
    assert (y[found] == y[:, None]).mean() > 0.9  # why the neighbour term helps clustering


def test_fewer_examples_than_neighbours_is_a_clear_error():
    with pytest.raises(GMVAEError, match="3 examples cannot each have 5 neighbours"):
        nearest_neighbours(torch.rand(3, 4), 5, seed=0, device=CPU)


def test_past_the_pool_size_neighbours_come_from_the_sampled_candidates(monkeypatch):
    monkeypatch.setattr("gmvae.data.neighbours.MAX_POOL", 40)
    x = torch.rand(100, 6)
    found = nearest_neighbours(x, 3, seed=0, device=CPU)
    assert found.shape == (100, 3) and len(found.unique()) <= 40
    assert not (found == torch.arange(100)[:, None]).any()
    assert torch.equal(found, nearest_neighbours(x, 3, seed=0, device=CPU))  # seeded
