"""Time the default check suite on a demo-size model.

Usage::

    python benchmarks/checks_speed.py                       # m=250, n=500, K=16, LISTA-CP
    python benchmarks/checks_speed.py --variant alista --supervision unsupervised
    python benchmarks/checks_speed.py --m 100 --n 200 --depth 10 --threads 2

Prints the wall-clock seconds of ``run_checks(..., suite="default")`` (plots included when
``--out`` is given) and of the same suite with ``reference_agreement`` forced on (CVXPY
solves), for an untrained model (the checks' cost does not depend on training). Target: the
default suite within 60 s on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
from lightning_unfold.checks import format_table, run_checks

from lightning_unfold import SparseRecovery, UnfoldedModule


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--m", type=int, default=250)
    p.add_argument("--n", type=int, default=500)
    p.add_argument("--depth", type=int, default=16)
    p.add_argument("--variant", default="lista_cp", help="lista, lista_cp, lista_cpss, alista")
    p.add_argument("--supervision", default="supervised", help="supervised | unsupervised")
    p.add_argument("--samples", type=int, default=256)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=None, help="also write plots here (default: a temp dir)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    problem = SparseRecovery(m=args.m, n=args.n, seed=0)
    module = UnfoldedModule(
        problem,
        paradigm="objective",
        variant=args.variant,
        depth=args.depth,
        supervision=args.supervision,
    )
    out = args.out or tempfile.mkdtemp(prefix="checks_speed_")
    for suite in ("default", "default,reference_agreement"):
        t0 = time.perf_counter()
        results = run_checks(module, None, None, suite, n_samples=args.samples, out_dir=out)
        seconds = time.perf_counter() - t0
        print(format_table(results))
        print(
            f"suite={suite!r}: {seconds:.1f} s  (m={args.m}, n={args.n}, K={args.depth}, "
            f"variant={args.variant}, supervision={args.supervision}, samples={args.samples}, "
            f"threads={args.threads})\n"
        )


if __name__ == "__main__":
    main()
