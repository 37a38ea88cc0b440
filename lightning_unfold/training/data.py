"""A LightningDataModule for seeded synthetic problems."""

from __future__ import annotations

import math
from collections.abc import Iterator

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset, Sampler, TensorDataset

from lightning_unfold.core.algorithm import ProblemSpec

__all__ = ["SyntheticDataModule"]

_TRAIN, _VAL, _TEST = 1, 2, 3  # seed streams: training, validation and test sets never overlap


class _FreshBatches(IterableDataset):  # type: ignore[type-arg]
    """Yields ``batches`` freshly drawn batches per epoch, seeded by (seed, epoch, rank)."""

    def __init__(self, dm: SyntheticDataModule) -> None:
        self.dm = dm

    def __len__(self) -> int:
        return self.dm.train_batches

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        trainer = self.dm.trainer
        epoch = trainer.current_epoch if trainer is not None else 0
        rank = trainer.global_rank if trainer is not None else 0
        for b in range(self.dm.train_batches):
            x, s = self.dm.problem_or_raise.sample(
                self.dm.batch_size, seed=(_TRAIN, self.dm.seed, epoch, rank, b), dtype=self.dm.dtype
            )
            yield x, self.dm.mask_labels(s, (epoch, rank, b))


class _EpochShuffle(Sampler[int]):
    """A permutation per epoch seeded by (seed, epoch): Lightning calls ``set_epoch``, so a run
    resumed at an epoch boundary sees the same order as an uninterrupted one."""

    def __init__(self, size: int, seed: int) -> None:
        self.size, self.seed, self.epoch = size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[int]:
        key = self.seed if self.epoch == 0 else hash((self.seed, self.epoch)) & 0x7FFF_FFFF
        return iter(
            torch.randperm(self.size, generator=torch.Generator().manual_seed(key)).tolist()
        )


class SyntheticDataModule(L.LightningDataModule):
    """Seeded data for a :class:`~lightning_unfold.core.algorithm.ProblemSpec`.

    Validation and test sets are fixed (drawn once from their own seed streams). Training data is
    either drawn fresh every epoch (``fresh_train=True``, ``train_batches`` batches per epoch; each
    DDP rank draws its own) or a fixed set of ``train_size`` samples, shuffled with a seeded
    generator. With ``labelled_fraction < 1`` a seeded random subset of training targets is set to
    NaN (``-1`` for integer targets; unlabelled), for semi-supervised training.
    """

    def __init__(
        self,
        problem: ProblemSpec | None = None,
        batch_size: int = 64,
        train_batches: int = 50,
        fresh_train: bool = True,
        train_size: int = 4096,
        val_size: int = 1000,
        test_size: int = 1000,
        labelled_fraction: float = 1.0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        for name, v in (
            ("batch_size", batch_size),
            ("train_batches", train_batches),
            ("train_size", train_size),
            ("val_size", val_size),
            ("test_size", test_size),
        ):
            if v < 1:
                raise ValueError(f"{name} must be >= 1, got {v}.")
        if not 0.0 <= labelled_fraction <= 1.0:
            raise ValueError(f"labelled_fraction must lie in [0, 1], got {labelled_fraction}.")
        self.problem = problem
        self.batch_size, self.train_batches, self.fresh_train = (
            batch_size,
            train_batches,
            fresh_train,
        )
        self.train_size, self.val_size, self.test_size = train_size, val_size, test_size
        self.labelled_fraction, self.seed = labelled_fraction, seed
        self.dtype = torch.float32
        self._val: TensorDataset | None = None
        self._test: TensorDataset | None = None
        self._train: TensorDataset | None = None

    @property
    def problem_or_raise(self) -> ProblemSpec:
        if self.problem is None:
            raise ValueError(
                "SyntheticDataModule has no problem: pass problem=... (the CLI links "
                "it from model.problem)."
            )
        return self.problem

    def mask_labels(self, target: Tensor, key: tuple[int, ...]) -> Tensor:
        if self.labelled_fraction >= 1.0:
            return target
        g = torch.Generator().manual_seed(hash((self.seed, *key)) & 0x7FFF_FFFF)
        unlabelled = torch.rand(target.shape[0], generator=g) >= self.labelled_fraction
        target = target.clone()
        # floating targets mark unlabelled rows with NaN, integer targets (symbol indices) with -1
        target[unlabelled] = float("nan") if target.is_floating_point() else -1
        return target

    def _fixed(self, stream: int, size: int) -> TensorDataset:
        x, s = self.problem_or_raise.sample(size, seed=(stream, self.seed), dtype=self.dtype)
        return TensorDataset(x, s)

    def setup(self, stage: str | None = None) -> None:
        if self._val is None:
            self._val = self._fixed(_VAL, self.val_size)
        if stage in (None, "test") and self._test is None:
            self._test = self._fixed(_TEST, self.test_size)
        if stage in (None, "fit") and not self.fresh_train and self._train is None:
            x, s = self.problem_or_raise.sample(
                self.train_size, seed=(_TRAIN, self.seed), dtype=self.dtype
            )
            self._train = TensorDataset(x, self.mask_labels(s, (-1,)))

    def train_dataloader(self) -> DataLoader:  # type: ignore[type-arg]
        if self.fresh_train:
            return DataLoader(_FreshBatches(self), batch_size=None)
        self.setup("fit")
        return DataLoader(
            self._train,  # type: ignore[arg-type]
            batch_size=self.batch_size,
            sampler=_EpochShuffle(len(self._train), self.seed),  # type: ignore[arg-type]
            drop_last=len(self._train) > self.batch_size,
        )

    def val_dataloader(self) -> DataLoader:  # type: ignore[type-arg]
        self.setup("validate")
        return DataLoader(self._val, batch_size=max(self.batch_size, 256))  # type: ignore[arg-type]

    def test_dataloader(self) -> DataLoader:  # type: ignore[type-arg]
        self.setup("test")
        return DataLoader(self._test, batch_size=max(self.batch_size, 256))  # type: ignore[arg-type]

    def steps_per_epoch(self) -> int:
        return (
            self.train_batches if self.fresh_train else math.ceil(self.train_size / self.batch_size)
        )
