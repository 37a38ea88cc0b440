r"""Power allocation: WMMSE unfolded four ways, UWMMSE, and size generalisation.

The Unrolled-WMMSE protocol (Chowdhury et al. 2021): M = 20 transmitter–receiver pairs, one
topology per seed, Rayleigh fading per channel realisation, noise power :math:`10^{-9.1}`,
:math:`P_{\max} = 1` (:class:`~lightning_unfold.algorithms.power.InterferenceChannel`). WMMSE
(:class:`~lightning_unfold.algorithms.power.WMMSE`) is unfolded to K = 4 layers and every model is
trained *unsupervised* on the negative sum-rate:

========================  ==============================================================
``full_power``            :math:`v = \sqrt{P_{\max}}` for every user
``wmmse_4``, ``wmmse_100`` the classical solver, 4 and 100 iterations
``hyperparameters``       learned relaxation :math:`\gamma_k` of the v-update per layer
``objective``             learned per-user weights :math:`\alpha^{(k)}` of the weighted sum-rate
``correction``            **UWMMSE**: :math:`w = \max(a\odot w_{\text{class}} + b, \varepsilon a\odot
                          w_{\text{class}})`, (a, b) from a graph net
``inductive_bias``        a graph network per layer that outputs the next (u, w, v)
``black_box``             a permutation-equivariant graph network H → v of comparable size
========================  ==============================================================

First the protocol's reference figures are reproduced with the classical solver (five topologies,
seeds 0–4; full power, WMMSE-4, WMMSE-100). Then the models are trained on topology 0 (``cpu``) or
on each of the five (``full``, results averaged) and evaluated on held-out channels of the same
topology; finally the M = 20 models run unchanged on M = 10 and M = 30 networks. How UWMMSE fares
on unseen topologies, another path loss and i.i.d. Rayleigh channels, trained on one topology or
on a topology per channel: ``examples/uwmmse_generalisation_study.py``.

Run::

    python examples/power_allocation_study.py --preset cpu --out results/power_cpu
    python examples/power_allocation_study.py --preset full --out results/power_full
    python examples/power_allocation_study.py --preset tiny --out /tmp/x   # seconds (tested)
    python examples/power_allocation_study.py --preset cpu --timing-device cuda --out results/power_gpu
    # ^ trains on the CPU, times the latency table on a GPU (synchronised; not run on CI)

``--out DIR`` writes ``DIR/results.json`` = ``{"methods": {name: {"sum_rate": [layers 0..K],
"params", "infer_ms", "train_s"}}, "size_generalisation": {"10": {name: {"sum_rate": [...]}},
"30": {...}}}``, ``DIR/extras.json`` (configuration, the reference figures per topology, the
latency table, wall time) and ``DIR/sum_rate_vs_layer.png``. ``infer_ms`` is the median wall time
of one inference call (``predict``: the final estimate, no trajectory kept — storing WMMSE-100's
hundred iterates would cost more than computing them) on the same batch of ``timing_batch``
channels, same device, methods interleaved in one run
(:func:`~lightning_unfold.training.study.median_time`), in inference mode, with subnormal floats
flushed (:func:`~lightning_unfold.training.study.flush_denormals`: float32 WMMSE passes through
them and x86 CPUs compute on them far more slowly); ``extras.json`` adds the median process CPU
time per call, which a loaded machine does not inflate, the paired per-round speed-up, a plain
PyTorch WMMSE-100 (:func:`bare_wmmse`, ``wmmse_100_bare``) timed alongside, the same table at
every ``timing_batches`` size (``latency_by_batch``) and one timing with subnormals kept
(``latency_subnormals_kept``). Training uses a cosine-decaying learning
rate and keeps the best validated state, the untrained model (= WMMSE-4 for most paradigms)
scored too.
"""

# %%
from __future__ import annotations

import argparse
import copy
import math
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn

from lightning_unfold.algorithms.power import WMMSE, InterferenceChannel, full_power, sum_rate
from lightning_unfold.core.unfolded import ClassicalSolver
from lightning_unfold.training import (
    KeepBest,
    LRScheduler,
    SyntheticDataModule,
    UnfoldedModule,
    layer_metrics,
)
from lightning_unfold.training.study import (
    count_parameters,
    fit_timed,
    flush_denormals,
    median_time,
    write_json,
)

