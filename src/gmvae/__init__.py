"""gmvae: a Gaussian Mixture Variational Autoencoder for unsupervised clustering."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("gmvae")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

from gmvae.estimator import GMVAE  # noqa: E402  (after __version__, which it imports)

__all__ = ["GMVAE", "__version__"]
