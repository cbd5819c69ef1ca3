"""The Gaussian mixtures a table could start from, each with the label-free scores a rule could
choose by and the labelled scores it would get. Labels only score.

    python -m benchmarks.start_mixtures --out benchmarks/results/suite/start-mixtures [--seeds 0-4]

Until commit 6429c06 the default GMVAE started a table from the most likely of 10 seeded fits
of a K-component mixture on the standardised rows, full or diagonal covariances by BIC. Here
each of four candidates is fitted per data set and seed (10 seeded fits, the most likely kept):

- space "standardised": on the standardised rows (the previous default's start is one of these two);
- space "whitened": on the standardised rows rotated to their principal axes and scaled to unit
  variance, so the fits start (k-means++) from another metric; a full-covariance mixture is
  the same family of densities in either space, a diagonal one is not;

times covariance "full" or "diag". Scores, all in the standardised space (a whitened fit's
log-likelihood gains log |det W| per row, W the whitening map): BIC, ICL (BIC plus twice the
entropy of the assignments, Biernacki et al. 2000: it charges overlapping components), the mean
log-likelihood per row on held-out rows (5 folds, each fitted on the other four), and ACC / NMI /
ARI of the fit's partition of all rows. Writes rows.csv, summary.md (per data set, the median
ACC / NMI over seeds of the candidate each rule chooses: RULES) and run.json (command, commit,
machine). The default's start now (mixtures.fit_reproduced_mixture) is scored by the suite.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import numpy as np
from sklearn.mixture import GaussianMixture
from sklearn.model_selection import KFold
from sklearn.preprocessing import StandardScaler

from benchmarks.clustering import write_csv
from benchmarks.provenance import benchmark_record, command_line
from benchmarks.suite import DATASETS, NEEDS, whiten
from gmvae.run.metrics import clustering_scores
from gmvae.run.settings import parse_int_range

# As the default's fits were before commit 7aed8c3 (scikit-learn's EM, no quantisation floor).
REG_COVAR = 1e-4
INITS = 10
FOLDS = 5


def spaces(x: np.ndarray) -> dict[str, tuple[np.ndarray, float]]:
    """Rows x (N, F) standardised and whitened, each with the log |det| per row that takes its
    log-likelihoods to the standardised space."""
    return {"standardised": (StandardScaler().fit_transform(x), 0.0), "whitened": whiten(x)}


def fit(k: int, covariance: str, rows: np.ndarray, seed: int) -> GaussianMixture:
    """The most likely of INITS seeded fits of a k-component mixture to rows (N, F)."""
    mixture = GaussianMixture(
        k, covariance_type=covariance, reg_covar=REG_COVAR, n_init=INITS, random_state=seed
    )
    return mixture.fit(rows)


def held_out_log_likelihood(k: int, covariance: str, rows: np.ndarray, seed: int) -> float:
    """Mean log-likelihood per row (N, F) of each fold's rows under the fit to the others."""
    folds = KFold(FOLDS, shuffle=True, random_state=seed).split(rows)
    scores = [fit(k, covariance, rows[kept], seed).score(rows[out]) for kept, out in folds]
    return float(np.mean(scores))


def assignment_entropy(resp: np.ndarray) -> float:
    """-sum over rows and components of r log r for responsibilities resp (N, K): 0 when every
    row belongs to one component for certain; what ICL adds to BIC (twice) against overlap."""
    return float(-(resp * np.log(np.clip(resp, 1e-300, None))).sum())


