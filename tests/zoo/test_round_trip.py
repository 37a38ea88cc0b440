"""Every constructor argument of every problem survives a config and a checkpoint round trip.

A problem is rebuilt from ``to_config()`` (through YAML, as a checkpoint's ``hparams.yaml`` and
LightningCLI store it) and from a Lightning checkpoint of an :class:`UnfoldedModule`; the rebuilt
problem must have the same constants (values and dtypes) and draw the same data for the same seed.
User-given operators (a fixed channel, channel sets, a sampling mask, a dictionary, a transform)
are included, as tensors, NumPy arrays and nested lists. A mismatch between a user operator and the
problem's sizes is a clear error naming both shapes.
"""

from __future__ import annotations

import inspect
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pytest
import torch
import yaml
from torch import Tensor

import lightning_unfold.algorithms as family_modules
from lightning_unfold.algorithms import (
    BlindDeblurring,
    CompressiveImaging,
    HybridPrecoding,
    InterferenceChannel,
    MIMODetection,
    NMFSeparation,
    RPCAProblem,
    Segmentation,
    SparseRecovery,
    SuperResolution,
    UltrasoundClutter,
)
from lightning_unfold.core.algorithm import ProblemSpec, problem_from_config
from lightning_unfold.training import SyntheticDataModule, UnfoldedModule


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng([seed, 2024])


def _complex(shape: tuple[int, ...], seed: int) -> Tensor:
    g = _rng(seed)
    return torch.from_numpy(g.normal(size=shape) + 1j * g.normal(size=shape))


def _after_construction_channel() -> MIMODetection:
    """The reported bug: a fixed channel set by hand after construction."""
    problem = MIMODetection(n_users=3, n_antennas=4, channel="gaussian", snr_db=8.0, seed=2)
    problem.H_fixed = torch.from_numpy(_rng(3).normal(size=(4, 3)))
    return problem


#: (id, builder, algorithm used for the checkpoint): a small instance of every problem class, and
#: every user operator, as a tensor, a NumPy array or nested lists
#: sparse-coding SR with a small dictionary pair (the defaults fit 64 atoms on 20 000 patches)
_SMALL_SC_SR = {
    "algorithm": "sc_sr",
    "algorithm_options": {
        "patch": 3,
        "atoms": 8,
        "dictionary_iterations": 2,
        "training_patches": 300,
    },
}

