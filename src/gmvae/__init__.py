"""gmvae: a Gaussian Mixture Variational Autoencoder for unsupervised clustering."""

from gmvae.estimator import GMVAE
from gmvae.version import __version__

__all__ = ["GMVAE", "__version__"]