def candidates(x: np.ndarray, y: np.ndarray, k: int, seed: int, name: str) -> list[dict]:
    """A row per (space, covariance) for the table x (N, F) with classes y (N,)."""
    rows = []
    for space, (values, log_det) in spaces(x).items():
        for covariance in ("full", "diag"):
            mixture = fit(k, covariance, values, seed)
            log_likelihood = (mixture.score(values) + log_det) * len(values)
            bic = -2 * log_likelihood + mixture._n_parameters() * np.log(len(values))
            icl = bic + 2 * assignment_entropy(mixture.predict_proba(values))
            held_out = held_out_log_likelihood(k, covariance, values, seed) + log_det
            scores = clustering_scores(y, mixture.predict(values), k)
            rows.append({
                "dataset": name, "seed": seed, "space": space, "covariance": covariance,
                "bic": bic, "icl": icl, "held_out_ll": held_out, **scores,
            })  # fmt: skip
            print(f"  {name:<14} seed {seed} {space:<12} {covariance:<4}  BIC {bic:9.1f}  "
                  f"ICL {icl:9.1f}  "
                  f"held-out {held_out:7.3f}  ACC {scores['acc']:5.1f}  NMI {scores['nmi']:5.1f}",
                  flush=True)  # fmt: skip
    return rows


# Label-free rules: the candidates (space, covariance) a rule looks at, and the score it
# minimises. "whitened full added" is the previous default with more starts of the same family
# of densities: a full-covariance fit started in the whitened space.
STANDARDISED = (("standardised", "full"), ("standardised", "diag"))
ALL = (*STANDARDISED, ("whitened", "full"), ("whitened", "diag"))
RULES = {
    "previous default (BIC, standardised)": (STANDARDISED, lambda row: row["bic"]),
    "BIC, whitened full added": ((*STANDARDISED, ("whitened", "full")), lambda row: row["bic"]),
    "BIC, all four": (ALL, lambda row: row["bic"]),
    "held-out, all four": (ALL, lambda row: -row["held_out_ll"]),
    "ICL, standardised": (STANDARDISED, lambda row: row["icl"]),
    "ICL, all four": (ALL, lambda row: row["icl"]),
}


def markdown(rows: list[dict]) -> str:
    """Per data set and rule, the median ACC / NMI over seeds of the candidate chosen, and what
    it chose on each seed."""
    lines = ["| data set | rule | ACC | NMI | chosen per seed |", "| --- | --- | --- | --- | --- |"]
    for name in dict.fromkeys(row["dataset"] for row in rows):
        seeds = dict.fromkeys(row["seed"] for row in rows if row["dataset"] == name)
        for rule, (kept, score) in RULES.items():
            chosen = [
                min((row for row in rows if row["dataset"] == name and row["seed"] == seed
                     and (row["space"], row["covariance"]) in kept), key=score)
                for seed in seeds
            ]  # fmt: skip
            acc = statistics.median(row["acc"] for row in chosen)
            nmi = statistics.median(row["nmi"] for row in chosen)
            picks = ", ".join(f"{row['space'][:5]}-{row['covariance']}" for row in chosen)
            lines.append(f"| {name} | {rule} | {acc:.1f} | {nmi:.1f} | {picks} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seeds", default="0-4")
    parser.add_argument("--datasets", default="wine,breast-cancer,iris,penguins,crabs,cars")
    args = parser.parse_args()
    names = args.datasets.split(",")
    unknown = sorted(set(names) - set(DATASETS))
    if unknown:
        raise SystemExit(f"unknown data sets {unknown}; known: {', '.join(DATASETS)}")
    try:
        data = [DATASETS[name]() for name in names]
    except ImportError as err:
        raise SystemExit(f"{err}: the suite's data sets need {NEEDS}") from None
    if any(d.x.ndim != 2 for d in data):
        raise SystemExit("start mixtures are for tables; digits is images")
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for d in data:
        for seed in parse_int_range(args.seeds, "--seeds"):
            rows += candidates(d.x.astype(np.float64), d.y, d.k, seed, d.name)
            write_csv(args.out / "rows.csv", rows)  # after every seed: nothing lost
    (args.out / "summary.md").write_text(markdown(rows))
    record = benchmark_record(command_line("benchmarks.start_mixtures"))
    (args.out / "run.json").write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
