"""The training loop: one place that owns the optimizer, the temperature schedule, batching
and the per-epoch record. Data stays one tensor on the device; batches are index slices of a
seeded permutation; losses accumulate on the device and are read once per epoch."""

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

from gmvae import augment
from gmvae.checkpoint import load_training_state, save_training_state
from gmvae.distributed import World, all_sum, share_buffers, share_parameters
from gmvae.errors import GMVAEError
from gmvae.labels import cluster_order
from gmvae.losses import weighted_loss
from gmvae.model import GMVAENet, draw_noise
from gmvae.neighbours import nearest_neighbours, read_rows
from gmvae.preprocessing import ScaledRows
from gmvae.pretraining import pretrain

TERMS = ("rec", "gauss", "cat")
NONFINITE_POLICIES = ("stop", "skip")
PROGRESS_EVERY = 25  # steps between updates of the progress bar's loss and usage entropy
# The adversarial step's length scales with the distance to this neighbour, as in IMSAT: short
# in dense regions, where a cluster boundary must not pass, longer in sparse ones.
ADVERSARIAL_NEIGHBOUR = 10
# The random step that starts the search for the adversarial direction is this many times the
# mean adversarial length: IMSAT's 10 pixel units on MNIST, where that mean is 1.28, made
# scale-free. In an unbenchmarked trial a probe as short as the step learned clusters slower.
ADVERSARIAL_PROBE = 8.0
# Semi-supervised: each labelled example names its class's cluster through this many of its
# nearest neighbours (on MNIST nearly all of them show the same digit).
NAMING_NEIGHBOURS = 10
NAMING_CHUNK = 4096  # rows per forward pass when naming


