"""``lightning-unfold check CHECKPOINT [--suite NAMES] [--out DIR]``, as a function.

The lead's CLI calls :func:`check_command` with the arguments after ``check``. Exit codes:
0 every check passed (skipped ones do not count), 1 some check failed or could not run,
2 usage or checkpoint errors.
"""

from __future__ import annotations

import argparse
import difflib
import pickle
import sys
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .report import Report, report_for_module
from .runner import CHECKS, SUITES, resolve_suite

__all__ = [
    "CheckpointError",
    "check_command",
    "load_checkpoint",
    "read_checkpoint",
    "require_unfolded_checkpoint",
]

_REQUIRED_HPARAMS = ("problem", "paradigm", "depth", "supervision", "formulation")


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable or not an ``UnfoldedModule`` checkpoint."""


#: what a PyTorch checkpoint starts with: a zip archive (``torch.save`` since 1.6, Lightning's
#: ``save_checkpoint``) or a pickle of protocol >= 2 (the legacy ``torch.save`` format)
_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_MAGIC = b"\x80"


def _sniff(path: Path) -> None:
    """Refuse, before ``torch.load`` sees it, a file that is no PyTorch checkpoint at all.

    ``torch.load`` on a text file fails with ``KeyError: 101`` (the byte ``e`` read as a pickle
    opcode) and on random bytes with a message about unpickling; neither tells the user that
    they passed the wrong file.
    """
    with open(path, "rb") as f:
        head = f.read(4096)
    if head.startswith(_ZIP_MAGIC) or head.startswith(_PICKLE_MAGIC):
        return
    if not head:
        raise CheckpointError(f"{str(path)!r} is empty, not a checkpoint.")
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and "\x00" not in text:
        first = text.strip().splitlines()[0][:60] if text.strip() else ""
        raise CheckpointError(
            f"{str(path)!r} is a text file (it begins {first!r}), not a checkpoint; pass the "
            ".ckpt file that Trainer.save_checkpoint or the ModelCheckpoint callback wrote."
        )
    raise CheckpointError(
        f"{str(path)!r} is not a checkpoint: a PyTorch checkpoint is a zip archive written by "
        f"torch.save or Trainer.save_checkpoint, and this file begins with the bytes "
        f"{head[:8].hex(' ')}. Pass the .ckpt file that training wrote."
    )


def read_checkpoint(path: str | Path) -> Mapping[str, Any]:
    """Read a checkpoint file into its dict, safely (``weights_only=True``: no pickled code runs).

    Raises:
        CheckpointError: the file is missing, a directory, a text file or other non-checkpoint
            bytes (the message says "not a checkpoint"), corrupt, or holds objects beyond plain
            data and tensors.
    """
    import torch

    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"Checkpoint {str(path)!r} does not exist; check the path.")
    if path.is_dir():
        raise CheckpointError(
            f"{str(path)!r} is a directory; pass the .ckpt file inside it (e.g. last.ckpt)."
        )
    _sniff(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{str(path)!r} cannot be loaded safely: it holds Python objects beyond tensors and "
            "plain data, so it is not an UnfoldedModule checkpoint (nothing in it was executed)."
        ) from exc
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError, KeyError) as exc:
        raise CheckpointError(
            f"{str(path)!r} is not a readable checkpoint (corrupt or truncated?): "
            f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}."
        ) from exc
    if not isinstance(obj, Mapping):
        raise CheckpointError(
            f"{str(path)!r} holds a {type(obj).__name__}, not a Lightning checkpoint dict."
        )
    return obj


def require_unfolded_checkpoint(ckpt: Mapping[str, Any], path: str | Path) -> None:
    """Raise :class:`CheckpointError` unless ``ckpt`` is a Lightning checkpoint of an
    :class:`~lightning_unfold.training.UnfoldedModule` (its hyperparameters and ``model.*``
    weights); ``path`` names the file in the message."""
    p = str(Path(path))
    if "state_dict" not in ckpt or "pytorch-lightning_version" not in ckpt:
        keys = ", ".join(sorted(map(str, ckpt))[:6])
        raise CheckpointError(
            f"{p!r} is not a Lightning checkpoint (its keys: {keys}); save one with "
            "Trainer(...).save_checkpoint(path) or the ModelCheckpoint callback."
        )
    hp = ckpt.get("hyper_parameters") or {}
    missing = [k for k in _REQUIRED_HPARAMS if k not in hp]
    state = ckpt["state_dict"]
    if missing or not any(str(k).startswith("model.") for k in state):
        raise CheckpointError(
            f"{p!r} is a checkpoint of another LightningModule (its hyperparameters lack "
            f"{missing or 'nothing'}, state_dict keys e.g. {list(state)[:3]}); "
            "lightning-unfold reads checkpoints of lightning_unfold.UnfoldedModule."
        )


def load_checkpoint(path: str | Path) -> Any:
    """Load an :class:`~lightning_unfold.training.UnfoldedModule` from a Lightning checkpoint.

    The file is read with ``weights_only=True`` (no arbitrary pickled code runs): the module's
    hyperparameters are plain data (the problem is stored as its ``to_config()`` dict).

    Raises:
        CheckpointError: for a missing file, a corrupt file, a plain ``torch.save`` dict or a
            checkpoint of another LightningModule; the message says which.
    """
    p = Path(path)
    require_unfolded_checkpoint(read_checkpoint(p), p)
    from lightning_unfold.training import UnfoldedModule

    try:
        module = UnfoldedModule.load_from_checkpoint(p, map_location="cpu", weights_only=True)
    except (RuntimeError, KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(
            f"{str(p)!r} looks like an UnfoldedModule checkpoint but could not be restored: "
            f"{str(exc).splitlines()[0]}"
        ) from exc
    module.eval()
    return module


def _parser() -> argparse.ArgumentParser:
    checks = "\n".join(f"  {n:<20} {spec.summary}" for n, spec in CHECKS.items())
    suites = "\n".join(f"  {n:<20} {', '.join(v)}" for n, v in SUITES.items())
    p = argparse.ArgumentParser(
        prog="lightning-unfold check",
        description="Run verification checks on a trained UnfoldedModule checkpoint.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"checks:\n{checks}\n\nsuites:\n{suites}\n\nexit codes: 0 all passed, "
        "1 some check failed, 2 usage or checkpoint error.",
    )
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="a .ckpt file of an UnfoldedModule")
    p.add_argument(
        "--suite",
        default="default",
        metavar="NAMES",
        help="suite name or comma-separated check/suite names (default: %(default)s)",
    )
    p.add_argument(
        "--out",
        default="check-report",
        metavar="DIR",
        help="directory for report.json, report.md and plots (default: %(default)s)",
    )
    p.add_argument(
        "--samples", type=int, default=256, help="test samples drawn (default: %(default)s)"
    )
    p.add_argument(
        "--seed", type=int, default=0, help="seed of the test data (default: %(default)s)"
    )
    return p


def check_command(argv: Sequence[str] | None = None) -> int:
    """Run ``lightning-unfold check``; print the table; write the report; return the exit code.

    Args:
        argv: the arguments after ``check`` (default ``sys.argv[1:]``).

    Returns:
        0 all checks passed, 1 some check failed or could not run, 2 usage/checkpoint error.
    """
    parser = _parser()
    try:
        args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as exc:  # --help (0) or a usage error (2): argparse has printed why
        return int(exc.code or 0)
    try:
        resolve_suite(args.suite)
    except ValueError as exc:
        names = [*SUITES, *CHECKS]
        bad = [n.strip() for n in args.suite.split(",") if n.strip() not in names]
        close = difflib.get_close_matches(bad[0], names, n=3) if bad else []
        hint = f" Did you mean {' or '.join(close)}?" if close else ""
        print(f"lightning-unfold check: error: {exc}{hint}", file=sys.stderr)
        return 2
    if args.samples < 1:
        print("lightning-unfold check: error: --samples must be >= 1.", file=sys.stderr)
        return 2
    try:
        module = load_checkpoint(args.checkpoint)
    except CheckpointError as exc:
        print(f"lightning-unfold check: error: {exc}", file=sys.stderr)
        return 2
    data = module.problem.sample(args.samples, seed=(3, args.seed))
    report: Report = report_for_module(
        module,
        data,
        args.out,
        suite=args.suite,
        n_samples=args.samples,
        progress=lambda line: print(line, file=sys.stderr, flush=True),
    )
    report.model["checkpoint"] = str(Path(args.checkpoint))
    report.write(args.out)
    print(report.table())
    print(f"\nReport written to {Path(args.out) / 'report.md'} (and report.json, plots).")
    return report.exit_code
