import platform
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
from sklearn.preprocessing import StandardScaler

from benchmarks.clustering import differences
from benchmarks.provenance import benchmark_record
from benchmarks.start_mixtures import markdown
from benchmarks.suite import whiten
from gmvae.run.settings import ExperimentConfig


def saved_config(config: ExperimentConfig) -> dict:
    """config.json's settings sections, as a run writes them."""
    return {
        "preset": config.preset,
        "data": asdict(config.data),
        "model": config.model.to_dict(),
        "objective": asdict(config.objective),
        "train": asdict(config.train),
    }


def test_a_finished_seed_counts_only_if_it_ran_the_same_settings():
    config = ExperimentConfig.from_preset("default", {"train": {"seed": 3}})
    assert differences(config, saved_config(config)) == []
    other = ExperimentConfig.from_preset(
        "default", {"train": {"seed": 3}, "objective": {"w_balance": 0.0}}
    )
    assert differences(config, saved_config(other)) == ["w_balance: 0.0 there, 0.4 here"]


def test_a_seed_saved_with_the_objective_under_train_counts_as_the_same_settings():
    config = ExperimentConfig.from_preset("default")
    older = saved_config(config)
    older["train"].update(older.pop("objective"))
    assert differences(config, older) == []


def test_a_setting_added_after_a_seed_ran_counts_as_its_default_there():
    config = ExperimentConfig.from_preset("reference")
    older = saved_config(config)
    del older["train"]["pretrain_epochs"], older["model"]["y_batch_norm"]
    assert differences(config, older) == []
    asked = ExperimentConfig.from_preset("reference", {"train": {"pretrain_epochs": 5}})
    assert differences(asked, older) == ["pretrain_epochs: 0 there, 5 here"]


def test_the_suite_scores_every_method_per_seed_and_summarises_over_seeds():
    from benchmarks import suite

    iris = suite.DATASETS["iris"]()
    methods = {"GMVAE default", "GMVAE reference", "KMeans", "GMM (full)", "Ward"}
    rows = suite.run_seed(iris, 0)
    assert methods <= {r["method"] for r in rows}
    rows += suite.run_seed(iris, 1, methods_kept={"KMeans"})  # the GMVAEs are the slow ones
    summary = suite.summarise(rows)
    kmeans = next(s for s in summary if s["method"] == "KMeans")
    accs = [r["acc"] for r in rows if r["method"] == "KMeans"]
    assert (
        kmeans["seeds"] == 2 and kmeans["acc_min"] == min(accs) and kmeans["acc_max"] == max(accs)
    )
    assert "| iris | KMeans |" in suite.markdown(summary)


def test_the_size_gap_compares_each_class_with_its_matched_cluster_not_with_the_labels_order():
    from benchmarks.suite import largest_size_gap

    labels = np.array([0] * 8 + [1] * 2)
    assert largest_size_gap(labels, 1 - labels, 2) == 0.0  # renamed clusters of the right sizes
    evened = np.array([0] * 5 + [1] * 5)  # 8 / 2 cut 5 / 5: the big class's cluster is 3 short
    assert largest_size_gap(labels, evened, 2) == pytest.approx(30.0)


def test_the_suite_takes_a_table_file_and_its_label_column_as_a_data_set(tmp_path):
    from sklearn.datasets import load_iris

    from benchmarks import suite
    from gmvae.errors import GMVAEError

    frame = load_iris(as_frame=True).frame
    frame["target"] = frame["target"].map({0: "setosa", 1: "versicolor", 2: "virginica"})
    frame.to_csv(tmp_path / "flowers.csv", index=False)
    data = suite.load(f"{tmp_path / 'flowers.csv'}:target")
    named = suite.DATASETS["iris"]()
    assert (data.name, data.k, data.x.shape) == ("flowers", 3, (150, 4))
    np.testing.assert_allclose(data.x, named.x)
    np.testing.assert_array_equal(data.y, named.y)
    kmeans = suite.run_seed(data, 0, methods_kept={"KMeans"})
    assert kmeans[0]["dataset"] == "flowers" and kmeans[0]["acc"] > 80
    with pytest.raises(GMVAEError, match="FILE:COLUMN"):
        suite.load("flowers")
    with pytest.raises(GMVAEError, match="species"):
        suite.load(f"{tmp_path / 'flowers.csv'}:species")


def test_the_unequal_draw_keeps_four_times_as_many_zeros_as_nines(tmp_path):
    import numpy as np

    from benchmarks.unequal import draw

    shares = draw(tmp_path)
    saved = np.load(tmp_path / "mnist-unequal.npz")
    counts = np.bincount(saved["y"])
    assert saved["x"].shape == (len(saved["y"]), 28, 28) and saved["x"].dtype == np.uint8
    assert np.all(np.diff(counts) < 0) and 4.0 <= counts[0] / counts[9] < 4.01  # at least 4:1
    np.testing.assert_allclose(shares, counts / counts.sum())