LEARNED = ("hyperparameters", "objective", "correction", "inductive_bias", "black_box")
METHODS = ("full_power", "wmmse_4", "wmmse_100", *LEARNED)
#: one colour per method in every panel
COLORS = {
    "wmmse_4": "tab:blue",
    "hyperparameters": "tab:orange",
    "objective": "tab:green",
    "correction": "tab:red",
    "inductive_bias": "tab:purple",
}


@dataclass(frozen=True)
class Preset:
    M: int = 20
    depth: int = 4
    hidden: int = 16
    #: UWMMSE's graph-network width (its lean correction needs no more: :class:`UWMMSECorrection`)
    hidden_correction: int = 8
    #: optimizer steps per model (fresh channels every batch); UWMMSE gets the most
    steps: dict[str, int] = field(
        default_factory=lambda: {
            "hyperparameters": 600,
            "objective": 600,
            "correction": 3000,
            "inductive_bias": 1500,
            "black_box": 2000,
        }
    )
    batch: int = 64
    lr: float = 3e-3
    #: the learning rate decays as a cosine from ``lr`` to ``lr * lr_floor`` over the steps
    lr_floor: float = 0.02
    clip: float = 1.0  #: gradient-norm clipping
    val_every: int = 250  #: steps between validations; the best validated state is kept
    n_val: int = 512  #: validation channels (seed stream 2, disjoint from training and test)
    n_test: int = 2000  #: held-out channels of the training topology
    train_topologies: tuple[int, ...] = (0,)
    ref_topologies: tuple[int, ...] = (0, 1, 2, 3, 4)
    n_ref: int = 6400  #: channels per topology for the reference figures
    sizes: tuple[int, ...] = (10, 30)
    n_size: int = 1000
    #: the batch of ``infer_ms``; the speed-up is also measured at every ``timing_batches``
    timing_batch: int = 1000
    timing_batches: tuple[int, ...] = (64, 1000, 6400)
    timing_reps: int = 15


PRESETS: dict[str, Preset] = {
    "tiny": Preset(
        hidden=4,
        hidden_correction=4,
        steps=dict.fromkeys(LEARNED, 6),
        batch=16,
        n_test=64,
        val_every=3,
        n_val=32,
        ref_topologies=(0,),
        n_ref=64,
        n_size=32,
        timing_batch=64,
        timing_batches=(16, 64),
        timing_reps=2,
    ),
    "cpu": Preset(),
    "full": Preset(
        steps=dict.fromkeys(LEARNED, 10_000),
        n_test=6400,
        train_topologies=(0, 1, 2, 3, 4),
        n_size=6400,
    ),
}

_TEST = 3  # seed stream of held-out channels (SyntheticDataModule: 1 train, 2 val, 3 test)


# %% [markdown]
# ## The classical baselines and the reference figures


# %%
def sum_rates(model: nn.Module, prob: InterferenceChannel, x: Tensor, K: int) -> list[float]:
    """Mean sum-rate at layers 0..K (the black box: its one output repeated, layer 0 = no power)."""
    return layer_metrics(model, prob, x, torch.zeros(x.shape[:2]), depth=K, metrics=["sum_rate"])[
        "sum_rate"
    ]


def classical_curve(prob: InterferenceChannel, x: Tensor, K: int) -> list[float]:
    """Mean sum-rate at WMMSE iterations 0..K (float64)."""
    return sum_rates(ClassicalSolver(WMMSE(), prob, K, dtype=torch.float64), prob, x.double(), K)


