"""Users' own data through the command line: every file format, the named datasets, select-k,
and a clear one-line error for each kind of bad input."""

import csv
import json

import numpy as np
import pytest
from PIL import Image

from gmvae.cli import main
from gmvae.data.datasets import open_dataset
from gmvae.data.files import read_data
from gmvae.data.preprocessing import ScaledRows

QUICK = ["--epochs", "1", "--hidden-dim", "32", "--z-dim", "4", "--monitor-size", "100"]


def write_csv(path, rows, header, delimiter=","):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f, delimiter=delimiter)
        writer.writerow(header)
        writer.writerows(rows)


@pytest.fixture
def wine_csv(tmp_path):
    from sklearn.datasets import load_wine

    x, y = load_wine(return_X_y=True)
    rows = [[*map(str, row), f"class_{label}"] for row, label in zip(x, y, strict=True)]
    path = tmp_path / "wine.csv"
    write_csv(path, rows, [f"f{i}" for i in range(13)] + ["kind"])
    return path


def train(argv, capsys):
    main(["train", *QUICK, *argv])
    return capsys.readouterr().out


def test_csv_with_a_label_column_trains_standardised_and_is_scored(wine_csv, tmp_path, capsys):
    out = tmp_path / "run"
    stdout = train(
        ["--data", str(wine_csv), "--label-column", "kind", "--n-clusters", "3", "--out", str(out)],
        capsys,
    )
    assert "ACC" in stdout
    results = json.loads((out / "results.json").read_text())
    assert {"acc", "nmi", "ari", "elbo"} <= set(results["test"])
    meta = json.loads((out / "model" / "config.json").read_text())
    assert meta["model"]["likelihood"] == "gaussian" and len(meta["scaling"]["offset"]) == 13
    # predict reads the same table, label column dropped, scaled by the saved scaling
    main(["predict", str(out), "--input", str(wine_csv), "--output", str(tmp_path / "p.csv")])
    assert len((tmp_path / "p.csv").read_text().splitlines()) == 179


def test_tsv_npz_and_idx_files_are_read(tmp_path):
    write_csv(tmp_path / "t.tsv", [["1", "2"], ["3", "4"]], ["a", "b"], delimiter="\t")
    assert read_data(tmp_path / "t.tsv").values.tolist() == [[1, 2], [3, 4]]
    np.savez(tmp_path / "d.npz", x=np.zeros((5, 3)), y=np.array([0, 1, 0, 1, 1]))
    raw = read_data(tmp_path / "d.npz")
    assert raw.values.shape == (5, 3) and raw.labels.tolist() == [0, 1, 0, 1, 1]


def test_npy_images_stream_from_a_memory_map_and_train(tmp_path, capsys):
    images = (np.random.default_rng(0).random((120, 8, 8)) * 255).astype(np.uint8)
    np.save(tmp_path / "img.npy", images)
    data = open_dataset(str(tmp_path / "img.npy"))
    assert isinstance(data.x_train, ScaledRows) and data.image_shape == (8, 8)
    assert data.x_train[np.array([3, 1])].shape == (2, 64)
    out = tmp_path / "run"
    train(["--data", str(tmp_path / "img.npy"), "--n-clusters", "3", "--out", str(out)], capsys)
    assert (out / "generated.png").exists() and not (out / "contingency.png").exists()


