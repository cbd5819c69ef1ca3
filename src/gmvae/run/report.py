"""report.html: one self-contained page per run (every image embedded), built from the run
folder's files, the saved model and the run's data."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import numpy as np

from gmvae.data.datasets import Dataset
from gmvae.model import inference
from gmvae.model.network import GMVAENet
from gmvae.run import plots
from gmvae.storage import atomic_write, read_json

REPORT_FILE = "report.html"
PER_CLUSTER = 8  # real and generated images shown per cluster
STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1150px; margin: 2em auto; padding: 0 1em;
       color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 1em 0; }
td, th { border: 1px solid #ccc; padding: 0.3em 0.8em; text-align: right; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
img { max-width: 100%; display: block; margin: 0.5em 0; }
pre { background: #f7f7f7; padding: 1em; overflow-x: auto; font-size: 0.85em; }
.note { color: #666; font-size: 0.9em; }
"""
RESULT_ROWS = [  # (key in results.json's "test", label, format)
    ("accuracy", "classification accuracy (%, cluster k = class k)", "{:.2f}"),
    ("acc", "ACC (%)", "{:.2f}"),
    ("nmi", "NMI (%)", "{:.2f}"),
    ("ari", "ARI (%)", "{:.2f}"),
    ("elbo", "ELBO (nats per example)", "{:.2f}"),
    ("usage_entropy", "cluster-usage entropy (nats)", "{:.3f}"),
]


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _file_img(run: Path, name: str, alt: str) -> str:
    path = run / name
    return _img(path.read_bytes(), alt) if path.is_file() else ""


def results_table(results: dict) -> str:
    """The results as an HTML table; each value cell carries data-key for machines."""
    rows = [
        f'<tr><td>{label}</td><td data-key="{key}">{fmt.format(results["test"][key])}</td></tr>'
        for key, label, fmt in RESULT_ROWS
        if key in results["test"]
    ]
    rows.append(
        f'<tr><td>training seconds</td><td data-key="train_seconds">'
        f"{results['train_seconds']:.1f}</td></tr>"
    )
    return '<table id="results"><tr><th>test</th><th>value</th></tr>' + "".join(rows) + "</table>"


def cluster_figures(model: GMVAENet, data: Dataset, results: dict, seed: int) -> list[str]:
    """Sizes and confidence per cluster; for images, each cluster's most confident real images
    beside images generated from it, and walks through z between clusters."""
    k = model.config.n_clusters
    probs = inference.cluster_probabilities(model, data.x_test)
    clusters, confidence = probs.argmax(1), probs.max(1)
    match = {int(c): label for c, label in results.get("cluster_to_label", {}).items()}
    order = sorted(range(k), key=lambda c: (match.get(c, k), c))
    names = [f"cluster {c} → {match[c]}" if c in match else f"cluster {c}" for c in order]
    sizes = np.bincount(clusters, minlength=k)
    mean_confidence = np.array(
        [confidence[clusters == c].mean() if sizes[c] else 0.0 for c in range(k)]
    )
    expected = None
    if model.learns_proportions():  # the learned p(y), in test examples
        expected = inference.proportions(model)[order] * len(clusters)
    figure = plots.plot_cluster_sizes(sizes[order], mean_confidence[order], names, expected)
    parts = [
        "<h2>Clusters: size and confidence</h2>",
        _img(plots.png_bytes(figure), "cluster sizes"),
    ]
    if data.image_shape is None:
        return parts
    real = np.zeros((k, PER_CLUSTER, model.config.x_dim), dtype=np.float32)
    for row, c in enumerate(order):
        members = np.flatnonzero(clusters == c)
        best = members[np.argsort(-confidence[members])][:PER_CLUSTER]
        real[row, : len(best)] = np.asarray(data.x_test[np.sort(best)])
    generated = inference.sample(model, np.repeat(order, PER_CLUSTER), seed=seed)
    gap = np.ones((k, 1, model.config.x_dim), dtype=np.float32)  # a white tile between
    both = np.concatenate([real, gap, generated.reshape(k, PER_CLUSTER, -1)], axis=1)
    gallery = plots.plot_generated(both, names, data.image_shape)
    gallery.axes[0].set_title(
        f"Left: the {PER_CLUSTER} most confident test images of each cluster. "
        f"Right: {PER_CLUSTER} images generated from it"
    )
    pairs = list(zip(order[:-1], order[1:], strict=True))[:5]
    walks = inference.interpolate(model, pairs, steps=10)
    walk_names = [f"{a} → {b}" for a, b in pairs]
    walk = plots.plot_generated(walks, walk_names, data.image_shape)
    walk.axes[0].set_title("From the mean of p(z|y=a) to that of p(z|y=b), decoded")
    parts += [
        "<h2>Each cluster: real and generated</h2>",
        _img(plots.png_bytes(gallery), "most confident real images and generated images"),
        "<h2>Latent interpolation between clusters</h2>",
        _img(plots.png_bytes(walk), "latent interpolation"),
    ]
    return parts


def write_report(run: Path, model: GMVAENet, data: Dataset) -> Path:
    """Build RUN/report.html from the run folder, its model and its data."""
    config = read_json(run / "config.json")
    results = read_json(run / "results.json")
    seed = int(config.get("train", {}).get("seed", 0))
    body = [
        f"<h1>gmvae run: {html.escape(run.name)}</h1>",
        f'<p class="note">{html.escape(" ".join(config.get("command") or []))}</p>',
        "<h2>Results</h2>",
        results_table(results),
        '<p class="note">Scored on the test split (for data without one, on the data itself). '
        "Labels are used for scoring only.</p>",
        "<h2>Training</h2>",
        _file_img(run, "scores.png", "scores over epochs"),
        _file_img(run, "losses.png", "loss terms over epochs"),
        "<h2>Latent map</h2>",
        _file_img(run, "latent_umap.png", "UMAP of the latent means"),
        _file_img(run, "latent_tsne.png", "t-SNE of the latent means"),
        *cluster_figures(model, data, results, seed),
        "<h2>Reconstructions</h2>" if (run / "reconstructions.png").is_file() else "",
        _file_img(run, "reconstructions.png", "reconstructions"),
        "<h2>Clusters x labels</h2>" if (run / "contingency.png").is_file() else "",
        _file_img(run, "contingency.png", "contingency matrix"),
        "<h2>Configuration</h2>",
        f"<pre>{html.escape(json.dumps(config, indent=2))}</pre>",
    ]
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>gmvae: {html.escape(run.name)}</title><style>{STYLE}</style></head>"
        "<body>\n" + "\n".join(part for part in body if part) + "\n</body></html>\n"
    )
    atomic_write(run / REPORT_FILE, page)
    return run / REPORT_FILE