def test_a_drawn_mixture_has_clusters_spread_four_to_one_that_overlap_and_the_same_draw_twice():
    from sklearn.discriminant_analysis import QuadraticDiscriminantAnalysis

    from benchmarks import suite
    from gmvae.errors import GMVAEError

    data = suite.load("mixture-3-1")
    counts = np.bincount(data.y)
    assert data.x.shape == (600, 5) and data.k == 3
    assert np.all(np.diff(counts) < 0) and 3.9 < counts[0] / counts[2] < 4.1
    # Overlap: even the true model's classifier (one Gaussian per class) misplaces some rows.
    fitted = QuadraticDiscriminantAnalysis().fit(data.x, data.y)
    assert 0.8 < fitted.score(data.x, data.y) < 1.0
    np.testing.assert_array_equal(suite.load("mixture-3-1").x, data.x)
    assert not np.allclose(suite.load("mixture-3-2").x, data.x)
    with pytest.raises(GMVAEError, match="at least 2 clusters"):
        suite.load("mixture-1-0")


def test_a_seed_saved_with_its_auto_settings_resolved_counts_as_the_same_settings():
    config = ExperimentConfig.from_preset("default")
    resolved = saved_config(config)
    resolved["train"]["mixture_start"] = "inputs"
    resolved["objective"]["adversarial_radius"] = 0.05
    assert differences(config, resolved) == []


def test_own_clusters_counts_the_classes_whose_main_cluster_no_other_class_shares():
    import numpy as np

    from benchmarks.semi_supervised import own_clusters

    # clusters x classes: classes 0 and 2 both have most of their images in cluster 0
    table = np.array([[9, 0, 6], [1, 8, 0], [0, 2, 4]])
    assert own_clusters(table) == 1
    assert own_clusters(np.eye(3, dtype=int) * 5) == 3


def test_the_table_speed_summary_says_the_goal_is_missed_when_one_fit_took_over_a_minute():
    from benchmarks.table_speed import markdown

    def fit(seconds: float, method: str = "GMVAE default") -> dict:
        return {"table": "blobs-50", "rows": 10_000, "features": 50, "method": method,
                "seconds": seconds, "acc": 90.0, "nmi": 80.0}  # fmt: skip

    met = markdown([fit(40.0), fit(59.0), fit(75.0, "KMeans")], "cmd")
    assert "| blobs-50 | 10,000 x 50 | GMVAE default | 49.5 (40.0-59.0) |" in met
    assert "the goal (under 60 s) is met" in met
    assert "is not met" in markdown([fit(40.0), fit(61.0)], "cmd")


def test_run_json_names_the_cpu_model_because_rounding_differs_between_cpus():
    record = benchmark_record("python -m benchmarks.x")
    assert record["cpu_model"]
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists() and "model name" in cpuinfo.read_text():  # x86 Linux names the model
        assert record["cpu_model"] != platform.machine()


def test_whitened_rows_have_identity_covariance_and_the_log_det_of_the_map():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 3)) @ np.array([[2.0, 0.5, 0.0], [0.0, 1.0, 0.3], [0.0, 0.0, 0.2]])
    rows, log_det = whiten(x)
    np.testing.assert_allclose(np.cov(rows.T, bias=True), np.eye(3), atol=1e-8)
    standardised = StandardScaler().fit_transform(x)
    map_, *_ = np.linalg.lstsq(standardised, rows, rcond=None)
    assert log_det == pytest.approx(np.log(abs(np.linalg.det(map_))))


def test_each_start_mixture_rule_chooses_its_lowest_score_among_the_candidates_it_sees():
    def row(space, covariance, bic, icl, held_out, acc):
        scores = {"bic": bic, "icl": icl, "held_out_ll": held_out, "acc": acc, "nmi": acc}
        return {"dataset": "t", "seed": 0, "space": space, "covariance": covariance, **scores}

    rows = [
        row("standardised", "full", 10.0, 30.0, -1.0, 90.0),
        row("standardised", "diag", 20.0, 25.0, -2.0, 80.0),
        row("whitened", "full", 5.0, 6.0, -3.0, 70.0),
        row("whitened", "diag", 1.0, 40.0, -0.5, 60.0),
    ]
    chosen = {
        line.split(" | ")[1]: line.split(" | ")[2] for line in markdown(rows).splitlines()[2:]
    }
    assert chosen == {
        "previous default (BIC, standardised)": "90.0",
        "BIC, whitened full added": "70.0",
        "BIC, all four": "60.0",
        "held-out, all four": "60.0",
        "ICL, standardised": "80.0",
        "ICL, all four": "70.0",
    }
