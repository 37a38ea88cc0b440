r"""UWMMSE off its training draw: unseen topologies, another path loss, i.i.d. Rayleigh channels.

The power-allocation study (``examples/power_allocation_study.py``) trains UWMMSE (WMMSE
unfolded to K = 4 layers with a learned correction of its MSE weights,
:class:`~lightning_unfold.algorithms.power.UWMMSECorrection`) on the channels of *one*
topology and tests it there. Here seven training recipes are evaluated, **without retraining**,
on channel models none of them was trained on, each against WMMSE run for as many iterations as
UWMMSE has layers (WMMSE-k at every k = 1..K) and against WMMSE-100, on the same channels:

==========================  ==================================================================
``one_topology``            the power study's recipe: fresh channels of topology 0 every batch
``topologies``              a fresh topology for every channel
                            (``InterferenceChannel(topology="random")``)
``topologies_every_layer``  the same channels, trained on the sum-rate of every layer
                            (``formulation="multi_iteration"``, weights log(1 + k)) instead of
                            the last layer's alone
``topologies_wide``         the same channels, a network twice as wide trained twice as long
``rayleigh``                i.i.d. Rayleigh channels (``channel="rayleigh"``), no geometry
``mixed``                   both: every channel i.i.d. Rayleigh with probability 0.2, else of a
                            fresh topology (``channel="mixed", topology="random"``); the
                            every-layer loss, the ``topologies_wide`` network and length
``mixed_long``              the same with probability 0.1, trained four times as long as
                            ``topologies`` (twice as long as ``mixed``)
==========================  ==================================================================

Evaluation channel models (M = 20, noise :math:`10^{-9.1}`, :math:`P_{\max} = 1`):
``topology_0`` (the one-topology recipe's training topology), ``topology_1`` … ``topology_5``
(unseen by every recipe), ``path_loss_3`` (topology 1 with path-loss exponent 3 instead of 2.2)
and ``rayleigh``. Every recipe is trained from ``train_seeds`` seeds (network initialisation and
training channels); the table gives the mean over seeds and the spread.

Every model uses the bounded correction :math:`w = \max(a w_{\text{class}} + b,\ \varepsilon a
w_{\text{class}})` (:meth:`~lightning_unfold.algorithms.power.WMMSE.corrected_step`): with the
unbounded form the ``rayleigh`` recipe switched every user off from layer 1 on (sum-rate 0, zero
gradient).

Run::

    python examples/uwmmse_generalisation_study.py --preset cpu --out runs/uwmmse_gen
    python examples/uwmmse_generalisation_study.py --preset cpu --recipes topologies_wide --out DIR
    python examples/uwmmse_generalisation_study.py --preset tiny --out /tmp/x   # seconds (tested)

Writes ``DIR/results.json`` = ``{"recipes": {recipe: {"models": [...], "eval": {channel model:
{"uwmmse": [layers 0..K, mean over seeds], "uwmmse_per_seed": [[...], ...], "wmmse": [iterations
0..K], "wmmse_100", "percent_of_wmmse_100": [per seed], "at_least_wmmse_k": bool}}}},
"summary": {...}}``, ``DIR/extras.json`` (configuration, training times, wall time) and
``DIR/generalisation.png`` (sum-rate per layer, one panel per channel model).
"""

# %%
from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn

from lightning_unfold.algorithms.power import WMMSE, InterferenceChannel
from lightning_unfold.core.unfolded import ClassicalSolver
from lightning_unfold.training import (
    KeepBest,
    LRScheduler,
    SyntheticDataModule,
    UnfoldedModule,
    layer_metrics,
)
from lightning_unfold.training.study import (
    fit_timed,
    flush_denormals,
    parse_study_args,
    study_parser,
    write_json,
)


@dataclass(frozen=True)
class Recipe:
    """How one model is trained: the channel model (``InterferenceChannel`` arguments besides M;
    a fixed topology is ``Preset.train_topology``), the loss formulation, and the network width
    and number of steps as multiples of the preset's."""

    channel: dict[str, Any] = field(default_factory=dict)
    formulation: str = "end_to_end"
    width: int = 1
    length: int = 1