@dataclass
class TrainConfig:
    epochs: int = field(default=50, metadata={"help": "passes over the training data"})
    batch_size: int = field(default=64, metadata={"help": "examples per optimizer step"})
    lr: float = field(default=1e-3, metadata={"help": "Adam learning rate"})
    tau_start: float = field(default=1.0, metadata={"help": "Gumbel temperature at epoch 0"})
    tau_decay: float = field(
        default=0.013862944,
        metadata={"help": "tau = max(tau_start * exp(-tau_decay * epoch), tau_min)"},
    )
    tau_min: float = field(default=0.5, metadata={"help": "lowest Gumbel-Softmax temperature"})
    gumbel_hard: bool = field(
        default=False, metadata={"help": "straight-through hard one-hot y instead of soft samples"}
    )
    kl_warmup: int = field(
        default=0,
        metadata={
            "help": "epochs over which the weights of the two KL terms (--w-gauss, --w-cat) "
            "rise linearly from 0 (0: full weight from the start)"
        },
    )
    pretrain_epochs: int = field(
        default=0,
        metadata={
            "help": "epochs of autoencoder pretraining, after which p(z|y) and q(y|x) start "
            "from a Gaussian mixture fitted on the codes, as in VaDE (0: none)"
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
    w_rec: float = field(default=1.0, metadata={"help": "weight of the reconstruction term"})
    w_gauss: float = field(default=1.0, metadata={"help": "weight of log q(z|x,y) - log p(z|y)"})
    w_cat: float = field(default=1.0, metadata={"help": "weight of KL(q(y|x) || uniform)"})
    elbo_to_clusters: bool = field(
        default=True,
        metadata={
            "help": "let the ELBO's gradient train q(y|x); off, q(y|x) learns from the "
            "clustering terms alone and the ELBO fits q(z|x,y), p(z|y) and p(x|z) to its clusters"
        },
    )
    w_confidence: float = field(
        default=0.0,
        metadata={"help": "weight of the entropy of q(y|x): confident cluster assignments"},
    )
    w_balance: float = field(
        default=0.0,
        metadata={"help": "weight of log K - H(batch mean of q(y|x)): keeps clusters in use"},
    )
    w_consistency: float = field(
        default=0.0,
        metadata={
            "help": "weight of KL(q(y|x) || q(y|T(x))) for a small random affine T (images; "
            "off for tables)"
        },
    )
    w_neighbours: float = field(
        default=0.0,
        metadata={
            "help": "weight of -log sum_y q(y|x) q(y|x') for x' one of x's nearest neighbours"
        },
    )
    n_neighbours: int = field(
        default=5, metadata={"help": "neighbours per example for --w-neighbours (PCA space)"}
    )
    neighbour_warmup: int = field(
        default=300,
        metadata={
            "help": "optimizer steps over which --w-neighbours rises linearly from 0: at full "
            "weight from the first step, the neighbour term can pull every example into one "
            "cluster"
        },
    )
    w_adversarial: float = field(
        default=0.0,
        metadata={
            "help": "weight of KL(q(y|x) || q(y|x + r)) for the small r that changes q(y|x) "
            "most (virtual adversarial training)"
        },
    )
    adversarial_radius: float = field(
        default=0.25,
        metadata={
            "help": f"length of r for --w-adversarial, as a fraction of the distance from x to "
            f"its {ADVERSARIAL_NEIGHBOUR}th nearest neighbour"
        },
    )
    w_labelled: float = field(
        default=1.0,
        metadata={
            "help": "semi-supervised: weight of -log q(y = label | x), averaged over the "
            "labelled examples of each batch"
        },
    )
    labelled_batch_size: int = field(
        default=64,
        metadata={
            "help": "semi-supervised: labelled examples added to every batch (drawn with "
            "replacement), so that a few labels among many examples count at every step"
        },
    )
    label_warmup: int = field(
        default=1,
        metadata={
            "help": "semi-supervised: epochs trained without the labels, after which the "
            "clusters are named by the labelled examples' neighbours and the labels join"
        },
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
        clustering = {
            "w_confidence": self.w_confidence,
            "w_balance": self.w_balance,
            "w_consistency": self.w_consistency,
            "w_neighbours": self.w_neighbours,
            "w_adversarial": self.w_adversarial,
        }
        if min(clustering.values()) < 0 or self.w_labelled < 0:
            raise GMVAEError(f"{', '.join(clustering)} and w_labelled must be at least 0")
        if not self.elbo_to_clusters and not any(clustering.values()):
            raise GMVAEError(
                "with elbo_to_clusters off, q(y|x) needs a clustering term to learn from: "
                f"set one of {', '.join(clustering)}"
            )
        if self.adversarial_radius <= 0:
            raise GMVAEError("adversarial_radius must be positive")
        warmups = (self.neighbour_warmup, self.label_warmup, self.kl_warmup, self.pretrain_epochs)
        if min(warmups) < 0:
            raise GMVAEError(
                "neighbour_warmup, label_warmup, kl_warmup and pretrain_epochs must be at least 0"
            )
        if self.n_neighbours < 1:
            raise GMVAEError("n_neighbours must be at least 1")
        at_least_one = ("epochs", "batch_size", "labelled_batch_size", "restarts", "restart_epochs")
        if min(getattr(self, name) for name in at_least_one) < 1:
            raise GMVAEError(f"{', '.join(at_least_one)} must be at least 1")
        if self.checkpoint_every < 0 or self.max_skipped_steps < 0:
            raise GMVAEError("checkpoint_every and max_skipped_steps must be at least 0")
        if self.on_nonfinite not in NONFINITE_POLICIES:
            raise GMVAEError(f"on_nonfinite must be one of {NONFINITE_POLICIES}")
        if not (self.lr > 0 and self.tau_start > 0 and self.tau_min > 0):
            raise GMVAEError("lr, tau_start and tau_min must be positive")


def gumbel_temperature(config: TrainConfig, epoch: int) -> float:
    """The reference schedule: tau = max(tau_start * exp(-tau_decay * epoch), tau_min)."""
    return max(config.tau_start * math.exp(-config.tau_decay * epoch), config.tau_min)


def usage_shortfall(logits: torch.Tensor) -> torch.Tensor:
    """log K - H(mean over the batch of q(y|x)): 0 when the batch uses every cluster equally,
    log K when it uses one. logits (N, K) -> scalar."""
    usage = logits.softmax(-1).mean(0)
    return math.log(logits.shape[-1]) + (usage * usage.clamp_min(1e-12).log()).sum()


@torch.no_grad()
def permute_clusters(model: GMVAENet, optimizer: torch.optim.Adam, order: torch.Tensor) -> None:
    """Renames the clusters: new cluster i is old cluster order[i] (K,), in the parameters and
    in Adam's moments, so training goes on as if the clusters had always had these names."""
    for param, dim, offset in model.cluster_axes():
        state = optimizer.state.get(param, {})
        for values in (param, state.get("exp_avg"), state.get("exp_avg_sq")):
            if values is not None:
                block = values.narrow(dim, offset, len(order))
                block.copy_(block.index_select(dim, order))


class NonFiniteError(GMVAEError):
    """A loss term or gradient became NaN or infinite."""


class TrainingInterrupted(Exception):
    """A stop was requested (SIGINT/SIGTERM); the state was checkpointed at a step boundary."""

    def __init__(self, reason: str, epoch: int, step: int, steps: int):
        super().__init__(f"stopped by {reason} in epoch {epoch}, after step {step} of {steps}")
        self.reason = reason


class Trainer:
    """Trains a GMVAENet on a (N, D) float tensor with Adam; `history` holds a dict per epoch.

    With `checkpoint_path`, the whole training state (model, optimizer, epoch, history, every
    RNG state, and the position inside an interrupted epoch) is written there atomically every
    `checkpoint_every` epochs and on a stop request, and `resume()` continues from it exactly.
    """

    def __init__(
        self,
        model: GMVAENet,
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
        self.model = model.to(device)
        # What training steps call: the model, or DDP around it when there are several ranks.
        # Checkpoints always hold the bare model, so runs move between 1 and N processes.
        self.network = DistributedDataParallel(model) if world.size > 1 else model
        self._weights = torch.tensor([config.w_rec, config.w_gauss, config.w_cat], device=device)
        # fused: one kernel for all parameters instead of several per parameter tensor, which
        # matters at small batches on the CPU.
        self.optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, fused=True)
        self.generator = torch.Generator(device=device).manual_seed(config.seed)
        self.checkpoint_path = checkpoint_path
        self.history: list[dict] = []
        self.skipped_steps = 0
        self.stop_requested: str | None = None  # why, set by a signal handler; seen between steps
        self._partial_epoch: dict | None = None  # where an interrupted epoch stopped
        self.neighbours: torch.Tensor | None = None  # (N, n_neighbours) row indices
        self.adversarial_length: torch.Tensor | None = None  # (N,) length of r per example
        self.probe_length = 0.0  # of the random step that starts the search for r
        self.labels: torch.Tensor | None = None  # (N,) class per example, -1 unknown
        self.labelled_rows: torch.Tensor | None = None  # (L,) rows whose class is known
        self.labelled_neighbours: torch.Tensor | None = None  # (L, n) their nearest neighbours

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
            partial["sums"] = partial["sums"].to(self.device)
        self._partial_epoch = partial

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
        (checked by labels.check_labels); after `label_warmup` epochs, every batch also holds
        `labelled_batch_size` labelled examples. Give the same labels again when resuming."""
        if isinstance(x, torch.Tensor):
            x = x.to(self.device, torch.float32)
        if labels is not None:
            self.labels = torch.as_tensor(labels, dtype=torch.int64, device=self.device)
            self.labelled_rows = (self.labels >= 0).nonzero().squeeze(1)
        if progress is None:
            progress = sys.stderr.isatty()
        self.find_neighbours(x)
        every = self.config.checkpoint_every
        for epoch in range(len(self.history), self.config.epochs):
            record = {"epoch": epoch + 1, **self.train_epoch(x, epoch, progress)}
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

    def find_neighbours(self, x: torch.Tensor | ScaledRows) -> None:
        """The neighbour table and adversarial lengths the configured terms need, and the
        labelled examples' neighbours that name the clusters, once. Seeded and deterministic:
        a resumed run finds the same ones."""
        cfg = self.config
        found_before = (self.neighbours, self.adversarial_length, self.labelled_neighbours)
        if any(t is not None for t in found_before):
            return
        # Fewer examples than IMSAT's neighbour: the farthest there is.
        adversarial_neighbour = min(ADVERSARIAL_NEIGHBOUR, max(len(x) - 1, 1))
        naming_neighbours = min(NAMING_NEIGHBOURS, max(len(x) - 1, 1))
        wanted = [cfg.n_neighbours] if cfg.w_neighbours > 0 else []
        wanted += [adversarial_neighbour] if cfg.w_adversarial > 0 else []
        wanted += [naming_neighbours] if self.labelled_rows is not None else []
        if not wanted:
            return
        found = nearest_neighbours(x, max(wanted), cfg.seed, self.device)
        if cfg.w_neighbours > 0:
            self.neighbours = found[:, : cfg.n_neighbours]
        if self.labelled_rows is not None:
            self.labelled_neighbours = found[self.labelled_rows, :naming_neighbours]
        if cfg.w_adversarial > 0:
            far = found[:, adversarial_neighbour - 1].cpu()
            distances = [
                (read_rows(x, rows) - read_rows(x, far[rows])).norm(dim=1)
                for rows in torch.arange(len(x)).split(4096)
            ]
            self.adversarial_length = cfg.adversarial_radius * torch.cat(distances).to(self.device)
            self.probe_length = ADVERSARIAL_PROBE * float(self.adversarial_length.mean())

    def _batch(self, x: torch.Tensor | ScaledRows, rows: torch.Tensor) -> torch.Tensor:
        """Rows `rows` of x, in that order, on the device."""
        if isinstance(x, torch.Tensor):
            return x[rows]
        # Read in sorted order, so a memory-mapped file is read front to back.
        wanted = rows.cpu().numpy()
        order = np.argsort(wanted)
        values = np.empty((len(wanted), x.shape[1]), dtype=np.float32)
        values[order] = x[wanted[order]]
        return torch.from_numpy(values).to(self.device)

    def train_epoch(self, x: torch.Tensor | ScaledRows, epoch: int, progress: bool = False) -> dict:
        """One pass over x in a seeded random order (or the rest of an interrupted one).
        Returns the mean of each loss term over the examples of the finite steps."""
        cfg = self.config
        tau = gumbel_temperature(cfg, epoch)
        self.model.train()
        if self._partial_epoch is not None:
            partial, self._partial_epoch = self._partial_epoch, None
        else:
            partial = self._start_epoch(x, epoch)
        order, sums, counted = partial["order"], partial["sums"], partial["counted"]
        started = time.perf_counter() - partial["seconds"]
        steps = math.ceil(len(x) / cfg.batch_size)
        kl_weight = 1.0
        # Semi-supervised: the first epochs learn clusters from the data alone, which are then
        # named (name_clusters) before the labels' cross-entropy can bend them.
        labels = self.labels if epoch >= cfg.label_warmup else None
        desc = f"epoch {epoch + 1}/{cfg.epochs}"
        todo = range(partial["next"], steps)
        bar = tqdm(todo, desc=desc, leave=False, disable=not progress)
        for step in bar:
            rows = order[step * cfg.batch_size : (step + 1) * cfg.batch_size]
            if len(rows) < 2 * self.world.size:
                # A last batch too small to give each rank two rows (batch normalisation needs
                # two): every rank skips it.
                continue
            if labels is not None:
                pick = torch.randint(
                    len(self.labelled_rows), (cfg.labelled_batch_size,), device=self.device
                )
                rows = torch.cat([rows, self.labelled_rows[pick]])
            # Noise for the whole global batch, the same on every rank; each takes its slice.
            gumbel, normal = draw_noise(len(rows), self.model.config, self.device)
            mine = self.world.shard(torch.arange(len(rows), device=self.device))
            batch = self._batch(x, rows[mine])
            moved, neighbour, adversary = self._views(x, batch, rows, mine)
            terms = self.network(
                batch,
                temperature=tau,
                hard=cfg.gumbel_hard,
                noise=(gumbel[mine], normal[mine]),
                moved=moved,
                neighbour=neighbour,
                adversary=adversary,
                elbo_to_clusters=cfg.elbo_to_clusters,
                labels=None if labels is None else labels[rows[mine]],
            )
            done = epoch * steps + step + 1  # steps taken, this one included
            if cfg.kl_warmup > 0:
                kl_weight = min(1.0, done / (cfg.kl_warmup * steps))
            loss = self._objective(terms, rows, mine, labels, kl_weight, done)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            finite, stop = self._agree(loss)
            if not finite:
                self._nonfinite(terms, epoch + 1, step + 1)
                continue
            self.optimizer.step()
            with torch.no_grad():  # summed on the device, read once per epoch
                sums += torch.stack([terms[t].sum() for t in TERMS])
            counted += len(batch)
            if progress and step % PROGRESS_EVERY == 0:  # a host read only every few steps
                usage = terms["logits"].softmax(-1).mean(0)
                bar.set_postfix(
                    loss=f"{float((sums * self._weights).sum()) / max(counted, 1):.2f}",
                    usage=f"{float(-(usage * usage.clamp_min(1e-12).log()).sum()):.2f}",
                )
            if stop:
                elapsed = time.perf_counter() - started
                position = {"next": step + 1, "counted": counted, "seconds": elapsed}
                self.save_checkpoint({**partial, **position})
                raise TrainingInterrupted(
                    self.stop_requested or "a peer", epoch + 1, step + 1, steps
                )
        named = {}
        if self.labelled_neighbours is not None:
            named["renamed_clusters"] = self.name_clusters(x)
        totals = all_sum(
            torch.cat([sums, torch.tensor([float(counted)], device=self.device)]), self.world
        )
        means = dict(zip(TERMS, (totals[:-1] / max(float(totals[-1]), 1.0)).tolist(), strict=True))
        loss = cfg.w_rec * means["rec"] + cfg.w_gauss * means["gauss"] + cfg.w_cat * means["cat"]
        extra = {"pretrain_rec": partial["pretrain_rec"]} if "pretrain_rec" in partial else {}
        if cfg.kl_warmup > 0:
            extra["kl_weight"] = kl_weight  # at the epoch's last step
        return {
            "loss": loss,
            **means,
            **extra,
            "tau": tau,
            "lr": self.optimizer.param_groups[0]["lr"],
            "skipped_steps": self.skipped_steps,
            **named,
            "seconds": time.perf_counter() - started,
        }

    def _start_epoch(self, x: torch.Tensor | ScaledRows, epoch: int) -> dict:
        """A new epoch's position and running sums (what a checkpoint saves mid-epoch). With
        pretraining, the first epoch starts with it and counts its time."""
        cfg = self.config
        partial = {
            "order": torch.randperm(len(x), generator=self.generator, device=self.device),
            "next": 0,  # the next step to take
            "sums": torch.zeros(len(TERMS), device=self.device),  # terms summed over examples
            "counted": 0,  # examples in `sums` (skipped steps are not)
            "seconds": 0.0,
        }
        if epoch == 0 and cfg.pretrain_epochs > 0:
            started = time.perf_counter()
            partial["pretrain_rec"] = pretrain(
                self.model,
                len(x),
                lambda rows: self._batch(x, rows),
                cfg.pretrain_epochs,
                cfg.batch_size,
                cfg.lr,
                cfg.seed,
            )
            share_parameters(self.model, self.world)
            partial["seconds"] = time.perf_counter() - started
        return partial

    def _views(
        self,
        x: torch.Tensor | ScaledRows,
        batch: torch.Tensor,
        rows: torch.Tensor,
        mine: torch.Tensor,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, tuple[torch.Tensor, torch.Tensor] | None]:
        """What the clustering terms compare q(y|x) of `batch` (B, D) with: a random affine
        copy (B, D), a random one of each row's neighbours (B, D), and the adversarial probe
        (B, D) with each row's step length (B,); None where the term is off. `rows` are the
        global batch's, `mine` this rank's positions in it: the draws are made for the whole
        global batch, so that every rank draws the same numbers."""
        cfg = self.config
        moved = neighbour = adversary = None
        if cfg.w_consistency > 0:
            params = augment.random_affine_params(len(rows), self.device)[mine]
            moved = augment.transform(batch, self.model.config.image_shape, params)
        if self.neighbours is not None:
            pick = torch.randint(cfg.n_neighbours, (len(rows),), device=self.device)[mine]
            neighbour = self._batch(x, self.neighbours[rows[mine], pick])
        if self.adversarial_length is not None:
            probe = torch.randn(len(rows), batch.shape[1], device=self.device)[mine]
            probe = probe * (self.probe_length / probe.norm(dim=1, keepdim=True))
            adversary = (probe, self.adversarial_length[rows[mine]])
        return moved, neighbour, adversary

    def _objective(
        self,
        terms: dict[str, torch.Tensor],
        rows: torch.Tensor,
        mine: torch.Tensor,
        labels: torch.Tensor | None,
        kl_weight: float,
        done: int,
    ) -> torch.Tensor:
        """This rank's part of the step's loss: the weighted ELBO and each other term that
        is on. `done` (steps taken, this one included) paces the neighbour term's warm-up."""
        cfg = self.config
        # Each rank's mean weighted by its share: DDP's average is the global batch's mean.
        share = len(mine) * self.world.size / len(rows)
        w_gauss, w_cat = kl_weight * cfg.w_gauss, kl_weight * cfg.w_cat
        loss = weighted_loss(terms, cfg.w_rec, w_gauss, w_cat) * share
        if cfg.w_consistency > 0:
            loss = loss + cfg.w_consistency * terms["consistency"].mean() * share
        if self.neighbours is not None:
            weight = cfg.w_neighbours * min(1.0, done / max(cfg.neighbour_warmup, 1))
            loss = loss + weight * terms["neighbour"].mean() * share
        if self.adversarial_length is not None:
            loss = loss + cfg.w_adversarial * terms["adversarial"].mean() * share
        if cfg.w_confidence > 0:
            log_q = terms["logits"].log_softmax(-1)
            entropy = -(log_q.exp() * log_q).sum(-1)
            loss = loss + cfg.w_confidence * entropy.mean() * share
        if labels is not None and cfg.w_labelled > 0:
            # The mean over the global batch's labelled rows (at least labelled_batch_size).
            known = (labels[rows] >= 0).sum()
            loss = loss + cfg.w_labelled * terms["labelled"].sum() * self.world.size / known
        if cfg.w_balance > 0:  # over this rank's part of the batch
            loss = loss + cfg.w_balance * usage_shortfall(terms["logits"])
        return loss

    def name_clusters(self, x: torch.Tensor | ScaledRows) -> int:
        """Renames the clusters so that cluster k is where class k's labelled examples'
        neighbours are (labels.cluster_order), in the parameters and in Adam's moments alike;
        returns how many clusters changed name. The cross-entropy alone can fit a lone labelled
        example into cluster k while its class gathers in another cluster (seen with one label
        per class: right clusters, wrong names); its neighbours carry no label to fit, so they
        show where the class is."""
        share_buffers(self.model, self.world)  # batch norm's statistics: the same on every rank
        self.model.eval()
        rows = self.labelled_neighbours
        with torch.no_grad():
            probabilities = torch.cat([
                self.model.cluster_logits(self._batch(x, chunk)).softmax(-1)
                for chunk in rows.flatten().split(NAMING_CHUNK)
            ])  # fmt: skip
        self.model.train()
        support = probabilities.view(*rows.shape, -1).mean(1)  # (L, K)
        classes = self.labels[self.labelled_rows]
        order = cluster_order(support.cpu().numpy(), classes.cpu().numpy())
        moved = int((order != np.arange(len(order))).sum())
        if moved:
            permute_clusters(self.model, self.optimizer, torch.as_tensor(order, device=self.device))
        return moved

    def _agree(self, loss: torch.Tensor) -> tuple[bool, bool]:
        """(every rank's loss and gradients are finite, some rank was asked to stop): one host
        sync per step (free on the CPU) and, across processes, one tiny all-reduce."""
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        finite = torch.isfinite(loss) & torch.isfinite(torch.nn.utils.get_total_norm(grads))
        stop = torch.tensor(self.stop_requested is not None, device=self.device)
        flags = all_sum(torch.stack([finite, stop]).float(), self.world).tolist()
        return flags[0] == self.world.size, flags[1] > 0

    def _nonfinite(self, terms: dict[str, torch.Tensor], epoch: int, step: int) -> None:
        """A step with a NaN/inf loss or gradient: by policy, raise NonFiniteError (stop) or
        count it as skipped (skip) until the limit."""
        self.optimizer.zero_grad(set_to_none=True)
        bad = [t for t in TERMS if not torch.isfinite(terms[t]).all()]
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