@torch.no_grad()
def reference_figures(cfg: Preset) -> dict[str, Any]:
    """Full power, WMMSE-4 and WMMSE-100 per topology (float64), and their means."""
    per: dict[str, dict[str, float]] = {}
    for seed in cfg.ref_topologies:
        prob = InterferenceChannel(M=cfg.M, seed=seed)
        x, _ = prob.sample(cfg.n_ref, seed=1, dtype=torch.float64)
        est = ClassicalSolver(WMMSE(), prob, 100, dtype=torch.float64)(x).estimates
        rate = {k: float(sum_rate(est[k], x, prob.noise_power).mean()) for k in (0, 4, 100)}
        per[str(seed)] = {"full_power": rate[0], "wmmse_4": rate[4], "wmmse_100": rate[100]}
    keys = ("full_power", "wmmse_4", "wmmse_100")
    mean = {k: statistics.fmean(v[k] for v in per.values()) for k in keys}
    published = {"full_power": 49.4, "wmmse_4": 69.1, "wmmse_100": 73.7}
    return {
        "per_topology": per,
        "mean": mean,
        "published": published,
        "relative_gap": {k: mean[k] / published[k] - 1.0 for k in keys},
        "n_channels": cfg.n_ref,
    }


# %% [markdown]
# ## Training (unsupervised: the loss is the negative sum-rate of the last layer)


# %%
def train(
    prob: InterferenceChannel, paradigm: str, cfg: Preset, black_box_params: int | None
) -> tuple[UnfoldedModule, float]:
    L.seed_everything(0, workers=False)
    module = UnfoldedModule(
        prob,
        paradigm=paradigm,
        depth=cfg.depth,
        hidden=cfg.hidden_correction if paradigm == "correction" else cfg.hidden,
        black_box_params=black_box_params,
        supervision="unsupervised",
        lr=cfg.lr,
        # large steps early, small ones late, where a constant rate kept undoing the progress
        scheduler=LRScheduler("cosine", steps=cfg.steps[paradigm], floor=cfg.lr_floor),
    )
    steps = cfg.steps[paradigm]
    data = SyntheticDataModule(prob, batch_size=cfg.batch, train_batches=steps, val_size=cfg.n_val)
    clock = fit_timed(
        module,
        data,
        steps,
        callbacks=[KeepBest()],  # the best validated sum-rate, the initial model's included
        limit_val_batches=None,
        val_check_interval=min(cfg.val_every, steps),
        gradient_clip_val=cfg.clip,
    )
    return module.eval(), clock.wall_s


# %% [markdown]
# ## Inference time, side by side


# %%
def bare_wmmse(H: Tensor, iterations: int, noise: float, p_max: float) -> Tensor:
    r"""WMMSE in plain PyTorch, nothing of the library: the baseline the library's own solver is
    timed against, so that the speed-up is not measured against a slow WMMSE.

    The same recursion as :class:`~lightning_unfold.algorithms.WMMSE` with α = 1, γ = 1 (module
    docstring of :mod:`lightning_unfold.algorithms.power`): the squared gains once, sums over
    users as row-vector products with contiguous matrices, v from full power, then ``iterations``
    times :math:`u = h_{ii}v/I`, :math:`w = I/(I - h_{ii}^2v^2)`,
    :math:`v = \Pi(w u h_{ii}/\sum_j w_j u_j^2 h_{ji}^2)`.
    """
    vmax = math.sqrt(p_max)
    h = H.diagonal(dim1=1, dim2=2).contiguous()
    direct = h * h
    cross = H * H
    cross.diagonal(dim1=1, dim2=2).zero_()
    cross_t = cross.transpose(1, 2).contiguous()
    tiny = torch.finfo(H.dtype).tiny
    v = torch.full(H.shape[:2], vmax, dtype=H.dtype, device=H.device)
    for _ in range(iterations):
        power = v * v
        rest = noise + torch.bmm(power.unsqueeze(1), cross_t).squeeze(1)
        received = rest + direct * power
        u = h * v / received
        w = received / rest
        c = w * u * u
        den = torch.bmm(c.unsqueeze(1), cross).squeeze(1) + direct * c
        v = (w * u * h / den.clamp_min(tiny)).clamp(0.0, vmax)
    return v