RECIPES: dict[str, Recipe] = {
    "one_topology": Recipe(),
    "topologies": Recipe({"topology": "random"}),
    "topologies_every_layer": Recipe({"topology": "random"}, "multi_iteration"),
    "topologies_wide": Recipe({"topology": "random"}, width=2, length=2),
    "rayleigh": Recipe({"channel": "rayleigh"}),
    "mixed": Recipe(
        {"channel": "mixed", "topology": "random", "rayleigh_fraction": 0.2},
        "multi_iteration",
        width=2,
        length=2,
    ),
    "mixed_long": Recipe(
        {"channel": "mixed", "topology": "random", "rayleigh_fraction": 0.1},
        "multi_iteration",
        width=2,
        length=4,
    ),
}


@dataclass(frozen=True)
class Preset:
    M: int = 20
    depth: int = 4
    hidden: int = 8  #: UWMMSE's graph-network width (the power study's)
    steps: int = 3000  #: optimizer steps per model, fresh channels every batch
    batch: int = 64
    lr: float = 3e-3
    lr_floor: float = 0.02  #: cosine decay from ``lr`` to ``lr * lr_floor``
    clip: float = 1.0
    val_every: int = 250  #: the best validated state is kept (the initial model scored too)
    n_val: int = 512
    n_eval: int = 2000  #: held-out channels per evaluation channel model (seed stream 3)
    train_seeds: tuple[int, ...] = (0, 1, 2)
    unseen_topologies: tuple[int, ...] = (1, 2, 3, 4, 5)
    train_topology: int = 0
    path_loss: float = 3.0  #: the other path-loss exponent, on the first unseen topology
    recipes: tuple[str, ...] = tuple(RECIPES)


PRESETS: dict[str, Preset] = {
    "tiny": Preset(
        hidden=4,
        steps=6,
        batch=16,
        val_every=3,
        n_val=32,
        n_eval=64,
        train_seeds=(0,),
        unseen_topologies=(1,),
    ),
    "cpu": Preset(),
}

_TEST = 3  # seed stream of held-out channels (SyntheticDataModule: 1 train, 2 val, 3 test)


def training_problem(recipe: str, cfg: Preset) -> InterferenceChannel:
    """The channel model a recipe trains on."""
    if recipe not in RECIPES:
        raise ValueError(f"Unknown recipe {recipe!r}; valid: {list(RECIPES)}.")
    return InterferenceChannel(M=cfg.M, seed=cfg.train_topology, **RECIPES[recipe].channel)


def evaluation_problems(cfg: Preset) -> dict[str, InterferenceChannel]:
    """The channel models every recipe is tested on, unchanged."""
    probs = {
        f"topology_{cfg.train_topology}": InterferenceChannel(M=cfg.M, seed=cfg.train_topology)
    }
    probs.update(
        {f"topology_{s}": InterferenceChannel(M=cfg.M, seed=s) for s in cfg.unseen_topologies}
    )
    first = cfg.unseen_topologies[0]
    probs[f"path_loss_{cfg.path_loss:g}"] = InterferenceChannel(
        M=cfg.M, seed=first, path_loss=cfg.path_loss
    )
    probs["rayleigh"] = InterferenceChannel(M=cfg.M, channel="rayleigh")
    return probs


# %% [markdown]
# ## Training: the power study's recipe, on each recipe's channels


# %%
def train(
    prob: InterferenceChannel, cfg: Preset, seed: int, recipe: Recipe | None = None
) -> tuple[UnfoldedModule, float]:
    """UWMMSE trained unsupervised on the negative sum-rate of the last layer (or of every layer,
    ``formulation="multi_iteration"``): Adam, cosine
    learning rate, gradient clipping, the best validated state kept (KeepBest, the untrained
    model = WMMSE-K scored too). ``seed`` sets the network's initialisation and the training
    and validation channels."""
    recipe = recipe or Recipe()
    steps = cfg.steps * recipe.length
    L.seed_everything(seed, workers=False, verbose=False)
    module = UnfoldedModule(
        prob,
        paradigm="correction",
        depth=cfg.depth,
        hidden=cfg.hidden * recipe.width,
        supervision="unsupervised",
        formulation=recipe.formulation,
        lr=cfg.lr,
        scheduler=LRScheduler("cosine", steps=steps, floor=cfg.lr_floor),
    )
    data = SyntheticDataModule(
        prob, batch_size=cfg.batch, train_batches=steps, val_size=cfg.n_val, seed=seed
    )
    clock = fit_timed(
        module,
        data,
        steps,
        callbacks=[KeepBest()],
        limit_val_batches=None,
        val_check_interval=min(cfg.val_every, steps),
        gradient_clip_val=cfg.clip,
    )
    return module.eval(), clock.wall_s


