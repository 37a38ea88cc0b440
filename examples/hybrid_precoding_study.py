r"""Hybrid precoding: unfolded PGA with learned step sizes against classical PGA (Lavi & Shlezinger,
IEEE TCOM 2023; Shlezinger et al. 2025, §V).

Wideband hybrid precoding (:mod:`lightning_unfold.algorithms.precoding`): :math:`B = 8` bands,
:math:`U = 6` users, :math:`L = 10` RF chains, :math:`M = 12` antennas, i.i.d.
:math:`\mathcal{CN}(0, 1)` channels (``--channel multipath`` for the frequency-selective model), rate
in nats per channel use. Two settings: ``unit_modulus`` (phase-shifter analog precoder) and
``unconstrained_analog`` (power constraint only, as the paper's reference code). Methods:

============================  ===================================================================
``pga_5/50/100``              classical PGA, K = 5/50/100 iterations, one constant step tuned per K
                              by a grid search on a tuning set (its wall time is ``train_s``)
``unfolded_final_loss``       unfolded PGA, K = 5, learned per-iteration steps
                              :math:`\mu_{a,k}, \mu_{d,b,k}` (paradigm ``hyperparameters``),
                              one per entry of :math:`W_a` and of each :math:`W_{d,b}` by
                              default (``--step-shape scalar``: the paper's scalar
                              :math:`\mu_{a,k}` and per-band :math:`\mu_{d,b,k}`),
                              loss :math:`-R(s^{(K)})`
``unfolded_multi_iteration``  the same, loss :math:`-\sum_k \log(1+k) R(s^{(k)})` (the survey's)
``black_box``                 an MLP from the channels to feasible precoders
                              (:class:`~lightning_unfold.algorithms.precoding.HybridBlackBoxNet`)
============================  ===================================================================

All learned methods train with the unsupervised loss (the negative rate) on fresh channels, start
(unfolded) from the tuned K = 5 step, and are scored on held-out test channels (their own seed
stream). A separate *anchor* run repeats the reference code's protocol (real :math:`\mathcal N(0,1)`
channels, :math:`\gamma = 1`, power rescale only, step 0.5, 1000 training channels, batch 100,
Adam with learning rate 0.4, final-iteration loss) and reports the classical rate after 5 and 30
iterations and the unfolded K = 5 rate.

Run::

    python examples/hybrid_precoding_study.py --preset cpu --out results/hybrid_cpu
    python examples/hybrid_precoding_study.py --preset full --out results/hybrid_full

``--out DIR`` writes ``DIR/results.json`` = ``{"settings": {setting: {method: {"rate": [per
iteration k = 0..K; one value for the black box], "infer_ms": ms per channel, "train_s": s}}}}``,
``DIR/protocol.json`` (preset, tuned steps, learned steps, the anchor run, wall time) and
``DIR/rate_vs_iteration.png``.
"""

# %%
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from lightning_unfold.algorithms.precoding import HybridPGA, HybridPrecoding, tune_step
from lightning_unfold.core.unfolded import BlackBoxModel, ClassicalSolver
from lightning_unfold.training import SyntheticDataModule, UnfoldedModule, layer_metrics
from lightning_unfold.training.study import (
    count_parameters,
    elapsed_printer,
    fit_timed,
    median_time,
    parse_study_args,
    study_accelerator,
    study_parser,
    write_json,
)

SETTINGS: dict[str, str] = {"unit_modulus": "unit_modulus", "unconstrained_analog": "unconstrained"}
METHODS: tuple[str, ...] = (
    "pga_5",
    "pga_50",
    "pga_100",
    "unfolded_final_loss",
    "unfolded_multi_iteration",
    "black_box",
)
GRID: tuple[float, ...] = (0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0)


