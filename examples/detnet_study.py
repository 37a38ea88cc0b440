r"""DetNet on its fixed-channel case: 30 × 60 BPSK over the 0.55-Toeplitz channel.

Protocol (Samuel, Diskin & Wiesel, "Learning to detect", the fixed-channel case): U = 30 users,
N = 60 receive antennas, BPSK, one fixed real channel whose normalised Gram matrix is the Toeplitz
correlation exactly, :math:`H^\top H = R`, :math:`[R]_{ij} = 0.55^{|i-j|}`
(``MIMODetection(channel="toeplitz", correlation=0.55)``: :math:`H = [R^{1/2}; 0]`), SNR = 1/σ²
per receive antenna with unit-norm channel columns. DetNet (``ProjectedGradientDetector``,
paradigm ``"inductive_bias"``) is trained on symbols whose SNR is drawn uniformly from [7, 14] dB
with the multi-iteration loss :math:`\sum_k \log(k)\,\|s - \hat s_k\|^2`, then tested at
8, 9, …, 13 dB against zero forcing, LMMSE, soft interference cancellation (5 iterations) and
the classical projected-gradient iteration DetNet unfolds (as many iterations as DetNet layers).

**Standard errors.** A BER is estimated from ``n`` channel uses of 30 bits each. Errors within one
vector are correlated (a wrong decision drags its neighbours on a correlated channel), so the
standard error is computed over vectors, not bits: with :math:`e_i` the wrong bits of vector
:math:`i`, :math:`\widehat{\mathrm{BER}} = \bar e/30` and :math:`\mathrm{SE} =
\mathrm{sd}(e)/(30\sqrt n)`. Each method is evaluated on chunks of fresh test vectors (the same
vectors for every method) until its relative standard error is at most ``target_rse`` (with at
least ``min_uses`` vectors) or ``max_uses`` is reached; ``results.json`` records ``n`` and the SE
of every point, and the i.i.d.-bit formula :math:`\sqrt{p(1-p)/(30n)}` next to it.

Run::

    python examples/detnet_study.py --preset cpu --out results/detnet_cpu
    python examples/detnet_study.py --preset tiny --out /tmp/detnet      # seconds (tested)

``DIR/results.json``: ``{"preset", "config", "protocol", "train_s", "params", "methods": {method:
{"snr_db", "ber", "se", "se_iid_bits", "channel_uses", "rse_ok"}}, "timing_ms_per_10k_symbols",
"complete", "wall_s"}`` (rewritten after every SNR point, ``"complete"`` once all are in);
``DIR/ber_vs_snr.png``: BER against SNR with ±2 SE bars.
"""

# %%
from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from lightning_unfold.algorithms.detection import (
    MIMODetection,
    ProjectedGradientDetector,
    SoftIC,
    lmmse,
    zero_forcing,
)
from lightning_unfold.core.unfolded import ClassicalSolver
from lightning_unfold.training import SyntheticDataModule, UnfoldedModule
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

METHODS: tuple[str, ...] = ("detnet", "soft_ic", "lmmse", "zf", "projected_gradient")
USERS, ANTENNAS, CORRELATION = 30, 60, 0.55


@dataclass(frozen=True)
class Preset:
    depth: int  # DetNet layers (= classical projected-gradient iterations)
    hidden: int  # DetNet hidden width
    steps: int  # optimizer steps
    batch: int
    lr: float
    test_snrs: tuple[float, ...]
    chunk: int  # test channel uses drawn at a time
    min_uses: int  # channel uses per method and SNR, at least
    max_uses: int  # ... and at most
    target_rse: float  # stop once SE / BER <= this
    softic_iterations: int = 5
    train_snr: tuple[float, float] = (7.0, 14.0)


PRESETS: dict[str, Preset] = {
    "tiny": Preset(
        depth=3,
        hidden=16,
        steps=5,
        batch=32,
        lr=1e-3,
        test_snrs=(8.0, 13.0),
        chunk=200,
        min_uses=200,
        max_uses=400,
        target_rse=0.1,
    ),
    "cpu": Preset(
        depth=10,
        hidden=240,
        steps=3000,
        batch=128,
        lr=1e-3,
        test_snrs=tuple(float(s) for s in range(8, 14)),
        chunk=5000,
        min_uses=10_000,
        max_uses=400_000,
        target_rse=0.09,
    ),
}