# %% [markdown]
# ## Evaluation against WMMSE-k on the same channels


# %%
def sum_rates(model: nn.Module, prob: InterferenceChannel, x: Tensor, K: int) -> list[float]:
    """Mean sum-rate (bit/s/Hz) at layers 0..K."""
    return layer_metrics(model, prob, x, torch.zeros(x.shape[:2]), depth=K, metrics=["sum_rate"])[
        "sum_rate"
    ]


@torch.no_grad()
def baselines(probs: dict[str, InterferenceChannel], cfg: Preset) -> dict[str, Any]:
    """Per channel model: its held-out channels, WMMSE-k for k = 0..K and WMMSE-100 (float64)."""
    out: dict[str, Any] = {}
    for name, prob in probs.items():
        x, _ = prob.sample(cfg.n_eval, seed=(_TEST, 0))
        solver = ClassicalSolver(WMMSE(), prob, 100, dtype=torch.float64)
        wm = sum_rates(solver, prob, x.double(), 100)
        out[name] = {"x": x, "wmmse": wm[: cfg.depth + 1], "wmmse_100": wm[100]}
    return out


def evaluate(
    models: Sequence[nn.Module],
    probs: dict[str, InterferenceChannel],
    base: dict[str, Any],
    cfg: Preset,
) -> dict[str, Any]:
    """Per channel model: WMMSE-k, WMMSE-100 and each model's curve on the same channels."""
    K = cfg.depth
    out: dict[str, Any] = {}
    for name, prob in probs.items():
        wm, w100 = base[name]["wmmse"], base[name]["wmmse_100"]
        per_seed = [sum_rates(m, prob, base[name]["x"], K) for m in models]
        out[name] = {
            "wmmse": wm,
            "wmmse_100": w100,
            "uwmmse": [statistics.fmean(c[k] for c in per_seed) for k in range(K + 1)],
            "uwmmse_per_seed": per_seed,
            "percent_of_wmmse_100": [100.0 * c[K] / w100 for c in per_seed],
            "percent_of_wmmse_k": [100.0 * c[K] / wm[K] for c in per_seed],
            # every seed's model at least WMMSE-k at every layer k = 1..K
            "at_least_wmmse_k": all(c[k] >= wm[k] for c in per_seed for k in range(1, K + 1)),
            "worst_layer_margin": min(c[k] - wm[k] for c in per_seed for k in range(1, K + 1)),
        }
    return out


def run(cfg: Preset, out: Path) -> dict[str, Any]:
    wall = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    probs = evaluation_problems(cfg)
    base = baselines(probs, cfg)
    recipes: dict[str, Any] = {}
    train_s: dict[str, list[float]] = {}
    with flush_denormals():  # float32 WMMSE switches users off through subnormal numbers
        for recipe in cfg.recipes:
            prob = training_problem(recipe, cfg)
            models, seconds = [], []
            for seed in cfg.train_seeds:
                module, sec = train(prob, cfg, seed, RECIPES[recipe])
                models.append(module.model)
                seconds.append(sec)
                print(f"{recipe:13s} seed {seed}: trained in {sec:.0f} s", flush=True)
            recipes[recipe] = {
                "problem": prob.to_config(),
                "eval": evaluate(models, probs, base, cfg),
            }
            train_s[recipe] = seconds
            for name, entry in recipes[recipe]["eval"].items():
                pct = entry["percent_of_wmmse_100"]
                print(
                    f"  {name:12s} UWMMSE {entry['uwmmse'][-1]:7.2f}  WMMSE-{cfg.depth} "
                    f"{entry['wmmse'][-1]:7.2f}  WMMSE-100 {entry['wmmse_100']:7.2f}  "
                    f"{statistics.fmean(pct):5.1f} % ({min(pct):.1f}–{max(pct):.1f})  "
                    f">= WMMSE-k every layer: {entry['at_least_wmmse_k']}",
                    flush=True,
                )
    results = {"recipes": recipes, "summary": summary(recipes, cfg)}
    write_json(out, "results.json", results)
    extras = {
        "config": asdict(cfg),
        "train_s": train_s,
        "threads": torch.get_num_threads(),
        "wall_s": time.perf_counter() - wall,
    }
    write_json(out, "extras.json", extras)
    plot(results, cfg, out / "generalisation.png")
    return {"results": results, "extras": extras}