def latency(fns: dict[str, Any], reps: int) -> dict[str, Any]:
    """Median ms per call, wall and process CPU time, methods interleaved so that machine load
    hits all alike: each round times every method once with :func:`median_time` (after one
    warm-up call each), in inference mode. The CPU time bounds what a quiet machine would
    measure; ``paired_speedup`` is the median over rounds of WMMSE-100's time over UWMMSE's in
    the same round, which a slow drift of the machine's speed does not bias."""
    wall: dict[str, list[float]] = {k: [] for k in fns}
    cpu: dict[str, list[float]] = {k: [] for k in fns}
    with torch.inference_mode():
        for fn in fns.values():
            median_time(fn, 1)  # warm-up
        for _ in range(reps):
            for name, fn in fns.items():
                start = time.process_time()
                wall[name].append(1e3 * median_time(fn, 1, warmup=False))
                cpu[name].append(1e3 * (time.process_time() - start))
    paired = [a / b for a, b in zip(wall["wmmse_100"], wall["correction"], strict=True)]
    out: dict[str, Any] = {
        "infer_ms": {k: statistics.median(v) for k, v in wall.items()},
        "infer_cpu_ms": {k: statistics.median(v) for k, v in cpu.items()},
        "paired_speedup": statistics.median(paired),
        "paired_speedup_range": [min(paired), max(paired)],
    }
    if "wmmse_100_bare" in wall:
        bare = [a / b for a, b in zip(wall["wmmse_100_bare"], wall["correction"], strict=True)]
        out["paired_speedup_bare"] = statistics.median(bare)
    return out


# %% [markdown]
# ## The study


# %%
def timing_device(name: str) -> torch.device:
    """The device the latency table is measured on (training stays on the CPU), checked before
    any training starts."""
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ValueError(
            f"--timing-device {name!r} is not a torch device ('cpu', 'cuda')."
        ) from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"--timing-device {name!r}: no CUDA device is visible to this PyTorch "
            f"({torch.__version__}); install a CUDA build of torch or time on 'cpu'."
        )
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"--timing-device {name!r}: only 'cpu' and 'cuda' are supported.")
    return device


def on_device(fn: Any, device: torch.device) -> Any:
    """``fn`` followed by a wait for the device to finish (CUDA runs asynchronously, so an
    unsynchronised call would time only the kernel launches)."""
    if device.type != "cuda":
        return fn

    def synced() -> Any:
        out = fn()
        torch.cuda.synchronize(device)
        return out

    return synced


