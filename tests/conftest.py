import numpy as np
import pytest
from sklearn.datasets import load_digits


@pytest.fixture(scope="session")
def digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 8x8 digits as float32 (N, 64) in [0, 1] and int labels."""
    x, y = load_digits(return_X_y=True)
    return (x / 16.0).astype(np.float32), y.astype(np.int64)


@pytest.fixture(autouse=True)
def no_latent_umap_map(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run folders written by the tests skip the UMAP latent map even though umap-learn is
    installed (for the embedding start's test): a UMAP fit per run folder added 3 minutes to
    the suite. The t-SNE map, made the same way, is still drawn and checked."""
    from gmvae.run import plots

    monkeypatch.setattr(plots, "umap_installed", lambda: False)
