"""The ``lightning-unfold`` command line.

* ``lightning-unfold fit|validate|test --config FILE.yaml`` — LightningCLI over
  :class:`~lightning_unfold.training.UnfoldedModule` and
  :class:`~lightning_unfold.training.SyntheticDataModule` (or any data module that takes a
  ``problem``: ``--data UserDataModule --data.path obs.npz`` for the user's own data);
  ``model.problem`` is linked to ``data.problem`` so the YAML names the problem once.
* ``lightning-unfold demo`` — train a small ALISTA on CPU, print its per-layer NMSE against
  ISTA and FISTA at equal iteration counts, save the checkpoint and print its verification report.
* ``lightning-unfold check CHECKPOINT`` — run the verification checks on a checkpoint.

Errors are one line on stderr: a bad value, a misspelt key (with the keys it is close to), a
file that is not a checkpoint, or a checkpoint of another problem or model than the config's.
Exit codes: 0 done, 1 the run failed after it started, 2 the command or its configuration is
wrong. ``--traceback`` (anywhere on the line) or the environment variable
``LIGHTNING_UNFOLD_TRACEBACK=1`` shows the full Python traceback instead.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import inspect
import logging
import math
import os
import re
import sys
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
from jsonargparse import ArgumentError, Namespace
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from lightning_unfold.training import SyntheticDataModule, UnfoldedModule

__all__ = ["CommandLineError", "UnfoldCLI", "main", "run_demo"]

#: set to 1 (or pass ``--traceback``) to see the full traceback of an error
TRACEBACK_ENV = "LIGHTNING_UNFOLD_TRACEBACK"
PROG = "lightning-unfold"

#: model hyperparameters that decide what a checkpoint's weights mean; a config that differs in
#: one of them from the checkpoint is refused (training-only settings such as ``lr`` may differ)
MODEL_KEYS = (
    "algorithm",
    "algorithm_options",
    "paradigm",
    "variant",
    "depth",
    "tied",
    "hidden",
    "shared_correction",
    "black_box_params",
    "learn_hyperparameters",
)
#: ``--ckpt_path`` values that Lightning resolves itself (no file to compare)
_SPECIAL_CKPT = frozenset({"best", "last", "hpc", "registry"})

_DESCRIPTION = f"""\
Deep unfolding with PyTorch Lightning, and a verification toolkit. Commands:

  {PROG} fit|validate|test|predict --config FILE.yaml
      train or evaluate a model (the subcommands below; {PROG} fit --help)
  {PROG} check CHECKPOINT [--suite NAMES] [--out DIR]
      run the verification checks on a checkpoint ({PROG} check --help)
  {PROG} demo [--epochs N]
      train a small ALISTA, compare it with ISTA and FISTA, verify it ({PROG} demo --help)

Exit codes: 0 done, 1 the run failed, 2 bad command, configuration or checkpoint. Errors are
one line; --traceback or {TRACEBACK_ENV}=1 shows the full traceback."""


class CommandLineError(ValueError):
    """An error of the command or its configuration, reported as one line with exit code 2."""


#: Lightning's log lines that the command line drops: advertisements for its cloud products, and
#: the seed notice (printed before a configuration error it would be the only other line; the
#: seed is in the run's saved config.yaml)
_QUIET = ("💡 Tip", "Seed set to")


#: Lightning warnings about Lightning's own code, which a user cannot act on (message regexes):
#: its deprecation of ``LeafSpec`` (raised inside Lightning with torch >= 2.10) and its advice on
#: ``IterableDataset.__len__`` with several loader workers (the synthetic data use none). Both
#: print the installation's site-packages path. Ignored by the command line and the gallery.
LIBRARY_NOTICES = (
    r".*LeafSpec.*is deprecated",
    r"Your `IterableDataset` has `__len__` defined",
)


def quiet_library_notices() -> None:
    """Ignore :data:`LIBRARY_NOTICES` (every other warning still shows)."""
    for message in LIBRARY_NOTICES:
        warnings.filterwarnings("ignore", message=message)


class _NoCloudTips(logging.Filter):
    """Drop Lightning's advertisements for its cloud products ("💡 Tip: ... litlogger")."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).lstrip().startswith(_QUIET)


