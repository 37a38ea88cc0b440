"""The ``lightning-unfold`` command line.

* ``lightning-unfold fit|validate|test --config FILE.yaml`` — LightningCLI over
  :class:`~lightning_unfold.training.UnfoldedModule` and
  :class:`~lightning_unfold.training.SyntheticDataModule` (or any data module that takes a
  ``problem``: ``--data UserDataModule --data.path obs.npz`` for the user's own data);
  ``model.problem`` is linked to ``data.problem`` so the YAML names the problem once.
* ``lightning-unfold demo`` — train a small ALISTA on CPU, print its per-layer NMSE against
  ISTA and FISTA at equal iteration counts, save the checkpoint and print its verification report.
* ``lightning-unfold check CHECKPOINT`` — run the verification checks on a checkpoint.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import lightning as L
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from lightning_unfold.training import SyntheticDataModule, UnfoldedModule

__all__ = ["UnfoldCLI", "main", "run_demo"]


class UnfoldCLI(LightningCLI):
    """LightningCLI with the problem given once (under ``model.problem``).

    ``data`` is any ``LightningDataModule`` that takes a ``problem``, by default
    :class:`~lightning_unfold.training.SyntheticDataModule` (a config's ``data:`` block without
    ``class_path`` configures it); ``--data UserDataModule --data.path obs.npz`` trains on the
    user's own file (:class:`~lightning_unfold.training.UserDataModule`).
    """

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        if not self.subclass_mode_data:  # a fixed data module class (as tests build it)
            parser.link_arguments("model.problem", "data.problem", apply_on="instantiate")
            return
        parser.link_arguments("model.problem", "data.init_args.problem", apply_on="instantiate")
        default = f"{SyntheticDataModule.__module__}.{SyntheticDataModule.__name__}"
        parser.set_defaults({"data": {"class_path": default}})


def _cli(argv: list[str]) -> int:
    UnfoldCLI(
        UnfoldedModule,
        L.LightningDataModule,
        subclass_mode_data=True,
        args=argv,
        save_config_kwargs={"overwrite": True},
        seed_everything_default=0,
        parser_kwargs={"prog": "lightning-unfold"},
    )
    return 0


def _demo_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lightning-unfold demo",
        description="Train a small unfolded model (ALISTA by default) on synthetic sparse "
        "recovery, compare it with ISTA and FISTA layer by layer, save the checkpoint and print "
        "its verification report.",
    )
    p.add_argument("--variant", default="alista", choices=["alista", "lista_cp", "lista_cpss"])
    p.add_argument("--m", type=int, default=128, help="observation size (default 128)")
    p.add_argument("--n", type=int, default=256, help="code size (default 256)")
    p.add_argument("--depth", type=int, default=12, help="layers K (default 12)")
    p.add_argument("--epochs", type=int, default=20, help="training epochs (default 20)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--out",
        type=Path,
        default=Path("runs/demo"),
        help="directory for the checkpoint and report (default runs/demo)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (default 1: matrices this small gain nothing "
        "from more, and oversubscribed cores slow them down several-fold)",
    )
    p.add_argument("--no-check", action="store_true", help="skip the verification report")
    return p


def run_demo(argv: Sequence[str] = ()) -> int:
    """The main job: train, compare, save, verify. Returns a process exit code."""
    import torch

    from lightning_unfold.algorithms import SparseRecovery

    args = _demo_parser().parse_args(list(argv))
    torch.manual_seed(args.seed)
    torch.set_num_threads(max(1, args.threads))
    args.out.mkdir(parents=True, exist_ok=True)
    problem = SparseRecovery(m=args.m, n=args.n, sparsity=0.1, snr_db=None, rho=0.1, seed=args.seed)
    data = SyntheticDataModule(
        problem, batch_size=64, train_batches=40, val_size=1000, test_size=1000, seed=args.seed
    )
    module = UnfoldedModule(
        problem,
        paradigm="objective",
        variant=args.variant,
        depth=args.depth,
        formulation="multi_iteration",
        lr=5e-3,
    )
    print(
        f"Training {args.variant.upper()} (K={args.depth}) on sparse recovery "
        f"m={args.m}, n={args.n}, p=0.1, noiseless — {args.epochs} epochs on CPU ...",
        flush=True,
    )
    trainer = L.Trainer(
        max_epochs=args.epochs,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=True,
        default_root_dir=str(args.out),
    )
    start = time.perf_counter()
    trainer.fit(module, data)
    seconds = time.perf_counter() - start
    ckpt = args.out / "model.ckpt"
    trainer.save_checkpoint(ckpt)
    trainer.test(module, data, verbose=False)
    metric = module.primary_metric
    ours = module.primary_curves["test"]

    curves: dict[str, list[float]] = {}
    for name in ("ista", "fista"):
        base = UnfoldedModule(problem, algorithm=name, paradigm="classical", depth=args.depth)
        L.Trainer(
            accelerator="cpu",
            devices=1,
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        ).test(base, data, verbose=False)
        curves[name] = base.primary_curves["test"]

    print(
        f"\nTest {metric.axis_label()} over {data.test_size} samples after each layer "
        f"— trained in {seconds:.0f} s:"
    )
    print(f"{'layer':>5} | {'ISTA':>8} | {'FISTA':>8} | {args.variant.upper():>8}")
    print("-" * 40)
    for k in range(1, args.depth + 1):
        print(f"{k:>5} | {curves['ista'][k]:8.2f} | {curves['fista'][k]:8.2f} | {ours[k]:8.2f}")
    gain = abs(curves["fista"][-1] - ours[-1])
    verdict = "better" if metric.better(ours[-1], curves["fista"][-1]) else "worse"
    print(
        f"\nAt K={args.depth}: {args.variant.upper()} {ours[-1]:.2f} vs FISTA "
        f"{curves['fista'][-1]:.2f} {metric.unit} — {gain:.1f} {metric.unit} {verdict}."
    )
    print(f"Checkpoint: {ckpt}")
    code = 0
    if not args.no_check:
        code = _demo_report(module, data, args.out)
    return code


def _demo_report(module: UnfoldedModule, data: SyntheticDataModule, out: Path) -> int:
    """Print the verification report of the demo's model; write it under ``out/report``."""
    from lightning_unfold.checks import report_for_module

    start = time.perf_counter()
    report = report_for_module(module, data, out / "report")
    print(
        f"\nVerification report ({time.perf_counter() - start:.0f} s; files in {out / 'report'}):"
    )
    print(report.table())
    return int(report.exit_code)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "demo":
        return run_demo(args[1:])
    if args and args[0] == "check":
        from lightning_unfold.checks import check_command

        return int(check_command(args[1:]))
    return _cli(args)


if __name__ == "__main__":
    sys.exit(main())
