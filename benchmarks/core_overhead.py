"""Overhead of the unfolding abstraction, measured side by side in one run.

Compares, on the same batch and the same weights:

* ours: ``UnfoldedModel(ISTA(), problem, K, "objective", variant=...)`` forward (+ backward);
* bare: a hand-written PyTorch loop of the same recursion (no Trajectory, no parameter dicts);
* classical: ``ClassicalSolver`` (ISTA) for K iterations;
* CVXPY: ``lasso_reference`` on the same batch (what a per-instance convex solve costs).

Timings interleave the contenders (round-robin, median of repeats) so that machine load affects
them alike; the figures that matter are the ratios. Usage::

    python benchmarks/core_overhead.py [--m 250 --n 500 --depth 16 --batch 256 --repeats 20]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from lightning_unfold import ISTA, ClassicalSolver, SparseRecovery, UnfoldedModel
from lightning_unfold.algorithms import soft_threshold


def bare_lista_cp(
    x: torch.Tensor, H: torch.Tensor, W: list[torch.Tensor], theta: list[torch.Tensor]
) -> torch.Tensor:
    s = x.new_zeros(x.shape[0], H.shape[1])
    for Wk, tk in zip(W, theta, strict=True):
        s = soft_threshold(s + (x - s @ H.T) @ Wk.T, tk)
    return s


def timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--m", type=int, default=250)
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--depth", type=int, default=16)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--cvxpy-samples", type=int, default=4)
    args = ap.parse_args()

    problem = SparseRecovery(m=args.m, n=args.n, seed=0)
    x, _ = problem.sample(args.batch, seed=1)
    ours = UnfoldedModel(ISTA(), problem, args.depth, "objective", variant="lista_cp")
    H = ours.constants.H
    W = [p.detach().clone().requires_grad_() for p in ours.learned["W1"]]
    theta = [p.detach().clone().requires_grad_() for p in ours.learned["threshold"]]
    classical = ClassicalSolver(ISTA(), problem, args.depth)
    torch.testing.assert_close(ours(x).final_estimate, bare_lista_cp(x, H, W, theta))

    contenders: dict[str, Callable[[], object]] = {
        "ours forward": lambda: ours(x),
        "bare forward": lambda: bare_lista_cp(x, H, W, theta),
        "ours fwd+bwd": lambda: ours(x).final_estimate.square().sum().backward(),
        "bare fwd+bwd": lambda: bare_lista_cp(x, H, W, theta).square().sum().backward(),
        "classical ISTA K it.": lambda: classical(x),
    }
    for fn in contenders.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {k: [] for k in contenders}
    for _ in range(args.repeats):
        for name, fn in contenders.items():
            times[name].append(timed(fn))
    med = {k: statistics.median(v) for k, v in times.items()}

    from lightning_unfold.theory import lasso_reference

    xs = x[: args.cvxpy_samples].double().numpy()
    cvx = timed(lambda: lasso_reference(problem.H.numpy(), xs, problem.rho))
    cvx_per_sample = cvx / args.cvxpy_samples

    print(
        f"m={args.m} n={args.n} K={args.depth} batch={args.batch} "
        f"threads={torch.get_num_threads()} (median of {args.repeats}, interleaved)"
    )
    for name, t in med.items():
        print(f"  {name:<22} {t * 1e3:9.2f} ms   {t / args.batch * 1e6:9.1f} us/sample")
    print(
        f"  {'CVXPY (Clarabel)':<22} {cvx_per_sample * 1e3:9.2f} ms/sample "
        f"({args.cvxpy_samples} samples)"
    )
    print("ratios:")
    print(f"  ours/bare forward           {med['ours forward'] / med['bare forward']:.3f}")
    print(f"  ours/bare forward+backward  {med['ours fwd+bwd'] / med['bare fwd+bwd']:.3f}")
    print(f"  ours forward / classical    {med['ours forward'] / med['classical ISTA K it.']:.3f}")
    print(
        f"  CVXPY / ours (per sample)   {cvx_per_sample / (med['ours forward'] / args.batch):.0f}x"
    )


if __name__ == "__main__":
    main()