def test_parquet_tables_are_read(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    table = pa.table({"a": [1.0, 2.0, 3.0], "b": [4, 5, 6], "label": ["x", "y", "x"]})
    pq.write_table(table, tmp_path / "t.parquet")
    raw = read_data(tmp_path / "t.parquet", label_column="label")
    assert raw.values.tolist() == [[1, 4], [2, 5], [3, 6]] and raw.labels.tolist() == [0, 1, 0]


def make_images(folder, size=(8, 8), per_class=6):
    rng = np.random.default_rng(0)
    for label in ("cat", "dog"):
        (folder / label).mkdir(parents=True)
        for i in range(per_class):
            pixels = (rng.random(size[::-1]) * 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / label / f"{i}.png")


def test_image_folder_reads_subfolders_as_labels_and_trains(tmp_path, capsys):
    make_images(tmp_path / "imgs")
    raw = read_data(tmp_path / "imgs")
    assert raw.values.shape == (12, 8, 8) and raw.label_names == ["cat", "dog"]
    out = tmp_path / "run"
    train(["--data", str(tmp_path / "imgs"), "--n-clusters", "2", "--out", str(out)], capsys)
    assert "acc" in json.loads((out / "results.json").read_text())["test"]


def test_named_datasets_are_listed_and_digits_and_blobs_train(tmp_path, capsys):
    main(["datasets"])
    listing = capsys.readouterr().out
    for name in ("mnist", "fashion-mnist", "digits", "blobs"):
        assert name in listing
    train(["--data", "digits", "--out", str(tmp_path / "d")], capsys)
    train(
        [
            "--data",
            "blobs",
            "--blobs-samples",
            "300",
            "--blobs-features",
            "5",
            "--n-clusters",
            "3",
            "--out",
            str(tmp_path / "b"),
        ],
        capsys,
    )
    assert json.loads((tmp_path / "b" / "config.json").read_text())["model"]["x_dim"] == 5


def test_select_k_writes_a_table_and_plot_per_k(tmp_path, capsys):
    main(
        [
            "select-k",
            "--data",
            "digits",
            "--k",
            "2-4",
            "--epochs",
            "1",
            "--out",
            str(tmp_path / "k"),
        ]
    )
    with open(tmp_path / "k" / "select_k.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["k"]) for r in rows] == [2, 3, 4]
    assert {"heldout_elbo", "bic", "acc", "nmi", "ari"} <= set(rows[0])
    assert (tmp_path / "k" / "select_k.png").read_bytes().startswith(b"\x89PNG")
    assert "best K by held-out ELBO" in capsys.readouterr().out


def expect_error(argv, capsys, message):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in err, err
    assert err.startswith("gmvae: error:") and err.count("\n") == 1 and message in err, err


def test_each_kind_of_bad_input_is_one_line_and_exit_2(wine_csv, tmp_path, capsys):
    out = str(tmp_path / "never")
    t = ["train", *QUICK, "--out", out, "--data"]
    write_csv(tmp_path / "nan.csv", [["1", "nan"], ["2", "3"]], ["a", "b"])
    expect_error([*t, str(tmp_path / "nan.csv")], capsys, "NaN or infinite values")
    write_csv(tmp_path / "empty.csv", [], ["a", "b"])
    expect_error([*t, str(tmp_path / "empty.csv")], capsys, "no data rows")
    write_csv(tmp_path / "few.csv", [["1", "2"]] * 3, ["a", "b"])
    expect_error([*t, str(tmp_path / "few.csv")], capsys, "3 training examples for 10 clusters")
    write_csv(tmp_path / "text.csv", [["1", "2"], ["x", "3"]], ["a", "b"])
    expect_error([*t, str(tmp_path / "text.csv")], capsys, "row 2, column 'a': 'x' is not a number")
    make_images(tmp_path / "imgs")
    Image.fromarray(np.zeros((9, 8), dtype=np.uint8)).save(tmp_path / "imgs" / "dog" / "odd.png")
    expect_error([*t, str(tmp_path / "imgs")], capsys, "images differ in size")
    expect_error(
        [*t, str(wine_csv), "--label-column", "kind", "--likelihood", "bernoulli"],
        capsys,
        "bernoulli likelihood needs data in [0, 1]",
    )
    expect_error([*t, str(wine_csv), "--label-column", "nope"], capsys, "no column 'nope'")
    (tmp_path / "bad.npy").write_bytes(b"\x93NUMPY garbage")
    expect_error([*t, str(tmp_path / "bad.npy")], capsys, "cannot read")
    (tmp_path / "imgs" / "cat" / "0.png").write_bytes(b"not a png")
    expect_error([*t, str(tmp_path / "imgs")], capsys, "cannot read image")
    expect_error([*t, "no-such-thing"], capsys, "no dataset 'no-such-thing'")
    assert not (tmp_path / "never").exists()


@pytest.fixture
def wine_run(wine_csv, tmp_path, capsys):
    """A run trained on the wine table, 3 clusters."""
    out = tmp_path / "run"
    train(
        ["--data", str(wine_csv), "--label-column", "kind", "--n-clusters", "3", "--out", str(out)],
        capsys,
    )
    return out


def test_predict_refuses_another_feature_count_and_an_incompatible_model(
    wine_run, wine_csv, tmp_path, capsys
):
    out = wine_run
    write_csv(tmp_path / "narrow.csv", [["1", "2", "class_0"]] * 4, ["a", "b", "kind"])
    predict = ["predict", str(out), "--output", str(tmp_path / "p.csv"), "--input"]
    expect_error([*predict, str(tmp_path / "narrow.csv")], capsys, "the model expects 13")
    meta = json.loads((out / "model" / "config.json").read_text())
    meta["format_version"] = 0
    (out / "model" / "config.json").write_text(json.dumps(meta))
    expect_error([*predict, str(wine_csv)], capsys, "version 0")


def test_a_label_column_with_empty_cells_trains_semi_supervised_on_the_filled_ones(
    wine_csv, tmp_path, capsys
):
    rows = list(csv.reader(wine_csv.read_text().splitlines()))
    for i, row in enumerate(rows[1:]):
        if i % 10:  # one row in ten keeps its label
            row[-1] = ""
    partial = tmp_path / "partial.csv"
    write_csv(partial, rows[1:], rows[0])
    out = tmp_path / "run"
    semi = ["--data", str(partial), "--label-column", "kind", "--semi-supervised"]
    train([*semi, "--n-clusters", "3", "--out", str(out)], capsys)
    results = json.loads((out / "results.json").read_text())
    assert results["classes"] == ["class_0", "class_1", "class_2"] and results["labelled"] == 18
    assert "acc" not in results["test"]  # unlabelled rows leave nothing to score against
    labelled = list(csv.DictReader((out / "labelled.csv").read_text().splitlines()))
    assert [int(r["row"]) for r in labelled] == list(range(0, 178, 10))
    assert all(rows[1 + int(r["row"])][-1] == f"class_{r['label']}" for r in labelled)

    t = ["train", *QUICK, "--out", str(tmp_path / "never"), "--data"]
    write_csv(tmp_path / "plain.csv", [row[:-1] for row in rows[1:]], rows[0][:-1])
    expect_error([*t, str(tmp_path / "plain.csv"), "--semi-supervised"], capsys, "needs labels")
    expect_error([*t, str(partial), *semi[2:4], "--labels-per-class", "0"], capsys, "at least 1")
    expect_error([*t, *semi[1:], "--n-clusters", "2"], capsys, "label 2 is not a cluster")
    for row in rows[1:]:
        row[-1] = ""
    write_csv(tmp_path / "none.csv", rows[1:], rows[0])
    expect_error([*t, str(tmp_path / "none.csv"), *semi[2:]], capsys, "every label is -1")
    expect_error([*t, str(partial), "--label-column", "nope", "--semi-supervised"], capsys, "nope")
    assert not (tmp_path / "never").exists()


def test_an_npz_label_array_with_minus_one_trains_semi_supervised_on_the_rest(tmp_path, capsys):
    from sklearn.datasets import load_wine

    x, y = load_wine(return_X_y=True)
    partial = np.where(np.arange(len(y)) % 10 == 0, y, -1)  # one row in ten keeps its label
    np.savez(tmp_path / "wine.npz", x=x, y=partial)
    out = tmp_path / "run"
    train(["--data", str(tmp_path / "wine.npz"), "--semi-supervised", "--n-clusters", "3",
           "--out", str(out)], capsys)  # fmt: skip
    results = json.loads((out / "results.json").read_text())
    assert results["classes"] == ["0", "1", "2"] and results["labelled"] == 18
    labelled = list(csv.DictReader((out / "labelled.csv").read_text().splitlines()))
    assert [int(r["label"]) for r in labelled] == y[::10].tolist()
    # Without --semi-supervised, labels only score, and -1 is a class like any other.
    assert read_data(tmp_path / "wine.npz").label_names == ["-1", "0", "1", "2"]


def test_sixteen_bit_pngs_are_rescaled_not_clipped(tmp_path):
    deep = np.array([[0, 1000, 30000, 65535]] * 4, dtype=np.uint16)
    (tmp_path / "imgs" / "a").mkdir(parents=True)
    Image.fromarray(deep).save(tmp_path / "imgs" / "a" / "deep.png")
    Image.fromarray((deep // 257).astype(np.uint8)).save(tmp_path / "imgs" / "a" / "flat.png")
    data = open_dataset(str(tmp_path / "imgs"), None, None, (10, 2, 2), 0)
    x = data.x_train.reshape(2, 4, 4)
    np.testing.assert_allclose(x[0], deep / 65535, atol=1e-6)  # deep.png sorts first
    np.testing.assert_allclose(x[1], (deep // 257) / 255, atol=1e-6)


def test_files_that_are_not_what_their_name_says_are_named_and_never_unpickled(tmp_path, capsys):
    t = ["train", *QUICK, "--out", str(tmp_path / "never"), "--data"]
    write_csv(tmp_path / "table.npy", [["1", "2"]] * 20, ["a", "b"])
    expect_error([*t, str(tmp_path / "table.npy")], capsys, "is not an .npy file")
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}] * 20, dtype=object))
    expect_error([*t, str(tmp_path / "objects.npy")], capsys, "holds Python objects")
    np.save(tmp_path / "complex.npy", np.ones((20, 3), dtype=complex))
    expect_error([*t, str(tmp_path / "complex.npy")], capsys, "complex numbers")
    assert "allow_pickle" not in capsys.readouterr().err
    assert not (tmp_path / "never").exists()


def test_predict_refuses_bad_values_and_bad_outputs_before_writing_anything(
    wine_run, wine_csv, tmp_path, capsys
):
    out = wine_run
    rows = np.loadtxt(wine_csv, delimiter=",", skiprows=1, usecols=range(13))
    predict = ["predict", str(out), "--input"]
    huge = rows.copy()
    huge[2, 5] = 1e300
    np.save(tmp_path / "huge.npy", huge)
    target = tmp_path / "p.csv"
    expect_error([*predict, str(tmp_path / "huge.npy"), "--output", str(target)], capsys, "row 2")
    np.save(tmp_path / "complex.npy", rows.astype(complex))
    expect_error([*predict, str(tmp_path / "complex.npy"), "--output", str(target)], capsys,
                 "complex numbers")  # fmt: skip
    np.save(tmp_path / "ok.npy", rows)
    good = [*predict, str(tmp_path / "ok.npy"), "--output"]
    expect_error([*good, str(tmp_path)], capsys, "is a folder")
    expect_error([*good, "/proc/no/such/p.csv"], capsys, "not a writable folder")
    assert not target.exists()
    meta = json.loads((out / "model" / "config.json").read_text())
    meta["scaling"]["offset"] = meta["scaling"]["offset"][:5]
    meta["scaling"]["scale"] = meta["scaling"]["scale"][:5]
    (out / "model" / "config.json").write_text(json.dumps(meta))
    expect_error([*good, str(target)], capsys, "the saved scaling has 5 features")