def run(cfg: Preset, out: Path, device: str = "cpu") -> dict[str, Any]:
    wall = time.perf_counter()
    dev = timing_device(device)
    out.mkdir(parents=True, exist_ok=True)
    K = cfg.depth
    reference = reference_figures(cfg)
    curves: dict[str, list[list[float]]] = {m: [] for m in METHODS}
    train_s: dict[str, list[float]] = {m: [] for m in METHODS}
    params: dict[str, int] = {"full_power": 0, "wmmse_4": 0, "wmmse_100": 0}
    first: dict[str, UnfoldedModule] = {}
    for seed in cfg.train_topologies:
        prob = InterferenceChannel(M=cfg.M, seed=seed)
        x, _ = prob.sample(cfg.n_test, seed=(_TEST, 0))
        wm = classical_curve(prob, x, 100)
        curves["full_power"].append(
            [float(sum_rate(full_power(x), x, prob.noise_power).mean())] * (K + 1)
        )
        curves["wmmse_4"].append(wm[: K + 1])
        curves["wmmse_100"].append(wm)
        bb_params: int | None = None
        for paradigm in LEARNED:
            module, seconds = train(prob, paradigm, cfg, bb_params)
            if paradigm == "correction":
                bb_params = count_parameters(module.model)  # the black box matches UWMMSE's size
            curves[paradigm].append(sum_rates(module.model, prob, x, K))
            train_s[paradigm].append(seconds)
            params[paradigm] = count_parameters(module.model)
            first.setdefault(paradigm, module)
            print(
                f"topology {seed} {paradigm:16s} {curves[paradigm][-1][-1]:7.2f} b/s/Hz  "
                f"({seconds:.0f} s)",
                flush=True,
            )
    mean_curve = {
        m: [statistics.fmean(c[k] for c in cs) for k in range(len(cs[0]))]
        for m, cs in curves.items()
    }

    # latency: topology 0, one batch, every method side by side, final estimate only (predict)
    prob0 = InterferenceChannel(M=cfg.M, seed=cfg.train_topologies[0])
    w4 = ClassicalSolver(WMMSE(), prob0, 4).to(dev)
    w100 = ClassicalSolver(WMMSE(), prob0, 100).to(dev)
    # copies on the timing device; the trained models stay on the CPU for the size study
    timed = {p: copy.deepcopy(first[p].model).to(dev) for p in LEARNED}
    by_batch: dict[str, dict[str, Any]] = {}
    subnormal: dict[str, Any] = {}
    for batch in sorted({cfg.timing_batch, *cfg.timing_batches}):
        xt = prob0.sample(batch, seed=(_TEST, 1))[0].to(dev)
        fns: dict[str, Any] = {
            "full_power": lambda xt=xt: full_power(xt),
            "wmmse_4": lambda xt=xt: w4.predict(xt),
            "wmmse_100": lambda xt=xt: w100.predict(xt),
            "wmmse_100_bare": lambda xt=xt: bare_wmmse(xt, 100, prob0.noise_power, prob0.p_max),
        }
        fns.update({p: (lambda m=timed[p], xt=xt: m.predict(xt)) for p in LEARNED})
        fns = {name: on_device(fn, dev) for name, fn in fns.items()}
        # subnormals flushed: float32 WMMSE decays switched-off users' amplitudes through
        # subnormal numbers, which x86 CPUs compute on far more slowly (flush_denormals)
        with flush_denormals() as flushed:
            lat = latency(fns, cfg.timing_reps)
        ms, cpu_ms = lat["infer_ms"], lat["infer_cpu_ms"]
        with torch.inference_mode():  # the bare loop is the same WMMSE (float32 rounding apart)
            gap = (fns["wmmse_100_bare"]() - fns["wmmse_100"]()).abs().max()
        by_batch[str(batch)] = {
            **lat,
            "subnormals_flushed": flushed,
            "bare_max_abs_diff": float(gap),
            "wmmse_100_over_bare": ms["wmmse_100"] / ms["wmmse_100_bare"],
            "speedup_bare_wmmse_100_over_correction": ms["wmmse_100_bare"] / ms["correction"],
            "speedup_wmmse_100_over_correction": ms["wmmse_100"] / ms["correction"],
            "speedup_wmmse_100_over_correction_cpu": cpu_ms["wmmse_100"] / cpu_ms["correction"],
        }
        print(
            f"latency B={batch}: WMMSE-100 {ms['wmmse_100']:.2f} ms, UWMMSE "
            f"{ms['correction']:.2f} ms ({ms['wmmse_100'] / ms['correction']:.2f}x, paired "
            f"{lat['paired_speedup']:.2f}x; bare WMMSE-100 {ms['wmmse_100_bare']:.2f} ms, "
            f"paired {lat['paired_speedup_bare']:.2f}x)",
            flush=True,
        )
        if batch == cfg.timing_batch and dev.type == "cpu":  # for the record: subnormals kept
            keep = {k: fns[k] for k in ("wmmse_100", "correction")}
            subnormal = {"batch": batch, **latency(keep, max(1, cfg.timing_reps // 3))}
    infer_ms = by_batch[str(cfg.timing_batch)]["infer_ms"]
    infer_cpu_ms = by_batch[str(cfg.timing_batch)]["infer_cpu_ms"]

    methods = {
        m: {
            "sum_rate": mean_curve[m],
            "params": params[m],
            "infer_ms": infer_ms[m],
            "train_s": statistics.fmean(train_s[m]) if train_s[m] else 0.0,
        }
        for m in METHODS
    }

    # size generalisation: the topology-0 models at other M (the protocol's topology of that size)
    size_gen: dict[str, dict[str, Any]] = {}
    for M in cfg.sizes:
        prob_m = prob0.with_size(M)
        xm, _ = prob_m.sample(cfg.n_size, seed=(_TEST, 0))
        wm = classical_curve(prob_m, xm, 100)
        entry: dict[str, Any] = {
            "full_power": {
                "sum_rate": [float(sum_rate(full_power(xm), xm, prob_m.noise_power).mean())]
                * (K + 1)
            },
            "wmmse_4": {"sum_rate": wm[: K + 1]},
            "wmmse_100": {"sum_rate": wm},
        }
        for p in LEARNED:
            try:
                entry[p] = {"sum_rate": sum_rates(first[p].model, prob_m, xm, K)}
            except ValueError as err:  # a model with per-user parameters cannot change size
                entry[p] = {"sum_rate": None, "error": str(err)}
        size_gen[str(M)] = entry

    results = {"methods": methods, "size_generalisation": size_gen}
    write_json(out, "results.json", results)
    extras = {
        "config": asdict(cfg),
        "reference_figures": reference,
        "infer_ms": infer_ms,
        "infer_cpu_ms": infer_cpu_ms,
        "timing_batch": cfg.timing_batch,
        "speedup_wmmse_100_over_correction": infer_ms["wmmse_100"] / infer_ms["correction"],
        "speedup_wmmse_100_over_correction_cpu": infer_cpu_ms["wmmse_100"]
        / infer_cpu_ms["correction"],
        "latency_by_batch": by_batch,
        "latency_subnormals_kept": subnormal,
        "timing_device": str(dev),
        "threads": torch.get_num_threads(),
        "wall_s": time.perf_counter() - wall,
    }
    write_json(out, "extras.json", extras)
    plot(results, cfg, out / "sum_rate_vs_layer.png")
    return {"results": results, "extras": extras}


def plot(results: dict[str, Any], cfg: Preset, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    K = cfg.depth
    fig, axes = plt.subplots(1, 1 + len(cfg.sizes), figsize=(5.2 * (1 + len(cfg.sizes)), 4.2))
    panels = [(f"M = {cfg.M} (trained)", results["methods"])]
    panels += [
        (f"M = {m} (M = {cfg.M} models)", results["size_generalisation"][str(m)]) for m in cfg.sizes
    ]
    layers = list(range(K + 1))
    for ax, (title, entries) in zip(axes, panels, strict=True):
        for name, entry in entries.items():
            curve = entry.get("sum_rate")
            if curve is None:
                continue
            if name == "wmmse_100":
                ax.axhline(curve[-1], color="k", ls="--", lw=1, label="WMMSE-100")
            elif name == "full_power":
                ax.axhline(curve[0], color="grey", ls=":", lw=1, label="full power")
            elif name == "black_box":
                ax.axhline(curve[-1], color="tab:brown", ls="-.", lw=1, label="black box")
            else:
                label = {"wmmse_4": "WMMSE", "correction": "UWMMSE (correction)"}.get(name, name)
                ax.plot(layers[1:], curve[1 : K + 1], marker="o", label=label, color=COLORS[name])
        ax.set_xlabel("layer / iteration k")
        ax.set_ylabel("mean sum-rate (bit/s/Hz)")
        ax.set_xticks(layers[1:])
        ax.set_title(title)
        ax.grid(alpha=0.3)
        missing = [n for n, e in entries.items() if e.get("sum_rate") is None]
        if missing:
            ax.text(
                0.02,
                0.02,
                f"cannot run at this M: {', '.join(missing)}",
                fontsize=8,
                transform=ax.transAxes,
            )
    axes[0].legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    parser.add_argument("--out", type=Path, default=Path("results/power_allocation"))
    parser.add_argument(
        "--timing-device",
        default="cpu",
        help="device of the latency table ('cpu' or 'cuda'); training stays on the CPU",
    )
    args = parser.parse_args(argv)
    report = run(PRESETS[args.preset], args.out, args.timing_device)
    res, ext = report["results"]["methods"], report["extras"]
    for name, entry in res.items():
        print(
            f"{name:16s} {entry['sum_rate'][-1]:7.2f} b/s/Hz  params {entry['params']:6d}  "
            f"infer {entry['infer_ms']:8.2f} ms  train {entry['train_s']:6.1f} s"
        )
    print(f"reference means {ext['reference_figures']['mean']}; wall {ext['wall_s']:.0f} s")


if __name__ == "__main__":
    main()