CASES: list[tuple[str, Callable[[], ProblemSpec], str | dict[str, Any] | None]] = [
    ("sparse", lambda: SparseRecovery(m=6, n=10, snr_db=20.0, seed=3), None),
    (
        "sparse_dictionary_iht",
        lambda: SparseRecovery.from_dictionary(
            torch.from_numpy(_rng(1).normal(size=(6, 10))), sparsity=0.2, seed=4
        ),
        "iht",
    ),
    (
        "sparse_dictionary_lists",
        lambda: SparseRecovery(m=3, n=4, dictionary=_rng(2).normal(size=(3, 4)).tolist()),
        None,
    ),
    ("rpca", lambda: RPCAProblem(n1=6, n2=5, rank=1, transform="orthogonal", seed=1), None),
    (
        "rpca_transform_matrix",
        lambda: RPCAProblem(
            n1=5, n2=4, rank=1, transform_matrix=np.eye(5) + 0.1 * _rng(5).normal(size=(5, 5))
        ),
        None,
    ),
    ("power", lambda: InterferenceChannel(M=4, seed=2), None),
    ("power_rayleigh", lambda: InterferenceChannel(M=3, channel="rayleigh", p_max=2.0), None),
    (
        "power_random_topology",
        lambda: InterferenceChannel(M=4, topology="random", path_loss=3.0, seed=5),
        None,
    ),
    (
        "power_channel_set",
        lambda: InterferenceChannel(M=3, channel_set=np.abs(_rng(6).normal(size=(5, 3, 3)))),
        None,
    ),
    (
        "detection",
        lambda: MIMODetection(n_users=3, n_antennas=4, snr_db=None, snr_range=(4.0, 9.0)),
        None,
    ),
    (
        "detection_h_fixed_complex",
        lambda: MIMODetection(
            n_users=2,
            n_antennas=3,
            constellation="qpsk",
            channel="gaussian",
            H_fixed=_complex((3, 2), 7),
        ),
        None,
    ),
    (
        "detection_h_fixed_numpy",
        lambda: MIMODetection(n_users=2, n_antennas=3, H_fixed=_rng(8).normal(size=(3, 2))),
        None,
    ),
    ("detection_h_fixed_set_later", _after_construction_channel, None),
    (
        "precoding",
        lambda: HybridPrecoding(n_bands=2, n_users=2, n_rf=2, n_antennas=3, snr_db=5.0),
        None,
    ),
    (
        "precoding_channel_set",
        lambda: HybridPrecoding(
            n_bands=2, n_users=2, n_rf=2, n_antennas=3, channel_set=_complex((4, 2, 2, 3), 9)
        ),
        None,
    ),
    ("imaging", lambda: CompressiveImaging(size=8, sampling_rate=0.3, seed=1), None),
    (
        "imaging_mask_matrix",
        lambda: CompressiveImaging(
            size=8, mask_matrix=torch.from_numpy((_rng(10).random((8, 8)) < 0.4) | _dc(8))
        ),
        None,
    ),
    (
        "imaging_shipped_images",
        lambda: CompressiveImaging(size=8, images="skimage:camera,moon", crop="whole", seed=2),
        None,
    ),
    ("nmf", lambda: NMFSeparation(n_freq=16, n_frames=8, seed=1), None),
    ("clutter", lambda: UltrasoundClutter(n_x=6, n_z=6, n_frames=8, rank=2, seed=1), None),
    ("segmentation", lambda: Segmentation(size=8, n_labels=3, snr_db=None, seed=1), None),
    (
        "segmentation_shipped",
        lambda: Segmentation(size=8, source="skimage", split="test", loss="soft_iou", seed=2),
        None,
    ),
    (
        "super_resolution",
        lambda: SuperResolution(size=16, scale=2, source="synthetic", border=1, seed=1),
        _SMALL_SC_SR,
    ),
    (
        "super_resolution_shipped",
        lambda: SuperResolution(size=24, scale=3, source="skimage", split="test", seed=2),
        _SMALL_SC_SR,
    ),
    (
        "deblurring",
        lambda: BlindDeblurring(size=16, kernel_size=5, source="synthetic", snr_db=None, seed=1),
        None,
    ),
    (
        "deblurring_shipped",
        lambda: BlindDeblurring(
            size=32, kernel_size=7, split="test", downscale=4, kernel_weight=0.1, seed=2
        ),
        None,
    ),
]


def _dc(n: int) -> np.ndarray:
    mask = np.zeros((n, n), dtype=bool)
    mask[0, 0] = True
    return mask


def _problem_classes() -> set[type[ProblemSpec]]:
    return {
        obj
        for obj in vars(family_modules).values()
        if inspect.isclass(obj) and issubclass(obj, ProblemSpec) and obj is not ProblemSpec
    }


def test_every_problem_class_has_a_round_trip_case() -> None:
    covered = {type(build()) for _, build, _ in CASES}
    missing = {cls.__name__ for cls in _problem_classes() - covered}
    assert not missing, f"add a round-trip case for {sorted(missing)}"


def _assert_same_problem(a: ProblemSpec, b: ProblemSpec) -> None:
    assert type(a) is type(b)
    ca, cb = a.constants(), b.constants()
    assert ca.keys() == cb.keys()
    for key in ca:
        assert ca[key].dtype == cb[key].dtype, key
        assert torch.equal(ca[key], cb[key]), key
    for dtype in (torch.float32, torch.float64):
        xa, ta = a.sample(5, seed=(3, 1), dtype=dtype)
        xb, tb = b.sample(5, seed=(3, 1), dtype=dtype)
        assert xa.dtype == xb.dtype and torch.equal(xa, xb)
        assert ta.dtype == tb.dtype and torch.equal(ta.nan_to_num(-7.0), tb.nan_to_num(-7.0))
    assert json.dumps(a.to_config(), sort_keys=True) == json.dumps(b.to_config(), sort_keys=True)


