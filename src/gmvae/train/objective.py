"""The training objective, in one place: the network's inference and generation turned into the
optimised total and a record of every term.

total = ELBO term + sum over regularisers of weight(step) * term

ELBO term: w_rec * rec + kl(step) * (w_gauss * gauss + w_cat * cat), per example, averaged,
  rec = -log p(x|z), gauss = log q(z|x,y) - log p(z|y), cat = KL(q(y|x) || p(y)), with y a
  Gumbel-Softmax sample (a labelled row takes its class), p(y) uniform or learned
  (ModelConfig.proportions) and kl(step) the KL warm-up.
Regularisers (REGULARISERS, each declared once with its weight and schedule): consistency,
  neighbour, adversarial, confidence and balance train q(y|x) to cluster; labelled fits it to
  the known classes in semi-supervised runs; start holds it to the start's clusters (a table's
  mixture or classifier, gmvae.train.pretraining) throughout training.

`Objective` is an nn.Module around the network so that DistributedDataParallel can wrap it:
every forward pass of a step (the extra ones of the consistency, neighbour and adversarial
terms too) then runs inside DDP's forward. Shapes: B rows of this process, M components (the
values of y), D features.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import nn

from gmvae.data import augment
from gmvae.data.batches import BatchSource
from gmvae.data.neighbours import NeighbourSearch, read_rows
from gmvae.errors import GMVAEError
from gmvae.model.losses import (
    gaussian_log_density,
    reconstruction_nll,
    weighted_loss,
)
from gmvae.model.network import GMVAENet, NetworkOutput, draw_noise

# The adversarial step's length scales with the distance to this neighbour, as in IMSAT: short
# in dense regions, where a cluster boundary must not pass, longer in sparse ones.
ADVERSARIAL_NEIGHBOUR = 10
# The random step that starts the search for the adversarial direction is this many times the
# mean adversarial length: IMSAT's 10 pixel units on MNIST, where that mean is 1.28, made
# scale-free. In an unbenchmarked trial a probe as short as the step learned clusters slower.
ADVERSARIAL_PROBE = 8.0
DISTANCE_CHUNK = 4096  # rows per block when measuring the adversarial lengths
# The adversarial length, as a fraction of that distance, when not set: IMSAT's for images; a
# fifth of it for tables, whose few rows put the 10th neighbour far off (on the suite's tables,
# started from their mixture, IMSAT's length moved iris's and penguins' clusters off it:
# benchmarks/results/suite/).
ADVERSARIAL_RADIUS = {"images": 0.25, "tables": 0.05}
# The consistency weight when not set, for images with labels: the labelled term alone fits q(y|x)
# to the few labelled images and the clustering terms then pull the rest back to their own
# partition; agreement between an image and its moved copies spreads each label to the images
# its class's variations reach (Fashion-MNIST with 10 labels per class:
# benchmarks/results/semi-supervised/). Without labels it bought no clear gain on MNIST
# (benchmarks/results/clustering/) and costs a forward pass per step, so it stays off there.
SEMI_SUPERVISED_CONSISTENCY = 5.0
# The start term's weight when not set, for runs that start on their inputs (tables, by default)
# or their embedding and keep that start (no --restarts). With labels the start is the
# semi-supervised mixture or the classifier that the held-out labelled rows preferred; without
# the term the clustering terms moved q(y|x) off it, mostly down. The weights 0.3, 1 and 3 tie on
# the suite's tables (benchmarks/results/semi-supervised/); 3 left the fewest seeds below a
# scikit-learn method on tables the repository does not name. Without labels the start is the
# mixture that BIC chose among its fits; without the term the clustering terms moved the
# clusters off it, below what a Gaussian mixture alone scores on tables drawn from Gaussian
# mixtures of unequal, overlapping clusters (benchmarks/results/suite/).
START_WEIGHT = {"labelled": 3.0, "unlabelled": 1.0}


@dataclass
class ObjectiveConfig:
    """What is optimised: the ELBO's weights, the Gumbel-Softmax schedule and every regulariser's
    weight and warm-up. Saved as the "objective" section of a run's config.json."""

    tau_start: float = field(default=1.0, metadata={"help": "Gumbel temperature at epoch 0"})
    tau_decay: float = field(
        default=0.013862944,
        metadata={"help": "tau = max(tau_start * exp(-tau_decay * epoch), tau_min)"},
    )
    tau_min: float = field(default=0.5, metadata={"help": "lowest Gumbel-Softmax temperature"})
    gumbel_hard: bool = field(
        default=False, metadata={"help": "straight-through hard one-hot y instead of soft samples"}
    )
    w_rec: float = field(default=1.0, metadata={"help": "weight of the reconstruction term"})
    w_gauss: float = field(default=1.0, metadata={"help": "weight of log q(z|x,y) - log p(z|y)"})
    w_cat: float = field(default=1.0, metadata={"help": "weight of KL(q(y|x) || p(y))"})
    kl_warmup: int = field(
        default=0,
        metadata={
            "help": "epochs over which the weights of the two KL terms (--w-gauss, --w-cat) "
            "rise linearly from 0 (0: full weight from the start)"
        },
    )
    elbo_to_clusters: bool = field(
        default=True,
        metadata={
            "help": "let the ELBO's gradient train q(y|x); off, q(y|x) learns from the "
            "clustering terms alone and the ELBO fits q(z|x,y), p(z|y) and p(x|z) to its clusters"
        },
    )
    w_consistency: float | None = field(
        default=None,
        metadata={
            "help": "weight of KL(q(y|x) || q(y|T(x))) for a small random affine T (unset: "
            f"{SEMI_SUPERVISED_CONSISTENCY:g} for images in semi-supervised runs, else 0; "
            "always 0 for tables)"
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
    adversarial_radius: float | None = field(
        default=None,
        metadata={
            "help": f"length of r for --w-adversarial, as a fraction of the distance from x to "
            f"its {ADVERSARIAL_NEIGHBOUR}th nearest neighbour (unset: "
            f"{ADVERSARIAL_RADIUS['images']} for images, {ADVERSARIAL_RADIUS['tables']} for "
            "tables)"
        },
    )
    w_confidence: float = field(
        default=0.0,
        metadata={"help": "weight of the entropy of q(y|x): confident cluster assignments"},
    )
    w_balance: float = field(
        default=0.0,
        metadata={
            "help": "weight of KL(batch mean of q(y|x) || p(y)): keeps every cluster in use, at "
            "the learned proportions when they are learned (log M - H(mean) when uniform)"
        },
    )
    w_start: float | None = field(
        default=None,
        metadata={
            "help": "weight of the cross-entropy from the start's cluster probabilities (the "
            "mixture of --mixture-start inputs or embedding) to q(y|x) (unset: "
            f"{START_WEIGHT['labelled']:g} with labels and {START_WEIGHT['unlabelled']:g} "
            "for tables without them, for runs so started (tables, by default) without "
            "--restarts; else 0)"
        },
    )
    w_labelled: float = field(
        default=1.0,
        metadata={
            "help": "semi-supervised: weight of -log q(y = label | x), averaged over the "
            "labelled examples of each batch"
        },
    )
    label_warmup: int = field(
        default=1,
        metadata={
            "help": "semi-supervised: epochs trained without the labels, after which the "
            "clusters are named by the labelled examples' neighbours and the labels join"
        },
    )

    def validate(self) -> None:
        weights = {f"w_{name}": getattr(self, f"w_{name}") for name in ("rec", "gauss", "cat")}
        clustering = {term.weight: getattr(self, term.weight) for term in CLUSTERING_TERMS}
        weights.update(clustering, w_labelled=self.w_labelled, w_start=self.w_start)
        weights = {name: w for name, w in weights.items() if w is not None}  # unset: by rule
        if not all(math.isfinite(w) and w >= 0 for w in weights.values()):
            raise GMVAEError(f"{', '.join(weights)} must be finite and at least 0")
        if not self.elbo_to_clusters and not any(clustering.values()):
            raise GMVAEError(
                "with elbo_to_clusters off, q(y|x) needs a clustering term to learn from: "
                f"set one of {', '.join(clustering)}"
            )
        radius = self.adversarial_radius
        if radius is not None and not (math.isfinite(radius) and radius > 0):
            raise GMVAEError("adversarial_radius must be positive")
        if not (math.isfinite(self.tau_decay) and self.tau_decay >= 0):
            raise GMVAEError("tau_decay must be at least 0")
        if min(self.neighbour_warmup, self.label_warmup, self.kl_warmup) < 0:
            raise GMVAEError("neighbour_warmup, label_warmup and kl_warmup must be at least 0")
        if self.n_neighbours < 1:
            raise GMVAEError("n_neighbours must be at least 1")
        if not all(math.isfinite(t) and t > 0 for t in (self.tau_start, self.tau_min)):
            raise GMVAEError("tau_start and tau_min must be positive")

    def for_inputs(
        self, images: bool, labelled: bool = False, holds_start: bool = False
    ) -> ObjectiveConfig:
        """These settings for images or tables, with or without labels: an unset
        adversarial_radius set by the rule (ADVERSARIAL_RADIUS); an unset consistency weight
        SEMI_SUPERVISED_CONSISTENCY for `labelled` images, else 0; no consistency term for
        tables (there is no image to move); an unset start weight START_WEIGHT's when the run
        `holds_start` (it starts on its inputs and keeps that start) and is `labelled` or a
        table, else 0."""
        radius = self.adversarial_radius
        if radius is None:
            radius = ADVERSARIAL_RADIUS["images" if images else "tables"]
        consistency = self.w_consistency
        if consistency is None:
            consistency = SEMI_SUPERVISED_CONSISTENCY if labelled else 0.0
        consistency = consistency if images else 0.0
        start = self.w_start
        if start is None:
            # Without labels the weight was measured on tables only: images keep theirs free.
            held = holds_start and (labelled or not images)
            start = START_WEIGHT["labelled" if labelled else "unlabelled"] if held else 0.0
        return replace(self, adversarial_radius=radius, w_consistency=consistency, w_start=start)

    def temperature(self, epoch: int) -> float:
        """The reference schedule: tau = max(tau_start * exp(-tau_decay * epoch), tau_min)."""
        return max(self.tau_start * math.exp(-self.tau_decay * epoch), self.tau_min)

    def uses_labels(self, epoch: int) -> bool:
        """Whether the labelled term is on in `epoch` (0-based): the first label_warmup epochs
        learn clusters from the data alone, which are then named before the labels can bend
        them."""
        return epoch >= self.label_warmup


@dataclass(frozen=True)
class Progress:
    """Where a step is: its epoch (0-based), the steps taken with it included, and the steps
    an epoch has. Warm-ups read it."""

    epoch: int
    done: int
    steps_per_epoch: int


@dataclass
class StepInputs:
    """One process's part of a step: x (B, D), the global batch's row indices `rows` (G,), this
    process's positions in it `mine` (B,), the global batch's classes `labels` (G,) (-1
    unknown; None when the labelled term is off) and the world's size."""

    x: torch.Tensor
    rows: torch.Tensor
    mine: torch.Tensor
    labels: torch.Tensor | None
    world_size: int

    @property
    def share(self) -> float:
        """This process's share of the global batch, times the world's size: with each
        process's mean weighted by it, DDP's average is the global batch's mean."""
        return len(self.mine) * self.world_size / len(self.rows)


@dataclass
class ObjectiveOutput:
    """loss: this process's part of the optimised total (scalar). sums: every term summed over
    this process's B rows (a batch-level term: its value times B), "loss" included, for the
    epoch's record. logits (B, M) of q(y|x)."""

    loss: torch.Tensor
    sums: dict[str, torch.Tensor]
    logits: torch.Tensor


@dataclass(frozen=True)
class Regulariser:
    """A term added to the ELBO: `value(objective, inputs, out)` is per row (B,) when
    `per_row`, else one number for this process's rows; `weight` names its ObjectiveConfig
    field; `schedule(config, progress)` scales the weight (warm-ups)."""

    name: str
    weight: str
    value: Callable[[Objective, StepInputs, NetworkOutput], torch.Tensor]
    per_row: bool = True
    schedule: Callable[[ObjectiveConfig, Progress], float] = lambda config, progress: 1.0


def change_of_clusters(net: GMVAENet, target: torch.Tensor, moved: torch.Tensor) -> torch.Tensor:
    """KL(q || q(y|moved)) per row (B,), for `target` = log q (B, M), held fixed, and moved
    rows (B, D)."""
    moved_log_q = F.log_softmax(net.component_logits(moved), -1)
    return (target.exp() * (target - moved_log_q)).sum(-1)


def _moved_copy_change(
    objective: Objective, inputs: StepInputs, out: NetworkOutput
) -> torch.Tensor:
    """KL(q(y|x) || q(y|T(x))) for a random small affine T, q(y|x) the fixed target."""
    net = objective.network
    params = augment.random_affine_params(len(inputs.rows), inputs.x.device)[inputs.mine]
    moved = augment.transform(inputs.x, net.config.image_shape, params)
    return change_of_clusters(net, F.log_softmax(out.logits.detach(), -1), moved)


def _neighbour_disagreement(
    objective: Objective, inputs: StepInputs, out: NetworkOutput
) -> torch.Tensor:
    """-log sum_y q(y|x) q(y|x') for x' a random one of x's nearest neighbours: small when
    both are confidently in the same cluster."""
    n = objective.config.n_neighbours
    pick = torch.randint(n, (len(inputs.rows),), device=inputs.x.device)[inputs.mine]
    neighbour = objective.source.read(objective.neighbours[inputs.rows[inputs.mine], pick])
    log_q = F.log_softmax(out.logits, -1)
    log_q_neighbour = F.log_softmax(objective.network.component_logits(neighbour), -1)
    return -torch.logsumexp(log_q + log_q_neighbour, -1)


def _adversarial_change(
    objective: Objective, inputs: StepInputs, out: NetworkOutput
) -> torch.Tensor:
    """KL(q(y|x) || q(y|x + r)) for r of each row's adversarial length in the direction where
    q(y|x) changes fastest, found by one step of power iteration from a random probe (virtual
    adversarial training, as in IMSAT); q(y|x) is the fixed target."""
    x, net = inputs.x, objective.network
    probe = torch.randn(len(inputs.rows), x.shape[1], device=x.device)[inputs.mine]
    probe = probe * (objective.probe_length / probe.norm(dim=1, keepdim=True))
    length = objective.adversarial_length[inputs.rows[inputs.mine]]
    target = F.log_softmax(out.logits.detach(), -1)
    probe = probe.detach().requires_grad_()
    (grad,) = torch.autograd.grad(change_of_clusters(net, target, x + probe).sum(), probe)
    step = grad * (length / grad.norm(dim=-1).clamp_min(1e-12))[:, None]
    return change_of_clusters(net, target, x + step)


def _entropy(objective: Objective, inputs: StepInputs, out: NetworkOutput) -> torch.Tensor:
    """H(q(y|x)) per row: small when the row is confidently in one cluster."""
    log_q = out.logits.log_softmax(-1)
    return -(log_q.exp() * log_q).sum(-1)


def _labelled_cross_entropy(
    objective: Objective, inputs: StepInputs, out: NetworkOutput
) -> torch.Tensor:
    """-log q(y = label | x) summed over this process's labelled rows, over the global batch's
    labelled rows (at least labelled_batch_size) times the world's size: DDP's average is the
    mean over the global batch's labelled rows."""
    labels = inputs.labels[inputs.mine]
    nll = F.cross_entropy(out.logits, labels.clamp_min(0), reduction="none")
    nll = torch.where(labels >= 0, nll, torch.zeros_like(nll))
    return nll.sum() * inputs.world_size / (inputs.labels >= 0).sum()


def _start_cross_entropy(
    objective: Objective, inputs: StepInputs, out: NetworkOutput
) -> torch.Tensor:
    """-sum_y s(y|x) log q(y|x) per row (B,), s the start's cluster probabilities of the row
    (Objective.start_probabilities)."""
    start = objective.start_probabilities[inputs.rows[inputs.mine]]
    return -(start * F.log_softmax(out.logits, -1)).sum(-1)


def usage_shortfall(logits: torch.Tensor, log_target: torch.Tensor | None = None) -> torch.Tensor:
    """KL(u || target) for u the mean over the rows of q(y|x): 0 when the rows use the clusters
    in the target's proportions. Without a target (uniform): log M - H(u), log M when they use
    one cluster. logits (B, M), log_target (M,) -> scalar."""
    usage = logits.softmax(-1).mean(0)
    log_usage = usage.clamp_min(1e-12).log()
    if log_target is None:
        return math.log(logits.shape[-1]) + (usage * log_usage).sum()
    return (usage * (log_usage - log_target)).sum()


def _balance(objective: Objective, inputs: StepInputs, out: NetworkOutput) -> torch.Tensor:
    """usage_shortfall over this process's rows, aimed at the learned p(y) when there is one,
    held fixed: p(y) learns from the ELBO alone."""
    net = objective.network
    target = net.log_proportions().detach() if net.learns_proportions() else None
    return usage_shortfall(out.logits, target)


def _neighbour_warmup(config: ObjectiveConfig, progress: Progress) -> float:
    # At full weight from the first step, the neighbour term can pull every row into one cluster.
    return min(1.0, progress.done / max(config.neighbour_warmup, 1))


LABELLED_TERM = Regulariser("labelled", "w_labelled", _labelled_cross_entropy, per_row=False)
CLUSTERING_TERMS = (
    Regulariser("consistency", "w_consistency", _moved_copy_change),
    Regulariser("neighbour", "w_neighbours", _neighbour_disagreement, schedule=_neighbour_warmup),
    Regulariser("adversarial", "w_adversarial", _adversarial_change),
    Regulariser("confidence", "w_confidence", _entropy),
    Regulariser("balance", "w_balance", _balance, per_row=False),
)
# In the order they are computed and added. The order of the computations fixes the order in
# which autograd sums their gradients into q(y|x)'s logits, so it is kept as it always was:
# the same seed gives the same numbers, to the last bit, as before the terms had one home
# (tests/test_identity.py).
START_TERM = Regulariser("start", "w_start", _start_cross_entropy)
REGULARISERS = (LABELLED_TERM, *CLUSTERING_TERMS, START_TERM)
# Every term an epoch's record can hold, besides the total "loss" and "neg_elbo".
TERM_NAMES = ("rec", "gauss", "cat", *(term.name for term in REGULARISERS))


def kl_weight(config: ObjectiveConfig, progress: Progress) -> float:
    """The KL warm-up: the weight of gauss and cat rises linearly over kl_warmup epochs."""
    if config.kl_warmup == 0:
        return 1.0
    return min(1.0, progress.done / (config.kl_warmup * progress.steps_per_epoch))


class Objective(nn.Module):
    """The network and the terms it is trained by. `prepare(source, seed)` sets up what the
    terms need before training (neighbour table, adversarial lengths); `forward(inputs,
    progress)` gives one step's ObjectiveOutput."""

    def __init__(self, network: GMVAENet, config: ObjectiveConfig):
        super().__init__()
        config.validate()
        images = network.config.image_shape is not None
        if not images and (config.w_consistency or 0.0) > 0:
            raise GMVAEError("the consistency term moves images; tables have none to move")
        self.network = network
        self.config = config.for_inputs(images)
        self.source: BatchSource | None = None
        self.neighbours: torch.Tensor | None = None  # (N, n_neighbours) row indices
        self.adversarial_length: torch.Tensor | None = None  # (N,) length of r per row
        self.probe_length = 0.0  # of the random step that starts the search for r
        # (N, M): the start's cluster probabilities of every row, held by the start term;
        # None until a start on the inputs sets them. With labels their column k is class k,
        # as the labels are, so renaming the network's clusters (gmvae.train.naming) leaves
        # them as they are.
        self.start_probabilities: torch.Tensor | None = None

    def terms_on(self, labelled: bool) -> list[Regulariser]:
        """The regularisers with a positive weight; the labelled one only in a `labelled`
        step, the start term only once there are start probabilities."""
        on = [term for term in REGULARISERS if getattr(self.config, term.weight) > 0]
        if self.start_probabilities is None:
            on = [term for term in on if term is not START_TERM]
        return on if labelled else [term for term in on if term is not LABELLED_TERM]

    def recorded_terms(self, labelled: bool) -> list[str]:
        """The names of ObjectiveOutput.sums in a step (`labelled`: with the labelled term)."""
        return ["rec", "gauss", "cat", *(t.name for t in self.terms_on(labelled)), "loss"]

    @staticmethod
    def summarise(means: dict[str, float]) -> dict[str, float]:
        """An epoch's record from the terms' means over its rows: those, and the negative
        ELBO."""
        return {**means, "neg_elbo": means["rec"] + means["gauss"] + means["cat"]}

    def neighbours_wanted(self, n_rows: int) -> int:
        """How many nearest neighbours of each row the terms that are on need (0: none)."""
        cfg = self.config
        wanted = [cfg.n_neighbours] if cfg.w_neighbours > 0 else []
        if cfg.w_adversarial > 0:
            wanted.append(self._adversarial_neighbour(n_rows))
        return max(wanted, default=0)

    @staticmethod
    def _adversarial_neighbour(n_rows: int) -> int:
        # Fewer rows than IMSAT's neighbour: the farthest there is.
        return min(ADVERSARIAL_NEIGHBOUR, max(n_rows - 1, 1))

    def prepare(self, source: BatchSource, search: NeighbourSearch) -> None:
        """Once before training, and again (to the same result) on resume: the neighbour table
        and the adversarial lengths, from `search` over `source`'s rows."""
        cfg = self.config
        self.source = source
        if cfg.w_neighbours > 0:
            self.neighbours = search.nearest(cfg.n_neighbours)
        if cfg.w_adversarial > 0:
            n_far = self._adversarial_neighbour(len(source))
            far = search.nearest(n_far)[:, n_far - 1].cpu()
            distances = [
                (read_rows(source.x, rows) - read_rows(source.x, far[rows])).norm(dim=1)
                for rows in torch.arange(len(source)).split(DISTANCE_CHUNK)
            ]
            device = source.device
            self.adversarial_length = cfg.adversarial_radius * torch.cat(distances).to(device)
            self.probe_length = ADVERSARIAL_PROBE * float(self.adversarial_length.mean())

    def schedule(self, progress: Progress) -> dict[str, float]:
        """The scheduled values at a step: the temperature, and the warm-ups that are on."""
        cfg = self.config
        values = {"tau": cfg.temperature(progress.epoch)}
        if cfg.kl_warmup > 0:
            values["kl_weight"] = kl_weight(cfg, progress)
        if cfg.w_neighbours > 0:
            values["neighbour_weight"] = _neighbour_warmup(cfg, progress)
        return values

    def forward(self, inputs: StepInputs, progress: Progress) -> ObjectiveOutput:
        cfg, net, x = self.config, self.network, inputs.x
        # Noise for the whole global batch, the same on every process; each takes its slice.
        gumbel, normal = draw_noise(len(inputs.rows), net.config, x.device)
        labels = None if inputs.labels is None else inputs.labels[inputs.mine]
        out = net(
            x,
            temperature=cfg.temperature(progress.epoch),
            hard=cfg.gumbel_hard,
            noise=(gumbel[inputs.mine], normal[inputs.mine]),
            labels=labels,
            detach_clusters=not cfg.elbo_to_clusters,
        )
        elbo_logits = out.logits if cfg.elbo_to_clusters else out.logits.detach()
        cat = net.cluster_kl(elbo_logits)
        if labels is not None:  # a labelled row's y is its class: KL(one-hot || p(y))
            # Held fixed for a learned p(y): the labelled rows added to every batch would pull
            # it towards the labelled classes' mix.
            labelled_cat = (
                math.log(net.config.n_components)
                if not net.learns_proportions()
                else -net.log_proportions().detach()[labels.clamp_min(0)]
            )
            cat = torch.where(labels >= 0, labelled_cat, cat)
        elbo = {
            "rec": reconstruction_nll(x, out.decoded, net.config.likelihood),
            "gauss": gaussian_log_density(out.z, out.z_mean, out.z_var)
            - gaussian_log_density(out.z, out.prior_mean, out.prior_var),
            "cat": cat,
        }
        terms = self.terms_on(labelled=labels is not None)
        values = {term.name: term.value(self, inputs, out) for term in terms}
        kl = kl_weight(cfg, progress)
        loss = weighted_loss(elbo, cfg.w_rec, kl * cfg.w_gauss, kl * cfg.w_cat) * inputs.share
        for term in terms:
            weight = getattr(cfg, term.weight) * term.schedule(cfg, progress)
            value = values[term.name]
            loss = loss + (weight * value.mean() * inputs.share if term.per_row else weight * value)
        if net.proportion_logits is not None and not net.learns_proportions():
            # p(y) held equal (proportions "auto" where no start chose to learn it): its logits
            # are in no term, and DDP needs a gradient, here an exact 0, for every parameter.
            loss = loss + 0.0 * net.proportion_logits.sum()
        with torch.no_grad():
            sums = {name: value.sum() for name, value in elbo.items()}
            for term in terms:
                value = values[term.name]
                sums[term.name] = value.sum() if term.per_row else value * len(x)
            sums["loss"] = loss * len(inputs.rows) / inputs.world_size
        return ObjectiveOutput(loss=loss, sums=sums, logits=out.logits)
