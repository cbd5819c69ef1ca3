"""The training loop: steps, devices and DDP, checkpoints and exact resume, stop requests and
the non-finite policy. What a step optimises is the Objective's (gmvae.train.objective); pretraining
is a phase before the loop, cluster naming and component merging end-of-epoch hooks
(gmvae.train.naming, gmvae.train.merging). Data stays on
the device; batches are index slices of a seeded permutation; the terms' sums stay on the
device and are read once per epoch."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from gmvae.data.batches import BatchSource, epoch_batches
from gmvae.data.neighbours import NeighbourSearch
from gmvae.data.preprocessing import ScaledRows
from gmvae.errors import GMVAEError
from gmvae.model.checkpoint import load_training_state, save_training_state
from gmvae.model.network import GMVAENet
from gmvae.train.distributed import World, all_sum, share_buffers, share_parameters
from gmvae.train.merging import ComponentMerging
from gmvae.train.naming import ClusterNaming
from gmvae.train.objective import Objective, Progress, StepInputs
from gmvae.train.pretraining import pretrain, start_from_inputs

NONFINITE_POLICIES = ("stop", "skip")
LR_SCHEDULES = ("constant", "cosine")
MIXTURE_STARTS = ("none", "inputs", "embedding", "auto")
# The starts fitted to the inputs, as they are or embedded (pretraining.start_from_inputs).
STARTS_ON_INPUTS = ("inputs", "embedding")
# What the start from a mixture records in the first epoch's record.
START_RECORDS = ("pretrain_rec", "mixture_log_likelihood", "classifier_start")
PROGRESS_EVERY = 25  # steps between updates of the progress bar's loss and usage entropy


@dataclass
class TrainConfig:
    """How the objective is optimised: the loop's budget, batching, the phases before it, and
    what happens on a stop or a non-finite step. Saved as the "train" section of config.json."""

    epochs: int = field(default=50, metadata={"help": "passes over the training data"})
    batch_size: int = field(default=64, metadata={"help": "examples per optimizer step"})
    lr: float = field(default=1e-3, metadata={"help": "Adam learning rate"})
    lr_schedule: str = field(
        default="constant",
        metadata={
            "help": "constant: --lr at every step; cosine: from --lr at the first step down "
            "towards 0 at the last, along half a cosine",
            "choices": LR_SCHEDULES,
        },
    )
    labelled_batch_size: int = field(
        default=64,
        metadata={
            "help": "semi-supervised: labelled examples added to every batch (drawn with "
            "replacement), so that a few labels among many examples count at every step"
        },
    )
    pretrain_epochs: int = field(
        default=0,
        metadata={
            "help": "epochs of autoencoder pretraining, after which p(z|y) and q(y|x) start "
            "from a Gaussian mixture fitted on the codes, as in VaDE (0: none)"
        },
    )
    mixture_start: str = field(
        default="none",
        metadata={
            "help": "inputs: start q(y|x) from a Gaussian mixture fitted on the (standardised) "
            "inputs; embedding: on a UMAP embedding of them, as N2D does (needs umap-learn); "
            "none: from random weights (or from codes, with --pretrain-epochs); auto: inputs "
            "for tables, none for images",
            "choices": MIXTURE_STARTS,
        },
    )
    restarts: int = field(
        default=1,
        metadata={
            "help": "candidate networks, each from its own random start, trained for "
            "--restart-epochs on 90% of the training data; training goes on from the one "
            "whose ELBO on the other 10% is highest (1: no restarts)"
        },
    )
    restart_epochs: int = field(
        default=2, metadata={"help": "epochs each --restarts candidate is trained for"}
    )
    seed: int = field(default=0, metadata={"help": "seeds initialisation, batches and sampling"})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda or cuda:N"})
    checkpoint_every: int = field(
        default=1, metadata={"help": "epochs between checkpoints for --resume (0: none)"}
    )
    on_nonfinite: str = field(
        default="stop",
        metadata={
            "help": "on a NaN/inf loss or gradient: stop, or skip the step",
            "choices": NONFINITE_POLICIES,
        },
    )
    max_skipped_steps: int = field(
        default=10, metadata={"help": "with --on-nonfinite skip: stop after this many skips"}
    )

    def validate(self) -> None:
        at_least_one = ("epochs", "batch_size", "labelled_batch_size", "restarts", "restart_epochs")
        if min(getattr(self, name) for name in at_least_one) < 1:
            raise GMVAEError(f"{', '.join(at_least_one)} must be at least 1")
        at_least_zero = ("pretrain_epochs", "checkpoint_every", "max_skipped_steps")
        if min(getattr(self, name) for name in at_least_zero) < 0:
            raise GMVAEError(f"{', '.join(at_least_zero)} must be at least 0")
        if self.mixture_start not in MIXTURE_STARTS:
            raise GMVAEError(f"mixture_start must be one of {MIXTURE_STARTS}")
        if self.mixture_start in STARTS_ON_INPUTS and self.pretrain_epochs > 0:
            raise GMVAEError(
                "a run starts from one mixture: on the inputs (mixture_start inputs) or on "
                "pretrained codes (pretrain_epochs), not both"
            )
        if self.lr_schedule not in LR_SCHEDULES:
            raise GMVAEError(f"lr_schedule must be one of {LR_SCHEDULES}")
        if self.on_nonfinite not in NONFINITE_POLICIES:
            raise GMVAEError(f"on_nonfinite must be one of {NONFINITE_POLICIES}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise GMVAEError("lr must be positive")


class NonFiniteError(GMVAEError):
    """A loss term or gradient became NaN or infinite."""


class TrainingInterrupted(Exception):
    """A stop was requested (SIGINT/SIGTERM); the state was checkpointed at a step boundary."""

    def __init__(self, reason: str, epoch: int, step: int, steps: int):
        super().__init__(f"stopped by {reason} in epoch {epoch}, after step {step} of {steps}")
        self.reason = reason


class Trainer:
    """Trains an Objective's network with Adam; `history` holds a dict per epoch.

    With `checkpoint_path`, the whole training state (model, optimizer, epoch, history, every
    RNG state, and the position inside an interrupted epoch) is written there atomically every
    `checkpoint_every` epochs and on a stop request, and `resume()` continues from it exactly.
    """

    def __init__(
        self,
        objective: Objective,
        config: TrainConfig,
        device: torch.device,
        checkpoint_path: Path | None = None,
        world: World | None = None,
    ):
        config.validate()
        world = world or World()
        if config.batch_size < 2 * world.size:
            raise GMVAEError(
                f"batch_size {config.batch_size} does not give each of {world.size} processes "
                "two examples"
            )
        self.config = config
        self.device = device
        self.world = world
        self.objective = objective.to(device)
        self.model: GMVAENet = objective.network
        # What a step calls: the objective, or DDP around it when there are several ranks, so
        # that every forward pass of the step runs inside DDP's. Checkpoints hold the bare
        # model, so runs move between 1 and N processes.
        self.step_objective = DistributedDataParallel(objective) if world.size > 1 else objective
        # fused: one kernel for all parameters instead of several per parameter tensor, which
        # matters at small batches on the CPU.
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.lr, fused=True)
        self.generator = torch.Generator(device=device).manual_seed(config.seed)
        self.checkpoint_path = checkpoint_path
        self.naming = ClusterNaming()
        self.merging = ComponentMerging(config.seed)
        self.history: list[dict] = []
        self.skipped_steps = 0
        self.stop_requested: str | None = None  # why, set by a signal handler; seen between steps
        self._partial_epoch: dict | None = None  # where an interrupted epoch stopped
        self._before_training: dict | None = None  # what the phases before the loop recorded
        # Set when the weights to start from were chosen before fit (--restarts, whose
        # candidates each ran the phases before the loop): fit then runs none of them.
        self.start_chosen = False
        self._search: NeighbourSearch | None = None  # the neighbours of the rows last fitted

    def state_dict(self, partial_epoch: dict | None = None) -> dict:
        rng = {"torch": torch.get_rng_state(), "generator": self.generator.get_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "history": self.history,
            "skipped_steps": self.skipped_steps,
            "rng": rng,
            "partial_epoch": partial_epoch,
            "start_probabilities": self.objective.start_probabilities,
        }

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.history = list(state["history"])
        self.skipped_steps = state["skipped_steps"]
        torch.set_rng_state(state["rng"]["torch"])
        self.generator.set_state(state["rng"]["generator"])
        if self.device.type == "cuda" and "cuda" in state["rng"]:
            torch.cuda.set_rng_state(state["rng"]["cuda"], self.device)
        partial = state["partial_epoch"]
        if partial is not None:
            partial = {**partial, "order": partial["order"].to(self.device)}
            partial["sums"] = {k: v.to(self.device) for k, v in partial["sums"].items()}
        self._partial_epoch = partial
        self.objective.start_probabilities = state.get("start_probabilities")

    def save_checkpoint(self, partial_epoch: dict | None = None) -> None:
        if self.checkpoint_path is not None and self.world.is_main:
            save_training_state(self.state_dict(partial_epoch), self.checkpoint_path)

    def resume(self) -> None:
        """Load the state saved at `checkpoint_path`."""
        self.load_state_dict(load_training_state(self.checkpoint_path, self.device))

    def fit(
        self,
        x: torch.Tensor | ScaledRows,
        monitor: Callable[[], dict] | None = None,
        on_epoch: Callable[[dict], None] | None = None,
        progress: bool | None = None,
        labels: np.ndarray | None = None,
    ) -> list[dict]:
        """Train for the remaining epochs on x (N, D): a tensor, moved to the device whole, or
        ScaledRows over a memory-mapped file, read a batch at a time. `monitor()` adds
        evaluation numbers to each epoch's record; `on_epoch(record)` sees the finished record.
        `progress`: a bar per epoch (default: when stderr is a terminal).
        `labels` (N,): semi-supervised training, a class per example and -1 where unknown
        (checked by labels.check_labels); once the objective uses them, every batch also holds
        `labelled_batch_size` labelled examples. Give the same labels again when resuming."""
        source = BatchSource(x, self.device, labels)
        if progress is None:
            progress = sys.stderr.isatty()
        self.prepare(source)
        if not self.history and self._partial_epoch is None and not self.start_chosen:
            self._before_training = self._phases_before_training(source)
        every = self.config.checkpoint_every
        for epoch in range(len(self.history), self.config.epochs):
            record = {"epoch": epoch + 1, **self.train_epoch(source, epoch, progress)}
            if monitor is not None:
                start = time.perf_counter()
                record.update(monitor())
                record["eval_seconds"] = time.perf_counter() - start
            self.history.append(record)
            if on_epoch is not None:
                on_epoch(record)
            if every and ((epoch + 1) % every == 0 or epoch + 1 == self.config.epochs):
                self.save_checkpoint()
        share_buffers(self.model, self.world)
        return self.history

    def prepare(self, source: BatchSource) -> None:
        """What the objective and the naming hook need before training, from one seeded,
        deterministic neighbour search (a resumed run finds the same neighbours), made once
        for the rows however often `fit` is called on them."""
        if self._search is None or self._search.x is not source.x:
            self._search = NeighbourSearch(source.x, self.config.seed, self.device)
        search = self._search
        wanted = max(
            self.objective.neighbours_wanted(len(source)), self.naming.neighbours_wanted(source)
        )
        if wanted:
            search.nearest(wanted)  # one search serves both
        self.objective.prepare(source, search)
        self.naming.prepare(source, search)
        self.merging.prepare(self.model, source)

    def _phases_before_training(self, source: BatchSource) -> dict:
        """The start from a mixture, when asked (on pretrained codes or on the inputs): its
        record joins the first epoch's, its time that epoch's."""
        cfg = self.config
        started = time.perf_counter()
        if cfg.pretrain_epochs > 0:
            record = {"pretrain_rec": pretrain(
                self.model, len(source), source.read, cfg.pretrain_epochs, cfg.batch_size,
                cfg.lr, cfg.seed,
            )}  # fmt: skip
        elif cfg.mixture_start in STARTS_ON_INPUTS:
            start = start_from_inputs(
                self.model, len(source), source.read, cfg.batch_size, cfg.lr, cfg.seed,
                source.labels, embedded=cfg.mixture_start == "embedding",
            )  # fmt: skip
            if self.objective.config.w_start > 0:  # held (and checkpointed) only when used
                self.objective.start_probabilities = start.probabilities.to(self.device)
            record = {"mixture_log_likelihood": start.mixture_log_likelihood}
            if source.labels is not None:
                record["classifier_start"] = float(start.classifier)
        else:
            return {}
        share_parameters(self.model, self.world)
        return {**record, "seconds": time.perf_counter() - started}

    def train_epoch(self, source: BatchSource, epoch: int, progress: bool = False) -> dict:
        """One pass over the source's rows in a seeded random order (or the rest of an
        interrupted one). Returns the mean of each term over the rows of the finite steps."""
        cfg = self.config
        self.model.train()
        if self._partial_epoch is not None:
            partial, self._partial_epoch = self._partial_epoch, None
        else:
            partial = self._start_epoch(source, epoch)
        order, sums, counted = partial["order"], partial["sums"], partial["counted"]
        started = time.perf_counter() - partial["seconds"]
        batches = epoch_batches(order, cfg.batch_size)
        steps = len(batches)
        labelled = source.labels is not None and self.objective.config.uses_labels(epoch)
        bar = tqdm(
            range(partial["next"], steps),
            desc=f"epoch {epoch + 1}/{cfg.epochs}",
            leave=False,
            disable=not progress,
        )
        for step in bar:
            rows = batches[step]
            if len(rows) < 2 * self.world.size:
                # A batch too small to give each rank two rows (batch normalisation needs two;
                # only with a handful of rows): every rank skips it.
                continue
            if labelled:
                pick = torch.randint(
                    len(source.labelled_rows), (cfg.labelled_batch_size,), device=self.device
                )
                rows = torch.cat([rows, source.labelled_rows[pick]])
            mine = self.world.shard(torch.arange(len(rows), device=self.device))
            inputs = StepInputs(
                x=source.read(rows[mine]),
                rows=rows,
                mine=mine,
                labels=source.labels[rows] if labelled else None,
                world_size=self.world.size,
            )
            at = Progress(epoch=epoch, done=epoch * steps + step + 1, steps_per_epoch=steps)
            out = self.step_objective(inputs, at)
            self.optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            finite, stop = self._agree(out.loss)
            if not finite:
                self._nonfinite(out.sums, epoch + 1, step + 1)
                continue
            for group in self.optimizer.param_groups:
                group["lr"] = self.learning_rate(at.done - 1, cfg.epochs * steps)
            self.optimizer.step()
            with torch.no_grad():  # summed on the device, read once per epoch
                for name in sums:
                    sums[name] += out.sums[name]
            counted += len(inputs.x)
            if progress and step % PROGRESS_EVERY == 0:  # a host read only every few steps
                usage = out.logits.softmax(-1).mean(0)
                bar.set_postfix(
                    loss=f"{float(sums['loss']) / max(counted, 1):.2f}",
                    usage=f"{float(-(usage * usage.clamp_min(1e-12).log()).sum()):.2f}",
                )
            if stop:
                elapsed = time.perf_counter() - started
                position = {"next": step + 1, "counted": counted, "seconds": elapsed}
                self.save_checkpoint({**partial, **position})
                raise TrainingInterrupted(
                    self.stop_requested or "a peer", epoch + 1, step + 1, steps
                )
        named = self.naming.after_epoch(self.model, self.optimizer, source, self.world)
        merged = self.merging.after_epoch(self.model, source, self.world)
        totals = all_sum(
            torch.cat([torch.stack(list(sums.values())), torch.tensor([float(counted)])]).to(
                self.device
            ),
            self.world,
        )
        means = (totals[:-1] / max(float(totals[-1]), 1.0)).tolist()
        record = self.objective.summarise(dict(zip(sums, means, strict=True)))
        before = {key: partial[key] for key in START_RECORDS if key in partial}
        last = Progress(epoch=epoch, done=(epoch + 1) * steps, steps_per_epoch=steps)
        return {
            **record,
            **before,
            **self.objective.schedule(last),
            "lr": self.optimizer.param_groups[0]["lr"],
            "skipped_steps": self.skipped_steps,
            **named,
            **merged,
            "seconds": time.perf_counter() - started,
        }

    def learning_rate(self, step: int, total: int) -> float:
        """The learning rate of step `step` (0-based) of `total`: a function of the step alone,
        so that a resumed run takes the same steps."""
        if self.config.lr_schedule == "constant":
            return self.config.lr
        return self.config.lr * 0.5 * (1 + math.cos(math.pi * step / total))

    def _start_epoch(self, source: BatchSource, epoch: int) -> dict:
        """A new epoch's position and running sums (what a checkpoint saves mid-epoch). The
        first epoch takes in what the phases before training recorded, and their time."""
        labelled = source.labels is not None and self.objective.config.uses_labels(epoch)
        names = self.objective.recorded_terms(labelled)
        partial = {
            "order": torch.randperm(len(source), generator=self.generator, device=self.device),
            "next": 0,  # the next step to take
            "sums": {name: torch.zeros((), device=self.device) for name in names},
            "counted": 0,  # rows in `sums` (skipped steps' are not)
            "seconds": 0.0,
        }
        if epoch == 0 and self._before_training:
            partial.update(self._before_training)
            self._before_training = None
        return partial

    def _agree(self, loss: torch.Tensor) -> tuple[bool, bool]:
        """(every rank's loss and gradients are finite, some rank was asked to stop): one host
        sync per step (free on the CPU) and, across processes, one tiny all-reduce."""
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        finite = torch.isfinite(loss) & torch.isfinite(torch.nn.utils.get_total_norm(grads))
        stop = torch.tensor(self.stop_requested is not None, device=self.device)
        flags = all_sum(torch.stack([finite, stop]).float(), self.world).tolist()
        return flags[0] == self.world.size, flags[1] > 0

    def _nonfinite(self, sums: dict[str, torch.Tensor], epoch: int, step: int) -> None:
        """A step with a NaN/inf loss or gradient: by policy, raise NonFiniteError (stop) or
        count it as skipped (skip) until the limit. The message names the first term that
        went bad, or the gradient."""
        self.optimizer.zero_grad(set_to_none=True)
        bad = [name for name, value in sums.items() if name != "loss" and not value.isfinite()]
        what = f"loss term {bad[0]!r}" if bad else "gradient (or a loss on another process)"
        self.skipped_steps += 1
        if (
            self.config.on_nonfinite == "skip"
            and self.skipped_steps <= self.config.max_skipped_steps
        ):
            return
        path = self.checkpoint_path
        kept = (
            f"{path} was left as it was"
            if path is not None and path.exists()
            else "no checkpoint had been written"
        )
        raise NonFiniteError(
            f"non-finite {what} in epoch {epoch}, step {step} (non-finite steps so far: "
            f"{self.skipped_steps}, policy {self.config.on_nonfinite!r}); {kept}. "
            "Try a lower --lr"
        )