@dataclass(frozen=True)
class Preset:
    """Sizes and budgets of one study run."""

    n_bands: int
    n_users: int
    n_rf: int
    n_antennas: int
    depth: int  # unfolded K
    pga_depths: tuple[int, int, int]
    batch: int
    unfolded_steps: int
    unfolded_lr: float
    black_box_steps: int
    black_box_lr: float
    black_box_params: int
    tune_size: int
    test_size: int
    anchor_epochs: int  # 0: no anchor run
    anchor_train: int
    anchor_test: int
    grid: tuple[float, ...] = GRID
    timing_size: int = 100  # channels of the side-by-side inference timing
    # the unfolded methods' learned steps (HybridPGA's step_shape and digital_updates Q)
    step_shape: str = "per_entry"
    digital_updates: int = 1


PRESETS: dict[str, Preset] = {
    # exercised by the test suite: seconds
    "tiny": Preset(
        3, 2, 3, 4, 3, (5, 50, 100), 16, 4, 0.05, 4, 1e-3, 2000, 8, 16, 1, 16, 8, (0.1, 0.5), 8
    ),
    # 2 CPU cores: about 20 minutes on a heavily loaded machine (see docs/hybrid_precoding.md)
    "cpu": Preset(
        n_bands=8,
        n_users=6,
        n_rf=10,
        n_antennas=12,
        depth=5,
        pga_depths=(5, 50, 100),
        batch=32,
        unfolded_steps=600,
        unfolded_lr=0.2,
        black_box_steps=800,
        black_box_lr=1e-3,
        black_box_params=250_000,
        tune_size=32,
        test_size=500,
        anchor_epochs=10,
        anchor_train=1000,
        anchor_test=100,
    ),
    # the paper-scale budget (GPU or a long CPU run)
    "full": Preset(
        n_bands=8,
        n_users=6,
        n_rf=10,
        n_antennas=12,
        depth=5,
        pga_depths=(5, 50, 100),
        batch=100,
        unfolded_steps=3000,
        unfolded_lr=0.2,
        black_box_steps=10_000,
        black_box_lr=1e-3,
        black_box_params=250_000,
        tune_size=200,
        test_size=2000,
        anchor_epochs=110,
        anchor_train=1000,
        anchor_test=100,
    ),
}


def rates(model: torch.nn.Module, problem: HybridPrecoding, x: Tensor) -> list[float]:
    """Mean rate (nats) at every iterate ``k = 0..K`` (the problem's primary metric)."""
    target = torch.full((x.shape[0], 1), float("nan"))  # the rate needs no target
    name = problem.metrics()[0].name
    curve = layer_metrics(model, problem, x, target, metrics=[name])[name]
    # the black box: one output (its iterate 0 is a placeholder)
    return curve[-1:] if isinstance(model, BlackBoxModel) else curve


def train(
    problem: HybridPrecoding,
    paradigm: str,
    *,
    depth: int,
    step: float,
    formulation: str,
    steps: int,
    lr: float,
    batch: int,
    accelerator: str,
    seed: int,
    black_box_params: int | None = None,
    train_size: int | None = None,
    step_shape: str = "scalar",
    digital_updates: int = 1,
) -> tuple[UnfoldedModule, float]:
    """Train one learned method with the unsupervised loss (−rate); returns (module, seconds).
    ``train_size``: a fixed training set of that many channels (else fresh batches)."""
    torch.manual_seed(seed)
    module = UnfoldedModule(
        problem,
        algorithm="hybrid_pga",
        algorithm_options={
            "step": step,
            "step_shape": step_shape,
            "digital_updates": digital_updates,
        },
        paradigm=paradigm,
        depth=depth,
        black_box_params=black_box_params,
        supervision="unsupervised",
        formulation=formulation,
        lr=lr,
    )
    fresh = train_size is None
    data = SyntheticDataModule(
        problem,
        batch_size=batch,
        train_batches=100_000,
        fresh_train=fresh,
        train_size=train_size or batch,
        val_size=batch,
        test_size=batch,
        seed=seed,
    )
    return module, fit_timed(module, data, steps, accelerator).wall_s