def summary(recipes: dict[str, Any], cfg: Preset) -> dict[str, Any]:
    """The figures the docs quote: per recipe, the mean (over unseen topologies and seeds) and
    the worst per-seed percentage of WMMSE-100 on unseen geometric topologies, and whether the
    model is at least WMMSE-k at every layer on every channel model."""
    unseen = [f"topology_{s}" for s in cfg.unseen_topologies]
    out: dict[str, Any] = {}
    for recipe, entry in recipes.items():
        ev = entry["eval"]
        pcts = [p for name in unseen for p in ev[name]["percent_of_wmmse_100"]]
        out[recipe] = {
            "unseen_percent_mean": statistics.fmean(pcts),
            "unseen_percent_min": min(pcts),
            "at_least_wmmse_k_everywhere": all(e["at_least_wmmse_k"] for e in ev.values()),
            "channel_models_below_wmmse_k": [n for n, e in ev.items() if not e["at_least_wmmse_k"]],
        }
    return out


def plot(results: dict[str, Any], cfg: Preset, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(next(iter(results["recipes"].values()))["eval"])
    cols = 4
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    layers = list(range(1, cfg.depth + 1))
    colors = {
        "one_topology": "tab:red",
        "topologies": "tab:green",
        "topologies_every_layer": "tab:olive",
        "topologies_wide": "tab:cyan",
        "rayleigh": "tab:purple",
        "mixed": "tab:orange",
        "mixed_long": "tab:brown",
    }
    for ax, name in zip(axes.flat, names, strict=False):
        first = next(iter(results["recipes"].values()))["eval"][name]
        ax.plot(layers, first["wmmse"][1:], "k--", marker="s", label="WMMSE-k")
        ax.axhline(first["wmmse_100"], color="grey", ls=":", label="WMMSE-100")
        for recipe, entry in results["recipes"].items():
            ax.plot(
                layers,
                entry["eval"][name]["uwmmse"][1:],
                marker="o",
                color=colors[recipe],
                label=f"UWMMSE ({recipe})",
            )
        ax.set_title(name)
        ax.set_xticks(layers)
        ax.set_xlabel("layer / iteration k")
        ax.set_ylabel("sum-rate (bit/s/Hz)")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = study_parser(__doc__, PRESETS, out="runs/uwmmse_generalisation")
    parser.add_argument(
        "--recipes",
        nargs="+",
        choices=list(RECIPES),
        default=None,
        help="train and evaluate only these recipes (default: all)",
    )
    args = parse_study_args(parser, argv)
    cfg = PRESETS[args.preset]
    if args.recipes:
        cfg = replace(cfg, recipes=tuple(args.recipes))
    report = run(cfg, args.out)
    for recipe, s in report["results"]["summary"].items():
        print(
            f"{recipe:13s} unseen topologies {s['unseen_percent_mean']:.1f} % of WMMSE-100 "
            f"(worst seed and topology {s['unseen_percent_min']:.1f} %); >= WMMSE-k at every "
            f"layer on every channel model: {s['at_least_wmmse_k_everywhere']}"
        )
    print(f"wall {report['extras']['wall_s']:.0f} s")
    return report


if __name__ == "__main__":
    main()