_TIP_FILTER = _NoCloudTips()


def _silence_cloud_tips() -> None:
    for name in (
        "lightning.pytorch.utilities.rank_zero",
        "lightning.fabric.utilities.rank_zero",
        "lightning.fabric.utilities.seed",
    ):
        logger = logging.getLogger(name)
        if _TIP_FILTER not in logger.filters:
            logger.addFilter(_TIP_FILTER)


def _one_line(exc: BaseException) -> str:
    """The exception's message on one line (a ``KeyError``'s quotes removed)."""
    text = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
    text = " ".join(part.strip() for part in text.splitlines() if part.strip())
    return text or type(exc).__name__


def _close(word: str, choices: Sequence[str]) -> list[str]:
    return difflib.get_close_matches(word, sorted(set(choices)), n=3, cutoff=0.6)


def _did_you_mean(matches: Sequence[str]) -> str:
    return f"; did you mean {' or '.join(matches)}?" if matches else ""


def _init_parameters(class_path: str) -> list[str]:
    """The constructor arguments of the class named by ``class_path`` ([] if it is not found)."""
    module_name, _, name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), name)
        params = inspect.signature(cls.__init__).parameters
    except (ImportError, AttributeError, TypeError, ValueError):
        return []
    return [p for p in params if p != "self"]


def _same(a: Any, b: Any) -> bool:
    """Equality of configuration values: numbers to 1e-9 relative, sequences and tensors by
    element, mappings by key."""
    if isinstance(a, Namespace):
        a = a.as_dict()
    if isinstance(b, Namespace):
        b = b.as_dict()
    if hasattr(a, "tolist") and not isinstance(a, (str, bytes)):
        a = a.tolist()
    if hasattr(b, "tolist") and not isinstance(b, (str, bytes)):
        b = b.tolist()
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, bool) or isinstance(b, bool):
        return a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=0.0) or (a != a and b != b)
    return a == b


def _class_of(class_path: Any) -> Any:
    module_name, _, name = str(class_path).rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError, ValueError):
        return str(class_path)


def checkpoint_differences(hparams: Mapping[str, Any], model: Mapping[str, Any]) -> list[str]:
    """How a checkpoint's hyperparameters differ from a config's ``model`` section.

    Compares the problem (its class, then every constructor argument both sides name) and the
    model settings in :data:`MODEL_KEYS` (an unset ``algorithm`` or ``variant`` — the family's
    default — is not compared). Returns one phrase per difference, ``[]`` when they agree.
    """
    out: list[str] = []
    ck_prob, cfg_prob = hparams.get("problem"), model.get("problem")
    if isinstance(cfg_prob, Namespace):
        cfg_prob = cfg_prob.as_dict()
    if isinstance(ck_prob, Mapping) and isinstance(cfg_prob, Mapping):
        ck_cls, cfg_cls = (
            _class_of(ck_prob.get("class_path")),
            _class_of(cfg_prob.get("class_path")),
        )
        if ck_cls != cfg_cls:
            name = lambda c: getattr(c, "__name__", str(c))  # noqa: E731
            out.append(f"problem {name(ck_cls)} (checkpoint) vs {name(cfg_cls)} (config)")
        else:
            ck_args = dict(ck_prob.get("init_args") or {})
            cfg_args = dict(cfg_prob.get("init_args") or {})
            for key in sorted(ck_args.keys() & cfg_args.keys()):
                if not _same(ck_args[key], cfg_args[key]):
                    out.append(f"problem {key} {ck_args[key]!r} vs {cfg_args[key]!r}")
    for key in MODEL_KEYS:
        if key not in hparams or key not in model:
            continue
        a, b = hparams[key], model[key]
        if key in ("algorithm", "variant") and (a is None or b is None):
            continue
        if not _same(a, b):
            out.append(f"{key} {a!r} vs {b!r}")
    return out