def run_setting(
    p: Preset,
    name: str,
    channel: str,
    snr_db: float | None,
    accelerator: str,
    log: Callable[[str], None],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """All methods in one setting: (results entry, protocol entry)."""
    problem = HybridPrecoding(
        p.n_bands, p.n_users, p.n_rf, p.n_antennas, snr_db, channel, SETTINGS[name], seed=0
    )
    x_tune, _ = problem.sample(p.tune_size, seed=(9, 0), dtype=torch.float64)
    x, _ = problem.sample(p.test_size, seed=(3, 0))
    xt = x[: p.timing_size]  # every method timed on the same channels, in this run

    def infer_ms(model: torch.nn.Module) -> float:
        return 1e3 * median_time(lambda: model(xt)) / xt.shape[0]

    results: dict[str, Any] = {}
    info: dict[str, Any] = {"tuned_step": {}}
    for depth in p.pga_depths:
        t0 = time.perf_counter()
        mu = tune_step(problem, depth, x_tune, p.grid)
        tune_s = time.perf_counter() - t0
        info["tuned_step"][depth] = mu
        solver = ClassicalSolver(HybridPGA(mu), problem, depth)
        results[f"pga_{depth}"] = {
            "rate": rates(solver, problem, x),
            "infer_ms": infer_ms(solver),
            "train_s": tune_s,
        }
        log(f"[{name}] pga_{depth}: step {mu}, rate {results[f'pga_{depth}']['rate'][-1]:.3f}")
    mu5 = info["tuned_step"][p.pga_depths[0]] if p.pga_depths[0] == p.depth else 0.5
    for i, (method, formulation) in enumerate(
        (("unfolded_final_loss", "end_to_end"), ("unfolded_multi_iteration", "multi_iteration"))
    ):
        module, seconds = train(
            problem,
            "hyperparameters",
            depth=p.depth,
            step=mu5,
            step_shape=p.step_shape,
            digital_updates=p.digital_updates,
            formulation=formulation,
            steps=p.unfolded_steps,
            lr=p.unfolded_lr,
            batch=p.batch,
            accelerator=accelerator,
            seed=10 + i,
        )
        model = module.model.eval()
        results[method] = {
            "rate": rates(model, problem, x),
            "infer_ms": infer_ms(model),
            "train_s": seconds,
        }
        info[f"{method}_steps"] = {
            "mu_a": model.stacked("mu_a").tolist(),
            "mu_d": model.stacked("mu_d").tolist(),
        }
        info["unfolded_params"] = count_parameters(model, trainable_only=False)
        log(f"[{name}] {method}: rate {results[method]['rate']}, train {seconds:.1f} s")
    module, seconds = train(
        problem,
        "black_box",
        depth=1,
        step=mu5,
        formulation="end_to_end",
        steps=p.black_box_steps,
        lr=p.black_box_lr,
        batch=p.batch,
        accelerator=accelerator,
        seed=20,
        black_box_params=p.black_box_params,
    )
    bb = module.model.eval()
    results["black_box"] = {
        "rate": rates(bb, problem, x),
        "infer_ms": infer_ms(bb),
        "train_s": seconds,
    }
    info["black_box_params"] = count_parameters(bb, trainable_only=False)
    log(f"[{name}] black_box: rate {results['black_box']['rate']}, train {seconds:.1f} s")
    return results, info


def anchor(p: Preset, accelerator: str, log: Callable[[str], None]) -> dict[str, Any]:
    """The reference code's protocol (module docstring); ``anchor_epochs`` passes over its fixed
    training set (the reference: 110)."""
    problem = HybridPrecoding(channel="real_gaussian", analog="unconstrained", snr_db=None, seed=1)
    x, _ = problem.sample(p.anchor_test, seed=(3, 1), dtype=torch.float64)
    classical = rates(ClassicalSolver(HybridPGA(0.5), problem, 30, dtype=torch.float64), problem, x)
    steps = p.anchor_epochs * max(p.anchor_train // 100, 1)
    module, seconds = train(
        problem,
        "hyperparameters",
        depth=5,
        step=0.5,
        formulation="end_to_end",
        steps=steps,
        lr=0.4,
        batch=min(100, p.anchor_train),
        accelerator=accelerator,
        seed=30,
        train_size=p.anchor_train,
    )
    unfolded = rates(module.model.eval(), problem, x.to(torch.complex64))
    out = {
        "classical_step_0.5": {"k5": classical[5], "k30": classical[30]},
        "unfolded_k5": unfolded[-1],
        "epochs": p.anchor_epochs,
        "train_steps": steps,
        "train_s": seconds,
        "reference_values": {"classical_k5": 10.71, "classical_k30": 11.92, "unfolded_k5": 12.62},
    }
    log(f"[anchor] {out}")
    return out


def plot(results: dict[str, Any], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=False)
    for ax, (name, res) in zip(axes, results.items(), strict=True):
        for method in METHODS:
            r = res[method]["rate"]
            if method == "black_box":
                ax.axhline(r[-1], color="k", ls="--", lw=1, label="black box")
                continue
            style = "-" if method.startswith("pga") else "-o"
            ax.plot(range(len(r)), r, style, ms=3, label=method)
        ax.set_xscale("symlog", linthresh=5, linscale=2)
        ticks = [0, 1, 2, 3, 4, 5, 10, 20, 50, 100]
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.set_xlim(-0.2, 110)
        ax.set_xlabel("iteration k (linear up to 5, then logarithmic)")
        ax.set_ylabel("achievable rate (nat/s/Hz)")
        ax.set_title(name.replace("_", " "))
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = study_parser(__doc__, PRESETS, out=None, threads=1, device=True)
    parser.add_argument("--channel", choices=("gaussian", "multipath"), default="gaussian")
    parser.add_argument("--snr-db", type=float, default=None, help="default: SNR/U = 1")
    parser.add_argument(
        "--step-shape",
        choices=("scalar", "per_chain", "per_entry"),
        default=None,
        help="granularity of the unfolded methods' learned steps (default: the preset's)",
    )
    parser.add_argument(
        "--digital-updates", type=int, default=None, help="Q digital steps per analog step"
    )
    args = parse_study_args(parser, argv)
    p = PRESETS[args.preset]
    if args.step_shape is not None:
        p = replace(p, step_shape=args.step_shape)
    if args.digital_updates is not None:
        p = replace(p, digital_updates=args.digital_updates)
    accelerator = study_accelerator(args.device)
    t0 = time.perf_counter()
    log = elapsed_printer(t0)

    results: dict[str, Any] = {"settings": {}}
    protocol: dict[str, Any] = {
        "preset": args.preset,
        "config": asdict(p),
        "channel": args.channel,
        "snr_db": args.snr_db,
        "rate_unit": "nat/s/Hz (divide by ln 2 for bit/s/Hz)",
        "infer_ms": "median forward-pass time on the first timing_size test channels, divided "
        "by their number (ms/channel), float32, one thread",
        "train_s_pga": "grid-search time of the constant step",
        "grid": list(p.grid),
    }
    for name in SETTINGS:
        results["settings"][name], protocol[name] = run_setting(
            p, name, args.channel, args.snr_db, accelerator, log
        )
    if p.anchor_epochs > 0:
        protocol["anchor"] = anchor(p, accelerator, log)
    protocol["wall_s"] = time.perf_counter() - t0
    log(f"done in {protocol['wall_s']:.1f} s")
    if args.out is not None:
        write_json(args.out, "results.json", results)
        write_json(args.out, "protocol.json", protocol)
        snr = "SNR/U = 1" if args.snr_db is None else f"SNR {args.snr_db} dB"
        plot(
            results["settings"],
            args.out / "rate_vs_iteration.png",
            f"Hybrid precoding B={p.n_bands}, U={p.n_users}, L={p.n_rf}, M={p.n_antennas}, "
            f"{args.channel} channels, {snr}; {p.test_size} held-out channels",
        )
    return {"results": results, "protocol": protocol}


if __name__ == "__main__":
    main()
