"""report.html (self-contained, rendered by headless Chromium), TensorBoard, JSON-lines and
quiet output of `gmvae train`."""

import json
import os
import re
import shutil
import subprocess

import pytest

from gmvae.cli import main

QUICK = [
    "train", "--train-subset", "400", "--test-subset", "300", "--monitor-size", "300",
    "--epochs", "2", "--hidden-dim", "64", "--z-dim", "8",
]  # fmt: skip
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Runs in the page once loaded: each image's natural width and the results table's cells.
PROBE = """<script>
window.addEventListener("load", () => {
  const images = [...document.images].map(i => i.naturalWidth);
  const cells = {};
  document.querySelectorAll("#results td[data-key]")
    .forEach(c => cells[c.dataset.key] = c.textContent);
  const out = document.createElement("pre");
  out.id = "probe";
  out.textContent = JSON.stringify({images, cells});
  document.body.appendChild(out);
});
</script>"""


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "run"
    main([*QUICK, "--tensorboard", "--out", str(out)])
    return out


def test_train_writes_a_self_contained_report_with_every_section(run):
    page = (run / "report.html").read_text()
    sources = re.findall(r'<img[^>]* src="([^"]+)"', page)
    assert len(sources) >= 8 and all(s.startswith("data:image/png;base64,") for s in sources)
    for heading in ("Results", "Training", "Latent map", "Clusters: size and confidence",
                    "Each cluster: real and generated", "Latent interpolation between clusters",
                    "Reconstructions", "Clusters x labels", "Configuration"):  # fmt: skip
        assert f"<h2>{heading}</h2>" in page, heading


def test_the_report_command_rewrites_the_same_report(run, capsys):
    before = (run / "report.html").read_text()
    (run / "report.html").unlink()
    main(["report", str(run)])
    assert (run / "report.html").read_text() == before


@pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("CI"),
    reason="Chromium is not installed (.ci/run installs it; under CI its absence fails)",
)
def test_report_renders_in_headless_chromium_with_every_image_and_the_true_results(run, tmp_path):
    probed = tmp_path / "probed.html"
    probed.write_text((run / "report.html").read_text().replace("</body>", PROBE + "</body>"))
    command = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}",
        "--virtual-time-budget=10000", "--dump-dom", probed.as_uri(),
    ]  # fmt: skip
    dom = subprocess.run(command, capture_output=True, text=True, timeout=120).stdout
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S)
    assert found, dom[-2000:]
    probe = json.loads(found.group(1).replace("&quot;", '"'))
    assert len(probe["images"]) >= 8 and all(width > 0 for width in probe["images"])
    results = json.loads((run / "results.json").read_text())
    for key in ("acc", "nmi", "ari", "elbo"):
        assert float(probe["cells"][key]) == pytest.approx(results["test"][key], abs=0.006)


def test_tensorboard_events_are_written_on_request(run):
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))


def test_json_lines_and_quiet_output(tmp_path, capsys):
    main([*QUICK, "--log-format", "json", "--out", str(tmp_path / "j")])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["epoch"] for line in lines[:2]] == [1, 2] and "loss" in lines[0]
    assert lines[2]["results"]["test"]["acc"] > 0
    main([*QUICK, "--quiet", "--out", str(tmp_path / "q")])
    assert capsys.readouterr().out == ""


def test_learned_proportions_are_in_the_results_and_drawn_on_the_size_figure(tmp_path):
    import numpy as np

    from gmvae.run import plots

    out = tmp_path / "p"
    main([*QUICK, "--quiet", "--proportions", "learned", "--out", str(out)])
    proportions = json.loads((out / "results.json").read_text())["proportions"]
    assert len(proportions) == 10 and abs(sum(proportions) - 1) < 1e-5
    assert len(set(round(p, 6) for p in proportions)) > 1  # learned, no longer all 0.1
    sizes, confidence = np.array([5, 3]), np.array([0.9, 0.8])
    figure = plots.plot_cluster_sizes(sizes, confidence, ["a", "b"], np.array([6.0, 2.0]))
    assert [t.get_text() for t in figure.axes[0].get_legend().get_texts()] == ["learned p(y)"]
    assert plots.plot_cluster_sizes(sizes, confidence, ["a", "b"]).axes[0].get_legend() is None
