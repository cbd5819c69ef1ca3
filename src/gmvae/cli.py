"""The `gmvae` command: train, evaluate, predict, sample, report, datasets, select-k.

Every field of the config dataclasses is a `gmvae train` flag (`--z-dim`, `--batch-size`, ...);
a preset supplies the defaults and flags given on the command line override it.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import io
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np

from gmvae.errors import GMVAEError
from gmvae.version import __version__

# Fields that come from the data, not from the user.
DERIVED_FIELDS = {"x_dim", "image_shape"}
_TYPES = {"int": int, "float": float, "str": str, "bool": bool}


def _add_dataclass_flags(
    parser: argparse.ArgumentParser, cls: type, section: str, defaults: object
) -> None:
    """A flag per field, its help showing `defaults` (the default preset's values); unset flags
    stay out of the namespace so presets can fill them."""
    group = parser.add_argument_group(f"{section} settings")
    for f in dataclasses.fields(cls):
        if f.name in DERIVED_FIELDS:
            continue
        flag = "--" + f.name.replace("_", "-")
        kind = _TYPES[str(f.type).replace(" | None", "")]
        help_text = f"{f.metadata.get('help', '')} (default: {getattr(defaults, f.name)})"
        help_text = help_text.replace("%", "%%")  # argparse formats help with %
        common = {"dest": f"{section}.{f.name}", "default": argparse.SUPPRESS, "help": help_text}
        if kind is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, **common)
        else:
            metavar = None if f.metadata.get("choices") else f.name.upper()
            group.add_argument(
                flag, type=kind, choices=f.metadata.get("choices"), metavar=metavar, **common
            )


def build_parser() -> argparse.ArgumentParser:
    from gmvae.run.settings import DEFAULT_PRESET, PRESETS, SECTIONS, ExperimentConfig

    parser = argparse.ArgumentParser(prog="gmvae", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"gmvae {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train a GMVAE and write a run folder")
    train.add_argument("--preset", choices=tuple(PRESETS), default=DEFAULT_PRESET)
    train.add_argument("--out", type=Path, help="run folder (default: runs/<generated name>)")
    train.add_argument(
        "--resume",
        type=Path,
        metavar="RUN",
        help="continue RUN from its last checkpoint, with its own settings (--device may change)",
    )
    train.add_argument("--quiet", action="store_true", help="print nothing but errors")
    train.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="a line per epoch (text) or a JSON object per epoch, for machines (json)",
    )
    train.add_argument(
        "--tensorboard", action="store_true", help="also log to RUN/tensorboard (needs tensorboard)"
    )
    train.add_argument(
        "--latent-map",
        choices=("tsne", "umap"),
        default="tsne",
        help="how the latent map is drawn: t-SNE, or UMAP (needs umap-learn)",
    )
    defaults = ExperimentConfig.from_preset(DEFAULT_PRESET)
    for section, cls in SECTIONS.items():
        _add_dataclass_flags(train, cls, section, getattr(defaults, section))
    train.set_defaults(func=cmd_train)

    evaluate = commands.add_parser("evaluate", help="recompute test metrics from a saved run")
    evaluate.add_argument("run", type=Path)
    evaluate.add_argument("--data-dir", help="where the dataset's files are now")
    evaluate.add_argument("--device", default="auto")
    evaluate.set_defaults(func=cmd_evaluate)

    predict = commands.add_parser("predict", help="cluster and q(y|x) for each row of a file")
    predict.add_argument("run", type=Path)
    predict.add_argument(
        "--input",
        type=Path,
        required=True,
        help="rows to cluster, in any format train reads (.npy, .npz, .csv, .tsv, .parquet, "
        "IDX, a folder of images)",
    )
    predict.add_argument("--output", type=Path, required=True, help="CSV to write")
    predict.add_argument("--device", default="auto")
    predict.set_defaults(func=cmd_predict)

    report = commands.add_parser(
        "report", help="(re)write RUN/report.html, one self-contained page"
    )
    report.add_argument("run", type=Path)
    report.add_argument("--data-dir", help="where the dataset's files are now")
    report.set_defaults(func=cmd_report)

    datasets = commands.add_parser("datasets", help="list the named datasets and where they are")
    datasets.set_defaults(func=cmd_datasets)

    select = commands.add_parser(
        "select-k", help="train a short model per K, as `gmvae train --preset` would, and compare"
    )
    select.add_argument(
        "--preset",
        choices=tuple(PRESETS),
        default=DEFAULT_PRESET,
        help="the settings and objective each model trains with, as for gmvae train",
    )
    select.add_argument("--data", default="mnist", help="a named dataset or a file")
    select.add_argument("--data-dir")
    select.add_argument("--label-column")
    select.add_argument("--k", default="2-20", help="the K to try: 2-20, or 5,10,15")
    select.add_argument("--epochs", type=int, default=10)
    select.add_argument("--train-subset", type=int, help="use only the first N examples")
    select.add_argument("--seed", type=int, default=0)
    select.add_argument("--device", default="auto")
    select.add_argument("--out", type=Path, required=True, help="folder for the table and plot")
    select.set_defaults(func=cmd_select_k)

    sample = commands.add_parser("sample", help="images generated per cluster, as a PNG grid")
    sample.add_argument("run", type=Path)
    sample.add_argument("--per-cluster", type=int, default=10)
    sample.add_argument("--output", type=Path, required=True, help="PNG to write")
    sample.add_argument("--seed", type=int, default=0)
    sample.set_defaults(func=cmd_sample)
    return parser


def setting_overrides(args: argparse.Namespace) -> dict[str, dict]:
    """The settings flags given to `gmvae train`: {section: {field: value}}, a section per
    settings.SECTIONS."""
    from gmvae.run.settings import SECTIONS

    overrides: dict[str, dict] = {section: {} for section in SECTIONS}
    for key, value in vars(args).items():
        if "." in key:
            section, name = key.split(".", 1)
            overrides[section][name] = value
    return overrides


def cmd_train(args: argparse.Namespace) -> None:
    from gmvae.run.experiment import Output, resume_experiment, run_experiment
    from gmvae.run.settings import ExperimentConfig
    from gmvae.storage import read_json
    from gmvae.train import distributed
    from gmvae.train.trainer import TrainingInterrupted

    overrides = setting_overrides(args)
    if args.resume is not None:
        out = args.resume
        device = overrides["train"].pop("device", None)
        if any(overrides.values()) or args.out is not None:
            raise GMVAEError("--resume takes the run's own settings; only --device may be given")
        saved = read_json(out / "config.json").get("train", {})
        device_name = device or (saved.get("device", "auto") if isinstance(saved, dict) else "auto")
    else:
        config = ExperimentConfig.from_preset(args.preset, overrides)
        out = args.out
        if out is None:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            name = f"{Path(config.data.data).stem}-{config.preset}-seed{config.train.seed}-{stamp}"
            out = Path("runs") / name
        device_name = config.train.device
    # Under torchrun this joins the other processes; otherwise it is a world of one.
    world, _ = distributed.setup(device_name)
    if args.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise GMVAEError("--tensorboard needs tensorboard: pip install 'gmvae[tensorboard]'")
    if args.latent_map == "umap" and importlib.util.find_spec("umap") is None:
        raise GMVAEError("--latent-map umap needs umap-learn: pip install 'gmvae[umap]'")
    log = "quiet" if args.quiet else args.log_format
    output = Output(log, args.tensorboard, latent_map=args.latent_map)
    try:
        if args.resume is not None:
            resume_experiment(out, device, output, world)
        else:
            run_experiment(config, out, ["gmvae", *args.argv], output, world)
    except TrainingInterrupted as stop:
        if world.is_main:
            print(
                f"gmvae: {stop}; checkpoint saved. Resume with: gmvae train --resume {out}",
                file=sys.stderr,
            )
        sys.exit(128 + signal.Signals.__members__.get(stop.reason, signal.SIGTERM).value)
    finally:
        distributed.teardown()


def _load_run(run: Path, device: str):
    from gmvae.model.checkpoint import load_model
    from gmvae.train.distributed import resolve_device

    if not (run / "model").is_dir():
        raise GMVAEError(f"{run} is not a run folder (no model/ inside)")
    return load_model(run / "model", resolve_device(device))


def _run_data(run: Path, data_dir: str | None):
    """The data a run was trained on (read again as its config.json says) and its seed."""
    from gmvae.run.assembly import load_data
    from gmvae.run.settings import DataConfig
    from gmvae.storage import read_json

    saved = read_json(run / "config.json")
    try:
        data_config = DataConfig(**saved["data"])
        seed = saved["train"]["seed"]
    except (KeyError, TypeError) as err:
        raise GMVAEError(f"{run / 'config.json'} is not a compatible run config: {err}") from None
    if data_dir:
        data_config = dataclasses.replace(data_config, data_dir=data_dir)
    return load_data(data_config, seed), seed


def cmd_evaluate(args: argparse.Namespace) -> None:
    from gmvae.run.experiment import evaluate, format_table

    model = _load_run(args.run, args.device)
    data, seed = _run_data(args.run, args.data_dir)
    scores, _ = evaluate(model, data.x_test, data.y_test, seed, data.train_labels is not None)
    print(format_table(scores, "test"))


def cmd_report(args: argparse.Namespace) -> None:
    from gmvae.run.report import write_report

    if not (args.run / "results.json").is_file():
        raise GMVAEError(f"{args.run} has no results.json: not a finished run")
    model = _load_run(args.run, "cpu")
    data, _ = _run_data(args.run, args.data_dir)
    print(f"wrote {write_report(args.run, model, data)}")


def cmd_predict(args: argparse.Namespace) -> None:
    from gmvae.data.datasets import read_inputs
    from gmvae.model import inference
    from gmvae.model.checkpoint import load_scaling
    from gmvae.storage import atomic_write, check_writable, read_json

    check_writable(args.output)
    model = _load_run(args.run, args.device)
    label_column = read_json(args.run / "config.json").get("data", {}).get("label_column")
    scaling = load_scaling(args.run / "model", model.config.x_dim)
    images = model.config.image_shape is not None
    x = read_inputs(args.input, model.config.x_dim, images, scaling, label_column)
    probs = inference.cluster_probabilities(model, x)
    k = probs.shape[1]
    buffer = io.StringIO()
    header = "cluster," + ",".join(f"p{j}" for j in range(k))
    table = np.column_stack([probs.argmax(1), probs])
    np.savetxt(buffer, table, delimiter=",", header=header, comments="", fmt=["%d"] + ["%.6g"] * k)
    atomic_write(args.output, buffer.getvalue())
    print(f"wrote {len(probs)} rows to {args.output}")


def cmd_sample(args: argparse.Namespace) -> None:
    from gmvae.model import inference
    from gmvae.run import plots
    from gmvae.storage import check_writable

    check_writable(args.output)
    model = _load_run(args.run, "cpu")
    if model.config.image_shape is None:
        raise GMVAEError(f"{args.run} was trained on tables, not images: nothing to draw")
    if args.per_cluster < 1:
        raise GMVAEError("--per-cluster must be at least 1")
    k = model.config.n_clusters
    images = inference.sample(model, np.repeat(np.arange(k), args.per_cluster), seed=args.seed)
    rows = [f"cluster {c}" for c in range(k)]
    grid = images.reshape(k, args.per_cluster, -1)
    plots.save_png(plots.plot_generated(grid, rows, model.config.image_shape), args.output)
    print(f"wrote {args.output}")


def cmd_datasets(args: argparse.Namespace) -> None:
    from gmvae.data.datasets import dataset_status

    for name, where in dataset_status():
        print(f"{name:<15} {where}")


def cmd_select_k(args: argparse.Namespace) -> None:
    from gmvae.run.assembly import load_data
    from gmvae.run.selection import select_k
    from gmvae.run.settings import ExperimentConfig, parse_int_range

    config = ExperimentConfig.from_preset(
        args.preset,
        {
            "data": {
                "data": args.data,
                "data_dir": args.data_dir,
                "label_column": args.label_column,
                "train_subset": args.train_subset,
            },
            "train": {"epochs": args.epochs, "seed": args.seed, "device": args.device},
        },
    )
    ks = parse_int_range(args.k)
    if min(ks) < 1:
        raise GMVAEError(f"--k {args.k!r}: every K must be at least 1")
    select_k(load_data(config.data, args.seed), ks, config, args.out)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    args.argv = argv
    try:
        args.func(args)
    except GMVAEError as err:
        if args.debug:
            raise
        if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 speaks for all
            print(f"gmvae: error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("gmvae: interrupted", file=sys.stderr)
        sys.exit(130)