@pytest.mark.parametrize(("build", "algorithm"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_config_round_trip_through_yaml(build: Callable[[], ProblemSpec], algorithm: Any) -> None:
    problem = build()
    config = problem.to_config()
    text = yaml.safe_dump(config)  # only YAML-safe values
    json.dumps(config)  # and JSON-safe ones
    again = problem_from_config(yaml.safe_load(text))
    _assert_same_problem(problem, again)
    # and a second round trip is a fixed point
    _assert_same_problem(again, problem_from_config(again.to_config()))


@pytest.mark.parametrize(("build", "algorithm"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_checkpoint_round_trip(
    build: Callable[[], ProblemSpec], algorithm: str | dict[str, Any] | None, tmp_path: Path
) -> None:
    problem = build()
    # a case's algorithm: a registry name, or UnfoldedModule keywords (name and small options)
    kwargs = algorithm if isinstance(algorithm, dict) else {"algorithm": algorithm}
    module = UnfoldedModule(problem, **kwargs, paradigm="hyperparameters", depth=2)
    path = tmp_path / "m.ckpt"
    # the checkpoint Lightning writes: weights and the module's hyperparameters
    torch.save(
        {
            "state_dict": module.state_dict(),
            "hyper_parameters": dict(module.hparams),
            "pytorch-lightning_version": L.__version__,
        },
        path,
    )
    loaded = UnfoldedModule.load_from_checkpoint(path, weights_only=True)
    _assert_same_problem(problem, loaded.problem)
    x, _ = problem.sample(3, seed=11)
    torch.testing.assert_close(loaded(x).final_estimate, module(x).final_estimate)


def test_fixed_channel_survives_a_trained_checkpoint(tmp_path: Path) -> None:
    """The reported failure: a reloaded detector must see the fixed channel it was trained on,
    not i.i.d. Gaussian draws."""
    problem = _after_construction_channel()
    module = UnfoldedModule(problem, paradigm="hyperparameters", depth=2, lr=1e-2)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    data = SyntheticDataModule(problem, batch_size=8, train_batches=2, val_size=16, test_size=16)
    trainer.fit(module, data)
    path = tmp_path / "trained.ckpt"
    trainer.save_checkpoint(path)
    loaded = UnfoldedModule.load_from_checkpoint(path, weights_only=True)
    assert loaded.problem.H_fixed is not None
    torch.testing.assert_close(loaded.problem.H_fixed, problem.H_fixed, rtol=0, atol=0)
    x, _ = loaded.problem.sample(4, seed=1, dtype=torch.float64)
    received = loaded.problem.split(x)[1]  # the channel each row was drawn with
    assert torch.equal(received, problem.H_fixed.expand(4, -1, -1))


def test_a_plain_channel_model_stays_random_after_the_round_trip() -> None:
    """The same test must be able to fail: without a fixed channel, rows see different H."""
    problem = MIMODetection(n_users=3, n_antennas=4, channel="gaussian")
    again = problem_from_config(problem.to_config())
    assert again.H_fixed is None
    H = again.split(again.sample(4, seed=1)[0])[1]
    assert not torch.equal(H[0], H[1])


@pytest.mark.parametrize(
    ("build", "given", "expected"),
    [
        (
            lambda: MIMODetection(n_users=2, n_antennas=3, H_fixed=torch.ones(2, 3)),
            "(2, 3)",
            "(3, 2)",
        ),
        (
            lambda: MIMODetection(
                n_users=2, n_antennas=3, constellation="qpsk", H_fixed=torch.ones(5, 4)
            ),
            "(5, 4)",
            "(6, 4)",
        ),
        (
            lambda: InterferenceChannel(M=4, channel_set=np.ones((2, 3, 3))),
            "(2, 3, 3)",
            "(K, 4, 4)",
        ),
        (
            lambda: HybridPrecoding(
                n_bands=2, n_users=2, n_rf=2, n_antennas=3, channel_set=np.ones((1, 2, 3, 2))
            ),
            "(1, 2, 3, 2)",
            "(K, 2, 2, 3)",
        ),
        (lambda: CompressiveImaging(size=8, mask_matrix=np.ones((8, 9))), "(8, 9)", "8×8"),
        (lambda: SparseRecovery(m=3, n=4, dictionary=np.ones((4, 3))), "(4, 3)", "(3, 4)"),
        (
            lambda: RPCAProblem(n1=4, n2=3, rank=1, transform_matrix=np.eye(3)),
            "(3, 3)",
            "(4, 4)",
        ),
    ],
    ids=["detection", "detection_qpsk", "power", "precoding", "imaging", "sparse", "rpca"],
)
def test_user_operator_shape_mismatch_names_both_shapes(
    build: Callable[[], ProblemSpec], given: str, expected: str
) -> None:
    with pytest.raises(ValueError) as err:
        build()
    assert given in str(err.value) and expected in str(err.value), str(err.value)


@pytest.mark.parametrize(
    "build",
    [
        lambda: MIMODetection(n_users=2, n_antennas=2, H_fixed=[[1.0, math.nan], [0.0, 1.0]]),
        lambda: InterferenceChannel(M=2, channel_set=-np.ones((1, 2, 2))),
        lambda: MIMODetection(
            n_users=2, n_antennas=2, H_fixed=np.ones((2, 2)) * 1j
        ),  # complex BPSK
    ],
    ids=["nan", "negative_gain", "complex_for_bpsk"],
)
def test_invalid_user_operators_are_refused(build: Callable[[], ProblemSpec]) -> None:
    with pytest.raises(ValueError):
        build()


def test_channel_sets_are_what_is_sampled() -> None:
    channels = np.abs(_rng(12).normal(size=(3, 2, 2)))
    problem = InterferenceChannel(M=2, channel_set=channels)
    x, _ = problem.sample(20, seed=0, dtype=torch.float64)
    drawn = {tuple(row.flatten().tolist()) for row in x}
    assert drawn <= {tuple(c.flatten().tolist()) for c in channels} and len(drawn) > 1
    with pytest.raises(ValueError, match="with_size"):
        problem.with_size(3)
    complex_set = _complex((2, 1, 1, 2), 13)
    precoding = HybridPrecoding(n_bands=1, n_users=1, n_rf=1, n_antennas=2, channel_set=complex_set)
    h, _ = precoding.sample(6, seed=0, dtype=torch.float64)
    assert all(any(torch.equal(row, c) for c in complex_set) for row in h)


def test_problem_with_varargs_cannot_be_rebuilt_from_positional_extras() -> None:
    class Odd(SparseRecovery):
        def __init__(self, *sizes: int, seed: int = 0) -> None:
            super().__init__(m=sizes[0] if sizes else 3, n=4, seed=seed)

    with pytest.raises(TypeError, match="by name"):
        Odd(3)
    assert Odd(seed=2).init_args() == {"seed": 2}


@pytest.mark.parametrize(
    ("cls", "old", "new", "base"),
    [
        (MIMODetection, {"users": 2, "antennas": 3}, {"n_users": 2, "n_antennas": 3}, {}),
        (UltrasoundClutter, {"frames": 7}, {"n_frames": 7}, {"n_x": 5, "n_z": 5, "rank": 1}),
    ],
    ids=["detection", "clutter"],
)
def test_renamed_arguments_warn_and_rebuild_the_same_problem(
    cls: type[ProblemSpec], old: dict[str, Any], new: dict[str, Any], base: dict[str, Any]
) -> None:
    with pytest.warns(DeprecationWarning, match="deprecated") as record:
        legacy = cls(**base, **old)
    assert len(record) == len(old)
    current = cls(**base, **new)
    _assert_same_problem(legacy, current)
    assert set(new) <= set(legacy.init_args()) and not set(old) & set(legacy.init_args())
    # a config (or checkpoint) written before the rename still loads, with the warning
    stale = current.to_config()
    for o, n in zip(old, new, strict=True):
        stale["init_args"][o] = stale["init_args"].pop(n)
    with pytest.warns(DeprecationWarning):
        _assert_same_problem(problem_from_config(stale), current)
    with pytest.raises(TypeError, match="only"):
        cls(**base, **old, **new)


def test_recorded_operators_are_snapshots() -> None:
    """Changing (or differentiating through) the caller's array later cannot change the problem's
    recorded arguments."""
    H = torch.ones(3, 2, requires_grad=True) * 2.0  # not a leaf: deepcopy alone would refuse it
    problem = MIMODetection(n_users=2, n_antennas=3, H_fixed=H)
    channel = np.ones((2, 2, 2))
    power = InterferenceChannel(M=2, channel_set=channel)
    channel[:] = 5.0
    assert torch.equal(problem.init_args()["H_fixed"], torch.full((3, 2), 2.0))
    assert float(power.init_args()["channel_set"].max()) == 1.0
    assert float(power.sample(3, seed=0)[0].max()) == 1.0


def test_user_operators_come_from_yaml_lists_through_the_cli_parser() -> None:
    """LightningCLI's parser (jsonargparse) reads a user operator as nested YAML lists, and the
    problem it builds round-trips like any other."""
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--problem", type=ProblemSpec)
    text = (
        "problem:\n"
        "  class_path: lightning_unfold.algorithms.InterferenceChannel\n"
        "  init_args: {M: 2, channel_set: [[[1.0, 0.1], [0.2, 0.9]], [[0.5, 0.0], [0.3, 2.0]]]}\n"
    )
    problem = parser.instantiate(parser.parse_string(text)).problem
    assert isinstance(problem, InterferenceChannel)
    assert problem.channel_set is not None and tuple(problem.channel_set.shape) == (2, 2, 2)
    _assert_same_problem(problem, problem_from_config(problem.to_config()))
