"""Figures of a run. Each plot_* function takes plain arrays and returns a matplotlib Figure;
save_png writes one to a file, png_bytes gives its PNG bytes (for the HTML report). One style
for all: readable sizes and Paul Tol's colour-blind-safe palette."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from sklearn.manifold import TSNE  # noqa: E402

from gmvae.storage import atomic_write  # noqa: E402

# Paul Tol's "muted" qualitative scheme (distinguishable with common colour-vision
# deficiencies), then his "light" scheme for up to 20 categories.
PALETTE = [
    "#332288", "#88CCEE", "#44AA99", "#117733", "#999933",
    "#DDCC77", "#CC6677", "#882255", "#AA4499", "#777777",
    "#77AADD", "#EE8866", "#EEDD88", "#FFAABB", "#99DDFF",
    "#44BB99", "#BBCC33", "#AAAA00", "#DDDDDD", "#000000",
]  # fmt: skip
plt.rcParams.update(
    {
        "figure.dpi": 110,
        "font.size": 10,
        "axes.titlesize": 11,
        "axes.prop_cycle": plt.cycler(color=PALETTE[:10]),
        "axes.spines.top": False,
        "axes.spines.right": False,
    }
)


def png_bytes(fig: plt.Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def save_png(fig: plt.Figure, path: Path) -> None:
    atomic_write(path, png_bytes(fig))


def category_colours(n: int) -> matplotlib.colors.ListedColormap:
    """A colour per category 0..n-1 (a continuous map past 20)."""
    if n <= len(PALETTE):
        return matplotlib.colors.ListedColormap(PALETTE[:n])
    return plt.get_cmap("viridis", n)


def image_grid(images: np.ndarray, image_shape: tuple[int, ...], pad: int = 1) -> np.ndarray:
    """Tile images (rows, cols, prod(image_shape)) into one picture: (rows*(H+pad),
    cols*(W+pad)) for grey images, with a last axis of 3 for colour ((3, H, W) images); other
    channel counts are shown as their mean."""
    rows, cols = images.shape[:2]
    c, h, w = (1, *image_shape) if len(image_shape) == 2 else image_shape
    tiles = np.clip(images.reshape(rows, cols, c, h, w), 0, 1).transpose(0, 1, 3, 4, 2)
    if c not in (1, 3):
        tiles = tiles.mean(-1, keepdims=True)
    depth = tiles.shape[-1]
    grid = np.ones((rows * (h + pad) + pad, cols * (w + pad) + pad, depth), dtype=np.float32)
    for r in range(rows):
        for col in range(cols):
            top, left = pad + r * (h + pad), pad + col * (w + pad)
            grid[top : top + h, left : left + w] = tiles[r, col]
    return grid[..., 0] if depth == 1 else grid


def plot_scores(history: list[dict]) -> plt.Figure:
    """ACC, NMI and ARI on the monitoring split over epochs."""
    epochs = [row["epoch"] for row in history]
    fig, ax = plt.subplots(figsize=(6, 4))
    for key in ("acc", "nmi", "ari"):
        ax.plot(epochs, [row[key] for row in history], marker="o", markersize=3, label=key.upper())
    ax.set(xlabel="epoch", ylabel="score (%)", title="Clustering scores on the monitoring split")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


# metrics.csv's columns that plot_losses draws, in this order, with their titles.
LOSS_PANELS = {
    "loss": "optimised total",
    "neg_elbo": "negative ELBO",
    "rec": "reconstruction -log p(x|z)",
    "gauss": "log q(z|x,y) - log p(z|y)",
    "cat": "KL(q(y|x) || uniform)",
    "consistency": "consistency",
    "neighbour": "neighbour disagreement",
    "adversarial": "adversarial change",
    "confidence": "entropy of q(y|x)",
    "labelled": "labelled cross-entropy",
    "balance": "balance shortfall",
    "tau": "Gumbel temperature",
}
PANELS_PER_ROW = 6


def plot_losses(history: list[dict]) -> plt.Figure:
    """The optimised total, each of its terms that the run had, and the Gumbel temperature over
    epochs, one panel each (a term missing from some epochs is a gap there)."""
    epochs = [row["epoch"] for row in history]
    panels = [(k, title) for k, title in LOSS_PANELS.items() if any(k in row for row in history)]
    n_rows = -(-len(panels) // PANELS_PER_ROW)
    n_cols = min(len(panels), PANELS_PER_ROW)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(3.2 * n_cols, 3 * n_rows), squeeze=False)
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    for ax, (key, title) in zip(axes.flat, panels, strict=False):
        values = [row.get(key, np.nan) for row in history]
        ax.plot(epochs, values, marker="o", markersize=2)
        ax.set(xlabel="epoch", title=title)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def embed_2d(latent: np.ndarray, method: str = "tsne", seed: int = 0) -> np.ndarray:
    """(N, Z) -> (N, 2) with t-SNE, or UMAP (`method="umap"`, needs umap-learn)."""
    if method == "umap":
        import umap

        return umap.UMAP(random_state=seed, n_jobs=1).fit_transform(latent)
    perplexity = min(30.0, (len(latent) - 1) / 3)
    return TSNE(2, init="pca", perplexity=perplexity, random_state=seed).fit_transform(latent)


def plot_latent_map(
    xy: np.ndarray, labels: np.ndarray | None, clusters: np.ndarray, method: str = "t-SNE"
) -> plt.Figure:
    """A 2-D map of latent means, coloured by true label (left, when known) and by cluster.

    Pass clusters renumbered so that the cluster matched to label c is c: colours then agree."""
    panels = [(clusters, "cluster")]
    if labels is not None:
        panels.insert(0, (labels, "true label"))
    n_colours = int(max(colour.max() for colour, _ in panels)) + 1
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 5), squeeze=False)
    for ax, (colour, title) in zip(axes[0], panels, strict=True):
        points = ax.scatter(
            xy[:, 0],
            xy[:, 1],
            c=colour,
            cmap=category_colours(n_colours),
            s=4,
            vmin=-0.5,
            vmax=n_colours - 0.5,
        )
        ax.set(title=f"{method} of E[z|x], coloured by {title}", xticks=[], yticks=[])
        fig.colorbar(points, ax=ax, ticks=range(n_colours), fraction=0.04)
    return fig


def plot_reconstructions(
    originals: np.ndarray, reconstructions: np.ndarray, image_shape: tuple[int, ...]
) -> plt.Figure:
    """Originals (n, H*W) on the top row, their reconstructions below."""
    grid = image_grid(np.stack([originals, reconstructions]), image_shape)
    fig, ax = plt.subplots(figsize=(len(originals) * 0.6, 1.6))
    ax.imshow(grid, cmap="gray", vmin=0, vmax=1)
    h = image_shape[-2]
    ax.set(xticks=[], yticks=[0.5 * h, 1.5 * h])
    ax.set_yticklabels(["original", "reconstruction"])
    ax.set_title("Reconstructions")
    return fig


def plot_generated(
    images: np.ndarray, row_labels: list[str], image_shape: tuple[int, ...]
) -> plt.Figure:
    """Images generated per cluster, (rows, n, H*W): a row per cluster."""
    rows, cols = images.shape[:2]
    grid = image_grid(images, image_shape)
    fig, ax = plt.subplots(figsize=(cols * 0.5 + 1.5, rows * 0.5 + 0.5))
    ax.imshow(grid, cmap="gray", vmin=0, vmax=1)
    ax.set(xticks=[], yticks=[(r + 0.5) * (image_shape[-2] + 1) for r in range(rows)])
    ax.set_yticklabels(row_labels)
    ax.set_title("Generated from p(x|z), z ~ p(z|y) per cluster")
    return fig


def plot_contingency(table: np.ndarray, row_order: list[int]) -> plt.Figure:
    """Counts of clusters (rows, in `row_order`) x true labels (columns)."""
    ordered = table[row_order]
    fig, ax = plt.subplots(figsize=(0.55 * table.shape[1] + 2, 0.45 * len(row_order) + 1.5))
    ax.imshow(ordered, cmap="Blues")
    for (r, c), count in np.ndenumerate(ordered):
        colour = "white" if count > ordered.max() / 2 else "black"
        ax.text(c, r, str(count), ha="center", va="center", fontsize=7, color=colour)
    ax.set(
        xlabel="true label",
        ylabel="cluster",
        xticks=range(table.shape[1]),
        yticks=range(len(row_order)),
        title="Clusters x labels (test set)",
    )
    ax.set_yticklabels([str(k) for k in row_order])
    return fig


def plot_select_k(rows: list[dict]) -> plt.Figure:
    """Held-out ELBO per K (left) and, when labels exist, ACC/NMI/ARI per K (right)."""
    ks = [row["k"] for row in rows]
    labelled = "acc" in rows[0]
    fig, axes = plt.subplots(
        1, 2 if labelled else 1, figsize=(11 if labelled else 5.5, 4), squeeze=False
    )
    axes[0][0].plot(ks, [row["heldout_elbo"] for row in rows], marker="o")
    axes[0][0].set(xlabel="K (clusters)", ylabel="nats per example", title="Held-out ELBO")
    if labelled:
        for key in ("acc", "nmi", "ari"):
            axes[0][1].plot(ks, [row[key] for row in rows], marker="o", label=key.upper())
        axes[0][1].set(xlabel="K (clusters)", ylabel="score (%)", title="Scores against labels")
        axes[0][1].legend()
    for ax in axes[0]:
        ax.grid(alpha=0.3)
    return fig


def plot_cluster_sizes(
    sizes: np.ndarray,
    confidence: np.ndarray,
    names: list[str],
    expected: np.ndarray | None = None,
) -> plt.Figure:
    """Examples per cluster (bars) and their mean max q(y|x) (points, right axis); `expected`
    (K,): the sizes the learned proportions p(y) give, drawn as a tick on each bar."""
    fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(sizes) + 2), 3.6))
    positions = np.arange(len(sizes))
    ax.bar(positions, sizes, color=PALETTE[1])
    if expected is not None:
        ax.scatter(positions, expected, marker="_", s=400, color="black", label="learned p(y)")
        ax.legend(loc="upper left", frameon=False)
    ax.set(ylabel="test examples", xticks=positions, title="Cluster sizes and confidence")
    ax.set_xticklabels(names, rotation=45, ha="right")
    right = ax.twinx()
    right.plot(positions, confidence, "o", color=PALETTE[6])
    right.set(ylabel="mean max q(y|x)", ylim=(0, 1.05))
    right.spines["right"].set_visible(True)
    fig.tight_layout()
    return fig