class UnfoldCLI(LightningCLI):
    """LightningCLI with the problem given once (under ``model.problem``), errors raised as
    exceptions (so that :func:`main` prints them in one line), misspelt keys answered with the
    keys they are close to, and ``--ckpt_path`` checked against the config before use.

    ``phase`` (a list) receives ``"run"`` when the trainer is about to start: an error after
    that is a failed run (exit 1), one before it a bad command or configuration (exit 2).

    ``data`` is any ``LightningDataModule`` that takes a ``problem``, by default
    :class:`~lightning_unfold.training.SyntheticDataModule` (a config's ``data:`` block without
    ``class_path`` configures it); ``--data UserDataModule --data.path obs.npz`` trains on the
    user's own file (:class:`~lightning_unfold.training.UserDataModule`).
    """

    def __init__(self, *args: Any, phase: list[str] | None = None, **kwargs: Any) -> None:
        self.phase = phase if phase is not None else []
        super().__init__(*args, **kwargs)

    def init_parser(self, **kwargs: Any) -> LightningArgumentParser:
        kwargs.setdefault("exit_on_error", False)
        return super().init_parser(**kwargs)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        if not self.subclass_mode_data:  # a fixed data module class (as tests build it)
            parser.link_arguments("model.problem", "data.problem", apply_on="instantiate")
            return
        parser.link_arguments("model.problem", "data.init_args.problem", apply_on="instantiate")
        default = f"{SyntheticDataModule.__module__}.{SyntheticDataModule.__name__}"
        parser.set_defaults({"data": {"class_path": default}})

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """Parse ``args`` (never also ``sys.argv``: :func:`main` passes the command line), then
        check ``--ckpt_path`` against the parsed ``model`` section."""
        if isinstance(args, (dict, Namespace)):  # a parsed config from Python: Lightning's way
            super().parse_arguments(parser, args)
            return
        try:
            self.config = parser.parse_args(args)
        except ArgumentError as exc:
            raise CommandLineError(self._explain(_one_line(exc), list(args or []))) from exc
        sub = self.config.get("subcommand")
        if sub:
            self._check_ckpt_path(sub)

    def _keys(self, sub: str | None) -> list[str]:
        parser = self._subcommand_parsers.get(sub) if sub else None
        parser = parser or self.parser
        return [
            opt[2:]
            for opt in getattr(parser, "_option_string_actions", {})
            if opt.startswith("--") and opt not in ("--help", "--config", "--print_config")
        ]

    def _explain(self, message: str, args: list[str]) -> str:
        """The parser's message, on one line, with the keys close to a misspelt one."""
        sub = next((a for a in args if a in self.subcommands()), None)
        message = re.sub(r"\s*tip: For details.*$", "", message)
        hint = ""
        m = re.search(r"class_path '([\w.]+)'.*?Option '(\w+)' is not accepted", message)
        if m:
            hint = _did_you_mean(_close(m.group(2), _init_parameters(m.group(1))))
        else:
            bad = re.findall(r"does not accept option '([\w.]+)'", message)
            m = re.search(r"[Uu]nrecognized arguments: (.*)", message)
            if m:
                bad += [t.lstrip("-").split("=")[0] for t in m.group(1).split() if t[:2] == "--"]
            keys = self._keys(sub)
            for key in bad[:1]:
                prefix, _, leaf = key.rpartition(".")
                siblings = [k.rpartition(".")[2] for k in keys if k.rpartition(".")[0] == prefix]
                found = _close(leaf, siblings)
                found = [f"{prefix}.{f}" if prefix else f for f in found] or _close(key, keys)
                hint = _did_you_mean(found)
        m = re.search(r"invalid choice: '([^']*)'", message)
        if m:
            hint = _did_you_mean(_close(m.group(1), [*self.subcommands(), "check", "demo"]))
        if not sub and "subcommand" in message and not hint:
            hint = f"; commands: {', '.join(self.subcommands())}, check, demo ({PROG} --help)"
        return f"{_where(sub)}: error: {message.rstrip('.')}{hint}"

    def _check_ckpt_path(self, sub: str) -> None:
        """Refuse a ``--ckpt_path`` that is not an UnfoldedModule checkpoint or whose problem
        or model differs from the config (Lightning would otherwise load the checkpoint's own
        hyperparameters over the config and evaluate another model than the one asked for)."""
        from lightning_unfold.checks.cli import read_checkpoint, require_unfolded_checkpoint

        ckpt_path = self.config[sub].get("ckpt_path")
        if not ckpt_path or str(ckpt_path) in _SPECIAL_CKPT:
            return
        ckpt = read_checkpoint(ckpt_path)
        require_unfolded_checkpoint(ckpt, ckpt_path)
        model = self.config[sub].get("model")
        model = model.as_dict() if isinstance(model, Namespace) else dict(model or {})
        diffs = checkpoint_differences(ckpt.get("hyper_parameters") or {}, model)
        if diffs:
            raise CommandLineError(
                f"{PROG} {sub}: error: the checkpoint {str(ckpt_path)!r} does not match the config "
                f"({'; '.join(diffs)}); pass the config it was trained with (its settings are "
                "in the checkpoint's hyper_parameters and the run's config.yaml)."
            )

    def before_instantiate_classes(self) -> None:
        """``validate`` / ``test`` on a config that turns those batches off (``limit_val_batches:
        0`` keeps validation out of ``fit``) run on the whole set, and say so, rather than run
        nothing and print nothing."""
        sub = self.subcommand
        key = {"validate": "limit_val_batches", "test": "limit_test_batches"}.get(sub or "")
        if key is None:
            return
        trainer = self.config[sub]["trainer"]
        if trainer.get(key) is not None and float(trainer[key]) == 0.0:
            trainer[key] = None  # Lightning's default, the whole set (1.0 adds its notice)
            data = "validation" if sub == "validate" else "test"
            print(
                f"{PROG} {sub}: note: the config sets trainer.{key}: 0 (for fit); {sub} runs on "
                f"the whole {data} set instead (pass --trainer.{key}=... to limit it).",
                file=sys.stderr,
            )

    def _ready(self) -> None:
        self.phase.append("run")

    def before_fit(self) -> None:
        self._ready()

    def before_validate(self) -> None:
        self._ready()

    def before_test(self) -> None:
        self._ready()

    def before_predict(self) -> None:
        self._ready()


