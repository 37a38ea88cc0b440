r"""The user's own data: tensors, NumPy arrays or files, checked against the problem at load time.

:class:`UserDataModule` serves observations :math:`x` and targets :math:`s` that the user brings,
instead of :class:`~lightning_unfold.training.SyntheticDataModule`'s seeded draws. Everything
downstream (every paradigm, supervision, schedule and check) reads the same ``(x, s)`` batches.

**Sources.** ``x`` / ``target`` given as tensors or arrays (Python), or ``path`` to a file:

========================  ====================================================================
``.npz``                  arrays under ``x_key`` (default ``"x"``) and ``target_key`` (``"s"``)
``.mat``                  MATLAB v4–v7.2 variables of the same names, read by ``scipy.io.loadmat``
``.pt`` / ``.pth``        a dict of tensors (the same keys), an ``(x, s)`` pair or a tensor ``x``
                          (``torch.load(weights_only=True)``: no code in the file is run)
``.npy``                  one array ``x``; targets, if any, from ``target_path``
========================  ====================================================================

MATLAB v7.3 files are HDF5 containers, which SciPy cannot read; save with ``save(..., '-v7')`` or
read them with ``h5py`` yourself and pass the arrays (an HDF5 reader is not a dependency of this
library: v7 ``.mat`` and ``.npz`` cover the same data without one).

**Labels.** ``target_key=None`` (CLI ``--data.target_key=null``) means unlabelled data: the
targets are all NaN (``-1`` for integer targets such as symbol indices), the library's mark of an
unlabelled row. Partly labelled data marks its unlabelled rows the same way, every entry of the
row; train it with ``supervision="semi_supervised"`` (or ``"unsupervised"``). Metrics use the
labelled rows only.

**Checks at load time** (the expected shapes and dtypes are read off one synthetic draw of the
problem, so they are the problem's own): the number of rows of ``x`` and the target agree; each
row has the problem's shape; dtypes are numeric, real where the problem is real, and integer
where its targets are integers; every entry of ``x`` and of every labelled target row is finite;
a target row is either labelled or entirely unlabelled; then the problem's own
``validate_observation``. The first failure raises one ``ValueError`` naming the source and the
offending entry, e.g. ``observations.npz['x'][17, 3] is NaN``.

**Splits.** One seeded permutation of the rows (``seed``) gives the validation
(``val_fraction``), test (``test_fraction``) and training sets, the same on every DDP rank;
Lightning's distributed sampler then shards each set across ranks. Training batches are shuffled
by a permutation seeded by ``(seed, epoch)``, so a resumed run sees the same order.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

from lightning_unfold.core.algorithm import ProblemSpec
from lightning_unfold.core.metrics import labelled_rows
from lightning_unfold.training.data import _EpochShuffle

__all__ = ["FILE_FORMATS", "UserDataModule", "load_arrays"]

#: the file suffixes :class:`UserDataModule` reads
FILE_FORMATS: tuple[str, ...] = (".npz", ".npy", ".mat", ".pt", ".pth")

ArrayLike = Tensor | np.ndarray


def _keys_hint(keys: list[str]) -> str:
    return ", ".join(repr(k) for k in keys) if keys else "none"


def _read(path: Path, suffix: str) -> Any:
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    if suffix == ".npy":
        return np.load(path, allow_pickle=False)
    if suffix == ".mat":
        from scipy.io import loadmat

        content = loadmat(path)
        return {k: v for k, v in content.items() if not k.startswith("__")}
    return torch.load(path, map_location="cpu", weights_only=True)


def _read_mapping(path: Path) -> Any:
    """The raw content of ``path``: a mapping of named arrays, a tuple or a single array."""
    suffix = path.suffix.lower()
    if suffix not in FILE_FORMATS:
        raise ValueError(
            f"{path}: unsupported file type {path.suffix!r}; valid: {list(FILE_FORMATS)} "
            "(or pass arrays: UserDataModule(x=..., target=...))."
        )
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no such file (relative paths are resolved from {Path.cwd()})."
        )
    try:
        return _read(path, suffix)
    except NotImplementedError as e:  # scipy's answer to a MATLAB v7.3 (HDF5) file
        raise ValueError(
            f"{path} is a MATLAB v7.3 (HDF5) file, which scipy.io.loadmat cannot read: save it "
            "with save(..., '-v7'), or read it with h5py and pass the arrays "
            "(UserDataModule(x=..., target=...))."
        ) from e
    except Exception as e:  # corrupt or foreign content: numpy, scipy, zip and unpickling errors
        raise ValueError(
            f"{path}: could not read it as a {suffix} file ({type(e).__name__}: {e})."
        ) from e


def load_arrays(
    path: str | Path,
    x_key: str = "x",
    target_key: str | None = "s",
    target_path: str | Path | None = None,
) -> tuple[tuple[ArrayLike, str], tuple[ArrayLike, str] | None]:
    """Read ``(x, its name)`` and ``(target, its name)`` (``None`` when unlabelled) from files.

    The names are what error messages print: ``"data.npz['x']"``, ``"x.npy"``.
    """
    path = Path(path)
    content = _read_mapping(path)
    name = str(path)

    def pick(obj: Mapping[str, Any], key: str, what: str, file: str) -> tuple[ArrayLike, str]:
        if key not in obj:
            raise ValueError(
                f"{file} has no key {key!r}; its keys are {_keys_hint(sorted(obj))}. Name the "
                f"right one with {what}=... (CLI: --data.{what}=...)"
                + (", or target_key=None for unlabelled data." if what == "target_key" else ".")
            )
        value = obj[key]
        if not isinstance(value, Tensor | np.ndarray):
            raise ValueError(
                f"{file}[{key!r}] is a {type(value).__name__}, not an array or a tensor."
            )
        return value, f"{file}[{key!r}]"

    targets: tuple[ArrayLike, str] | None
    if isinstance(content, Mapping):
        xs = pick(content, x_key, "x_key", name)
        wanted = target_key is not None and target_path is None
        targets = pick(content, target_key, "target_key", name) if wanted else None  # type: ignore[arg-type]
    elif isinstance(content, tuple | list):
        if len(content) not in (1, 2) or not all(isinstance(v, Tensor) for v in content):
            raise ValueError(
                f"{name} holds a {type(content).__name__} of {len(content)} items; a .pt file "
                "holds a dict of tensors, an (x, target) pair or one tensor x."
            )
        xs = (content[0], f"{name}[0]")
        targets = (
            (content[1], f"{name}[1]") if len(content) == 2 and target_key is not None else None
        )
    elif isinstance(content, Tensor | np.ndarray):
        xs = (content, name)
        targets = None
    else:
        raise ValueError(
            f"{name} holds a {type(content).__name__}; a .pt file holds a dict of tensors, an "
            "(x, target) pair or one tensor x."
        )
    if target_path is not None:  # the targets' own file (the main file's targets are ignored)
        tpath = Path(target_path)
        tcontent = _read_mapping(tpath)
        if isinstance(tcontent, Mapping):
            targets = pick(tcontent, target_key or "s", "target_key", str(tpath))
        elif isinstance(tcontent, Tensor | np.ndarray):
            targets = (tcontent, str(tpath))
        else:
            raise ValueError(f"{tpath} holds a {type(tcontent).__name__}, not an array.")
    return xs, targets


def _as_tensor(a: Any, name: str) -> Tensor:
    if isinstance(a, Tensor):
        return a.detach().cpu()
    arr = np.asarray(a)
    if arr.dtype.kind not in "biufc":
        raise ValueError(
            f"{name} has dtype {arr.dtype} ({_KIND.get(arr.dtype.kind, 'not numeric')}); it must "
            "hold numbers (e.g. float32/float64, or integers for symbol indices)."
        )
    if not arr.dtype.isnative:  # e.g. big-endian arrays from another machine
        arr = arr.astype(arr.dtype.newbyteorder("="))
    if arr.dtype in (np.uint16, np.uint32, np.uint64):  # no torch equivalent
        arr = arr.astype(np.int64)
    return torch.from_numpy(np.ascontiguousarray(arr))


_KIND = {"O": "Python objects", "U": "text", "S": "bytes", "V": "a record/struct", "M": "dates"}


def _entry(index: tuple[int, ...]) -> str:
    return "[" + ", ".join(str(i) for i in index) + "]"


def _first_bad(mask: Tensor) -> tuple[int, ...]:
    return tuple(int(i) for i in mask.nonzero()[0])


def _describe(v: float) -> str:
    return "NaN" if math.isnan(v) else ("+Inf" if v > 0 else "-Inf")


class UserDataModule(L.LightningDataModule):
    r"""The user's observations (and targets) as train / validation / test sets.

    Args:
        problem: the problem the data belong to; its synthetic draw fixes the expected shapes and
            dtypes, and its ``validate_observation`` runs on the data. The CLI links it from
            ``model.problem``.
        path: a ``.npz``, ``.npy``, ``.mat`` or ``.pt`` file (see the module docstring).
        x_key: the observations' name inside a ``.npz`` / ``.mat`` / ``.pt`` dict.
        target_key: the targets' name; ``None`` for unlabelled data.
        target_path: targets from a file of their own (e.g. a second ``.npy``).
        x: observations ``(B, ...)`` as a tensor or array (instead of ``path``).
        target: targets ``(B, ...)`` (with ``x``); ``None`` for unlabelled data.
        val_fraction: share of the rows held out for validation (at least one row if > 0).
        test_fraction: share of the rows held out for testing.
        batch_size: rows per training batch (evaluation uses at least 256).
        seed: seeds the split and the shuffling.
        dtype: ``"float32"`` or ``"float64"``; real observations (and float targets) are cast to it,
            complex ones to the matching complex dtype.
    """

    def __init__(
        self,
        problem: ProblemSpec | None = None,
        path: str | None = None,
        x_key: str = "x",
        target_key: str | None = "s",
        target_path: str | None = None,
        x: Any = None,
        target: Any = None,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        batch_size: int = 64,
        seed: int = 0,
        dtype: str = "float32",
    ) -> None:
        super().__init__()
        if (path is None) == (x is None):
            raise ValueError(
                "Give exactly one source: path='data.npz' (or .npy/.mat/.pt) or x=<array> "
                "(with target=<array> for labelled data)."
            )
        if x is None and target is not None:
            raise ValueError("target= goes with x=; with a file, name the targets by target_key.")
        for name, f in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
            if not (isinstance(f, int | float) and 0.0 <= f < 1.0):
                raise ValueError(f"{name} must lie in [0, 1), got {f!r}.")
        if val_fraction + test_fraction >= 1.0:
            raise ValueError(
                f"val_fraction + test_fraction = {val_fraction + test_fraction} leaves no "
                "training rows; keep the sum below 1."
            )
        if not (isinstance(batch_size, int) and batch_size >= 1):
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}.")
        if dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}.")
        self.problem, self.path, self.x_key, self.target_key = problem, path, x_key, target_key
        self.target_path = target_path
        self._x_in, self._target_in = x, target
        self.val_fraction, self.test_fraction = float(val_fraction), float(test_fraction)
        self.batch_size, self.seed = batch_size, seed
        self.dtype = getattr(torch, dtype)
        self._sets: dict[str, TensorDataset] | None = None
        self.labelled_count: int | None = None
        self.rows: int | None = None

    # -- loading and checking ---------------------------------------------------------------
    @property
    def problem_or_raise(self) -> ProblemSpec:
        if self.problem is None:
            raise ValueError(
                "UserDataModule has no problem: pass problem=... (the CLI links it from "
                "model.problem); the problem fixes the expected shapes and runs its checks."
            )
        return self.problem

    def _raw(self) -> tuple[tuple[Any, str], tuple[Any, str] | None]:
        if self.path is not None:
            return load_arrays(self.path, self.x_key, self.target_key, self.target_path)
        xs = (self._x_in, "x")
        return xs, (None if self._target_in is None else (self._target_in, "target"))

    def load(self) -> tuple[Tensor, Tensor]:
        """Read, check and convert the data: ``(x, target)`` over all rows (before the split)."""
        prob = self.problem_or_raise
        x_ref, s_ref = prob.sample(2, seed=(9, 9), dtype=self.dtype)
        (x_raw, x_name), tgt = self._raw()
        x = self._check_x(_as_tensor(x_raw, x_name), x_name, x_ref)
        if tgt is None:
            fill = float("nan") if s_ref.is_floating_point() or s_ref.is_complex() else -1
            s = torch.full((x.shape[0], *s_ref.shape[1:]), fill, dtype=s_ref.dtype)
        else:
            s = self._check_target(_as_tensor(tgt[0], tgt[1]), tgt[1], s_ref, x.shape[0])
        self._validate_rows(x, x_name)
        return x, s

    def _check_x(self, x: Tensor, name: str, ref: Tensor) -> Tensor:
        if x.ndim != ref.ndim or tuple(x.shape[1:]) != tuple(ref.shape[1:]):
            raise ValueError(
                f"{name} has shape {tuple(x.shape)}, but this {type(self.problem).__name__} "
                f"expects observations of shape (B, {', '.join(map(str, ref.shape[1:]))}): one "
                "row per sample."
            )
        if x.shape[0] == 0:
            raise ValueError(f"{name} has no rows.")
        if x.dtype == torch.bool:
            raise ValueError(f"{name} has dtype bool; observations are numbers (float32/float64).")
        if x.is_complex() and not ref.is_complex():
            raise ValueError(
                f"{name} is complex ({x.dtype}) but this problem's observations are real; pass "
                "the real-valued form the problem documents (casting would drop the imaginary part)."
            )
        self._require_finite(x, name)
        cdtype = torch.complex64 if self.dtype == torch.float32 else torch.complex128
        return x.to(cdtype if ref.is_complex() else self.dtype)

    def _check_target(self, s: Tensor, name: str, ref: Tensor, rows: int) -> Tensor:
        if s.ndim != ref.ndim or tuple(s.shape[1:]) != tuple(ref.shape[1:]):
            raise ValueError(
                f"{name} has shape {tuple(s.shape)}, but this {type(self.problem).__name__} "
                f"expects targets of shape (B, {', '.join(map(str, ref.shape[1:]))})."
            )
        if s.shape[0] != rows:
            raise ValueError(
                f"{name} has {s.shape[0]} rows but the observations have {rows}; give one target "
                "row per observation row (NaN rows, or -1 for symbol indices, mark unlabelled ones)."
            )
        integer = not (ref.is_floating_point() or ref.is_complex())
        if integer:
            if s.is_floating_point() or s.is_complex() or s.dtype == torch.bool:
                raise ValueError(
                    f"{name} has dtype {s.dtype}, but this problem's targets are integer indices "
                    f"(e.g. symbol indices 0..M-1, -1 = unlabelled); convert with .astype(int)."
                )
            s = s.to(ref.dtype)
            flat = s.reshape(rows, -1)
            partly = (flat < 0).any(1) & ~(flat < 0).all(1)
            if bool(partly.any()):
                r = int(partly.nonzero()[0])
                raise ValueError(
                    f"{name}[{r}] is partly unlabelled (some entries < 0): mark an unlabelled row "
                    "with -1 in every entry, a labelled one with no negative entry."
                )
            return s
        if s.is_complex() and not ref.is_complex():
            raise ValueError(f"{name} is complex ({s.dtype}) but this problem's targets are real.")
        if s.dtype == torch.bool:
            raise ValueError(f"{name} has dtype bool; targets are numbers.")
        flat = s.reshape(rows, -1)
        nan = torch.isnan(flat)
        partly = nan.any(1) & ~nan.all(1)
        if bool(partly.any()):
            r = int(partly.nonzero()[0])
            j = int(nan[r].nonzero()[0])
            raise ValueError(
                f"{name}[{r}] is partly NaN (entry {j}): mark an unlabelled row with NaN in every "
                "entry; a labelled row must be finite."
            )
        labelled = ~nan.all(1)
        inf = torch.isinf(flat) & labelled[:, None]
        if bool(inf.any()):
            r, j = _first_bad(inf)
            idx = np.unravel_index(j, tuple(s.shape[1:]))
            raise ValueError(
                f"{name}{_entry((r, *map(int, idx)))} is {_describe(float(flat[r, j].real))}; "
                "labelled targets must be finite (NaN in every entry marks an unlabelled row)."
            )
        cdtype = torch.complex64 if self.dtype == torch.float32 else torch.complex128
        return s.to(cdtype if ref.is_complex() else self.dtype)

    @staticmethod
    def _require_finite(x: Tensor, name: str) -> None:
        if not (x.is_floating_point() or x.is_complex()):
            return
        bad = ~torch.isfinite(x)
        if bool(bad.any()):
            index = _first_bad(bad)
            v = x[index]
            kind = _describe(float(v.real if not math.isfinite(float(v.real)) else v.imag))
            more = int(bad.sum()) - 1
            raise ValueError(
                f"{name}{_entry(index)} is {kind}"
                + (f" (and {more} more non-finite entries)" if more else "")
                + "; observations must be finite: drop or repair those rows before loading."
            )

    def _validate_rows(self, x: Tensor, name: str) -> None:
        """The problem's own observation checks; on failure, the first offending row is named."""
        prob = self.problem_or_raise
        try:
            prob.validate_observation(x)
            return
        except (ValueError, TypeError) as whole:
            lo, hi = 0, x.shape[0]
            while hi - lo > 1:  # bisect to the first failing row
                mid = (lo + hi) // 2
                try:
                    prob.validate_observation(x[lo:mid])
                    lo = mid
                except (ValueError, TypeError):
                    hi = mid
            try:
                prob.validate_observation(x[lo:hi])
            except (ValueError, TypeError) as row:
                raise ValueError(f"{name}[{lo}]: {row}") from whole
            raise ValueError(f"{name}: {whole}") from whole

    # -- LightningDataModule ----------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self._sets is not None:
            return
        x, s = self.load()
        n = x.shape[0]
        n_val = math.ceil(self.val_fraction * n) if self.val_fraction > 0 else 0
        n_test = math.ceil(self.test_fraction * n) if self.test_fraction > 0 else 0
        if n - n_val - n_test < 1:
            raise ValueError(
                f"{n} rows are too few for val_fraction={self.val_fraction} and "
                f"test_fraction={self.test_fraction}: no training row is left."
            )
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed))
        val, test, train = perm[:n_val], perm[n_val : n_val + n_test], perm[n_val + n_test :]
        self._sets = {
            "train": TensorDataset(x[train], s[train]),
            "val": TensorDataset(x[val], s[val]),
            "test": TensorDataset(x[test], s[test]),
        }
        self.rows, self.labelled_count = n, int(labelled_rows(s).sum())

    def _set(self, name: str) -> TensorDataset:
        self.setup()
        assert self._sets is not None
        return self._sets[name]

    def train_dataloader(self) -> DataLoader:  # type: ignore[type-arg]
        data = self._set("train")
        return DataLoader(
            data,
            batch_size=self.batch_size,
            sampler=_EpochShuffle(len(data), self.seed),
            drop_last=len(data) > self.batch_size,
        )

    def _eval_loader(self, name: str) -> DataLoader | list[Any]:  # type: ignore[type-arg]
        data = self._set(name)
        if len(data) == 0:
            return []
        return DataLoader(data, batch_size=max(self.batch_size, 256))

    def val_dataloader(self) -> DataLoader | list[Any]:  # type: ignore[type-arg]
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader | list[Any]:  # type: ignore[type-arg]
        return self._eval_loader("test")