def problem(snr_db: float | tuple[float, float]) -> MIMODetection:
    """The fixed-channel problem at one test SNR, or with the SNR drawn from a range (training)."""
    common: dict[str, Any] = dict(
        n_users=USERS,
        n_antennas=ANTENNAS,
        channel="toeplitz",
        correlation=CORRELATION,
        loss="symbol_mse",
        seed=3,
    )
    if isinstance(snr_db, tuple):
        return MIMODetection(snr_db=None, snr_range=snr_db, **common)
    return MIMODetection(snr_db=snr_db, **common)


def train_detnet(p: Preset, accelerator: str) -> tuple[UnfoldedModule, float]:
    """DetNet trained with the log(k)-weighted multi-iteration loss on fresh data every step."""
    prob = problem(p.train_snr)
    torch.manual_seed(0)
    module = UnfoldedModule(
        prob,
        algorithm="projected_gradient",
        algorithm_options={"hidden": p.hidden},
        paradigm="inductive_bias",
        depth=p.depth,
        formulation="multi_iteration",
        layer_weights=[math.log(k) for k in range(1, p.depth + 1)],
        lr=p.lr,
    )
    data = SyntheticDataModule(
        prob, batch_size=p.batch, train_batches=1_000_000, val_size=p.batch, seed=7
    )
    return module, fit_timed(module, data, p.steps, accelerator).wall_s


@dataclass
class _Tally:
    """Running sums of the wrong bits per channel use of one method at one SNR."""

    n: int = 0
    s1: float = 0.0
    s2: float = 0.0

    def add(self, wrong: Tensor) -> None:
        w = wrong.double()
        self.n += int(w.numel())
        self.s1 += float(w.sum())
        self.s2 += float(w.pow(2).sum())

    def ber(self, bits: int) -> float:
        return self.s1 / (self.n * bits)

    def se(self, bits: int) -> float:
        """Standard error of the BER over vectors (the wrong bits of a vector are correlated)."""
        if self.n < 2:
            return math.inf
        var = max(self.s2 - self.s1**2 / self.n, 0.0) / (self.n - 1)
        return math.sqrt(var / self.n) / bits

    def done(self, p: Preset, bits: int) -> bool:
        if self.n >= p.max_uses:
            return True
        return (
            self.n >= p.min_uses and self.s1 > 0 and self.se(bits) <= p.target_rse * self.ber(bits)
        )


def detectors(
    prob: MIMODetection, detnet: torch.nn.Module, p: Preset
) -> dict[str, Callable[[Tensor], Tensor]]:
    softic = ClassicalSolver(SoftIC(), prob, p.softic_iterations)
    pgd = ClassicalSolver(ProjectedGradientDetector(), prob, p.depth)
    return {
        "detnet": lambda x: detnet(x).final_estimate,
        "soft_ic": lambda x: softic(x).final_estimate,
        "lmmse": lambda x: lmmse(x, prob),
        "zf": lambda x: zero_forcing(x, prob),
        "projected_gradient": lambda x: pgd(x).final_estimate,
    }