def _where(sub: str | None) -> str:
    return f"{PROG} {sub}" if sub else PROG


def _cli(argv: list[str], traceback: bool) -> int:
    phase: list[str] = []
    try:
        UnfoldCLI(
            UnfoldedModule,
            L.LightningDataModule,
            subclass_mode_data=True,
            args=argv,
            save_config_kwargs={"overwrite": True},
            seed_everything_default=0,
            parser_kwargs={
                "prog": PROG,
                "description": _DESCRIPTION,
                "formatter_class": argparse.RawDescriptionHelpFormatter,
            },
            phase=phase,
        )
    except Exception as exc:
        if traceback:
            raise
        code = 1 if phase and not isinstance(exc, CommandLineError) else 2
        text = _one_line(exc)
        sub = next((a for a in argv if a in UnfoldCLI.subcommands()), None)
        prefix = "" if text.startswith(PROG) else f"{_where(sub)}: error: "
        print(f"{prefix}{text}", file=sys.stderr)
        return code
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
    import lightning as L
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
    trainer.save_checkpoint(ckpt, weights_only=False)  # full state: the run can resume
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
    """Run the command line on ``argv`` (default ``sys.argv[1:]``); return the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    traceback = "--traceback" in args or os.environ.get(TRACEBACK_ENV, "") not in ("", "0")
    args = [a for a in args if a != "--traceback"]
    _silence_cloud_tips()
    quiet_library_notices()
    if args and args[0] == "demo":
        return run_demo(args[1:])
    if args and args[0] == "check":
        from lightning_unfold.checks import check_command

        try:
            return int(check_command(args[1:]))
        except Exception as exc:  # the model could not be run at all (each check's own
            if traceback:  # failure is already an ERROR in the report)
                raise
            print(
                f"{_where('check')}: error: the checks could not run the model: "
                f"{type(exc).__name__}: {_one_line(exc)} (--traceback shows where).",
                file=sys.stderr,
            )
            return 1
    return _cli(args, traceback)


if __name__ == "__main__":
    sys.exit(main())
