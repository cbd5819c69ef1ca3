import torch

from gmvae.data import augment
from gmvae.model.network import GMVAENet, ModelConfig
from gmvae.train.objective import change_of_clusters


def test_identity_params_leave_images_unchanged_and_random_ones_move_them_a_little():
    x = torch.rand(4, 64)
    identity = torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]).expand(4, 2, 3)
    torch.testing.assert_close(augment.transform(x, (8, 8), identity), x, atol=1e-5, rtol=0)
    torch.manual_seed(0)
    params = augment.random_affine_params(4, torch.device("cpu"))
    moved = augment.transform(x, (8, 8), params)
    assert moved.shape == x.shape and not torch.allclose(moved, x)
    assert (params[:, :, :2].abs() <= 1 / 0.9 + 1e-6).all()  # at most 15 degrees, 10% scale


def test_consistency_term_is_zero_for_an_unmoved_copy_and_positive_otherwise():
    torch.manual_seed(0)
    config = ModelConfig(x_dim=64, image_shape=(8, 8), n_clusters=3, z_dim=2, hidden_dim=16,
                         likelihood="bernoulli")  # fmt: skip
    model = GMVAENet(config)
    x = torch.rand(5, 64)
    target = model.component_logits(x).log_softmax(-1).detach()
    same = change_of_clusters(model, target, x)
    assert same.abs().max() < 1e-6
    other = change_of_clusters(model, target, torch.rand(5, 64))
    assert (other >= 0).all() and other.sum() > 0