def evaluate(
    p: Preset,
    detnet: torch.nn.Module,
    log: Callable[[str], None],
    progress: Callable[[dict[str, Any], dict[str, float]], None] = lambda m, t: None,
) -> tuple[dict[str, Any], dict[str, float]]:
    """BER of every method at every test SNR, each to its standard-error target; ``progress``
    is called with the partial results after every SNR point."""
    out: dict[str, Any] = {
        m: {"snr_db": [], "ber": [], "se": [], "se_iid_bits": [], "channel_uses": [], "rse_ok": []}
        for m in METHODS
    }
    timing: dict[str, float] = {}
    bits = USERS  # BPSK: one bit per user and channel use
    for i, snr in enumerate(p.test_snrs):
        prob = problem(snr)
        dets = detectors(prob, detnet, p)
        errors = prob.metrics()[0]  # the BER metric: per-vector (wrong bits, bits)
        tallies = {m: _Tally() for m in METHODS}
        chunk = 0
        while not all(t.done(p, bits) for t in tallies.values()):
            x, target = prob.sample(p.chunk, seed=(5, i, chunk))
            with torch.no_grad():
                for m, det in dets.items():
                    if not tallies[m].done(p, bits):
                        tallies[m].add(errors.fn(det(x), target, x)[0])
            chunk += 1
        for m, t in tallies.items():
            ber, se = t.ber(bits), t.se(bits)
            r = out[m]
            r["snr_db"].append(snr)
            r["ber"].append(ber)
            r["se"].append(se)
            r["se_iid_bits"].append(math.sqrt(ber * (1 - ber) / (t.n * bits)))
            r["channel_uses"].append(t.n)
            r["rse_ok"].append(bool(ber > 0 and se <= 0.1 * ber))
        if i == 0:  # inference time per 10 000 symbols, all methods side by side on one batch
            xt = x[: math.ceil(10_000 / USERS)]
            timing = {m: 1e3 * median_time(lambda d=d, xt=xt: d(xt), 3) for m, d in dets.items()}
        log(
            f"{snr:4.1f} dB  "
            + "  ".join(
                f"{m} {out[m]['ber'][-1]:.3e}±{out[m]['se'][-1]:.1e} (n={out[m]['channel_uses'][-1]})"
                for m in METHODS
            )
        )
        progress(out, timing)
    return out, timing


def plot(methods: dict[str, Any], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for m, r in methods.items():
        ber = [b if b > 0 else float("nan") for b in r["ber"]]
        err = [2 * s for s in r["se"]]
        style = "--" if m in ("zf", "lmmse", "projected_gradient") else "-"
        ax.errorbar(r["snr_db"], ber, yerr=err, fmt=style + "o", ms=3, capsize=2, label=m)
    ax.set_yscale("log")
    ax.set_xlabel("SNR = 1/σ² (dB)")
    ax.set_ylabel("bit error rate (±2 SE)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    # --device: where DetNet trains; it is evaluated on the CPU
    parser = study_parser(__doc__, PRESETS, out=None, threads=1, device=True)
    args = parse_study_args(parser, argv)
    p = PRESETS[args.preset]
    t0 = time.perf_counter()
    log = elapsed_printer(t0)
    module, train_s = train_detnet(p, study_accelerator(args.device))
    detnet = module.model.cpu().eval()  # evaluated on the CPU, next to the classical detectors
    log(f"DetNet trained in {train_s:.1f} s")
    results: dict[str, Any] = {
        "preset": args.preset,
        "config": asdict(p),
        "protocol": {
            "users": USERS,
            "antennas": ANTENNAS,
            "constellation": "bpsk",
            "channel": f"toeplitz, H^T H = {CORRELATION}^|i-j| exactly",
            "snr": "1/sigma^2 per receive antenna, unit-norm channel columns",
            "train_snr_db": list(p.train_snr),
        },
        "train_s": train_s,
        "params": count_parameters(detnet, trainable_only=False),
        "methods": {},
        "timing_ms_per_10k_symbols": {},
        "complete": False,
    }

    def progress(methods: dict[str, Any], timing: dict[str, float]) -> None:
        # partial results after every SNR point: a run stopped early keeps what it measured
        results.update(methods=methods, timing_ms_per_10k_symbols=timing)
        results["wall_s"] = time.perf_counter() - t0
        if args.out is not None:
            write_json(args.out, "results.json", results)

    methods, _ = evaluate(p, detnet, log, progress)
    results["complete"] = True
    progress(methods, results["timing_ms_per_10k_symbols"])
    log(f"done in {results['wall_s']:.1f} s")
    if args.out is not None:
        plot(
            methods,
            args.out / "ber_vs_snr.png",
            f"{USERS}×{ANTENNAS} BPSK, fixed {CORRELATION}-Toeplitz channel, DetNet {p.depth} layers",
        )
    return results


if __name__ == "__main__":
    main()
