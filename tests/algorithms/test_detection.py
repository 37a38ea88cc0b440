"""MIMO detection: the problem, soft-IC, the classical detectors, DeepSIC, DetNet, bad input."""

from __future__ import annotations

import importlib.util
import itertools
import json
import math
import sys
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from lightning_unfold.algorithms.detection import (
    DeepSICLayer,
    MIMODetection,
    ProjectedGradientDetector,
    SoftIC,
    check_probabilities,
    constellation,
    lmmse,
    maximum_likelihood,
    zero_forcing,
)
from lightning_unfold.core.unfolded import ClassicalSolver, UnfoldedModel
from lightning_unfold.training import SequentialSchedule, SyntheticDataModule, UnfoldedModule

ROOT = Path(__file__).resolve().parents[2]
F64 = torch.float64


def _trainer(callbacks: list[Callback], **kw: Any) -> L.Trainer:
    opts: dict[str, Any] = {
        "accelerator": "cpu",
        "devices": 1,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "max_epochs": -1,
        "limit_val_batches": 0,
        "num_sanity_val_steps": 0,
    }
    opts.update(kw)
    return L.Trainer(callbacks=callbacks, **opts)


# -- constellations and the problem ---------------------------------------------------------
@pytest.mark.parametrize("name", ["bpsk", "qpsk", "16qam"])
def test_constellations_are_unit_power_and_gray(name: str) -> None:
    c = constellation(name)
    assert c.points.pow(2).sum(1).mean().item() == pytest.approx(1.0, rel=1e-12)
    d = torch.cdist(c.points, c.points)
    nearest = d.masked_fill(torch.eye(c.size, dtype=torch.bool), math.inf).min(1).values
    for i, j in itertools.combinations(range(c.size), 2):
        if d[i, j] <= nearest[i] + 1e-9:  # nearest neighbours differ in exactly one bit
            assert int((c.bits[i] != c.bits[j]).sum()) == 1, (i, j)
    assert len({tuple(b.tolist()) for b in c.bits}) == c.size


def test_problem_is_seeded_and_shapes_are_documented() -> None:
    prob = MIMODetection(n_users=3, n_antennas=5, constellation="qpsk", channel="gaussian")
    x1, t1 = prob.sample(7, seed=4)
    x2, t2 = prob.sample(7, seed=4)
    assert torch.equal(x1, x2) and torch.equal(t1, t2)
    assert x1.shape == (7, prob.width) and prob.width == 10 + 10 * 6 + 1
    assert t1.dtype == torch.long and t1.shape == (7, 3) and int(t1.max()) < 4
    _y, H, var = prob.split(x1.double())
    # the real-equivalent of a complex channel: [[Re, -Im], [Im, Re]] per entry
    assert torch.allclose(H[:, :5, 0::2], H[:, 5:, 1::2]) and torch.allclose(
        H[:, :5, 1::2], -H[:, 5:, 0::2]
    )
    assert torch.allclose(var, torch.full((7,), 10 ** (-1.0) / 2, dtype=F64), rtol=1e-6)
    again = MIMODetection(**prob.init_args())
    assert again.init_args() == prob.init_args()


def test_csi_uncertainty_is_redrawn_per_frame_while_data_follow_the_true_channel() -> None:
    prob = MIMODetection(snr_db=30.0, csi_noise=0.1, frame=5, seed=0)
    x, t = prob.sample(12, seed=1, dtype=F64)
    y, H, _ = prob.split(x)
    ratio = H / prob.H_fixed  # 1 + sqrt(0.1) N(0, 1), one draw per frame of 5 rows
    assert torch.allclose(ratio[:5], ratio[0].expand(5, 4, 4))
    assert not torch.allclose(ratio[0], ratio[5]) and not torch.allclose(ratio[5], ratio[10])
    assert 0.05 < float((ratio - 1).pow(2).mean()) < 0.2
    s = prob.const.points[t].reshape(12, 4)
    clean = s @ prob.H_fixed.T  # the data follow the true H (noise at 30 dB is small)
    assert float((y - clean).abs().max()) < 0.2


def test_log_normal_shadowing_scales_each_sample_and_keeps_the_default_stream() -> None:
    base = MIMODetection(snr_db=30.0, seed=0)  # the fixed DeepSIC channel
    plain = base.sample(6, seed=1, dtype=F64)
    off = MIMODetection(snr_db=30.0, seed=0, shadowing_db=0.0).sample(6, seed=1, dtype=F64)
    assert all(torch.equal(a, b) for a, b in zip(plain, off, strict=True))
    prob = MIMODetection(snr_db=30.0, seed=0, shadowing_db=6.0)
    x, t = prob.sample(4000, seed=1, dtype=F64)
    again = prob.sample(4000, seed=1, dtype=F64)
    assert torch.equal(x, again[0]) and torch.equal(t, again[1])
    y, H, _ = prob.split(x)
    gain = H / prob.H_fixed  # one real gain per sample, the same on every entry
    assert torch.allclose(gain, gain[:, :1, :1].expand_as(gain))
    xi = 20 * torch.log10(gain[:, 0, 0])  # ξ ~ N(0, 6²) dB
    assert abs(float(xi.mean())) < 0.3 and abs(float(xi.std()) - 6.0) < 0.3
    s = prob.const.points[t].reshape(-1, 4)
    clean = (H @ s.unsqueeze(-1)).squeeze(-1)  # the data follow the scaled channel
    assert float((y - clean).std()) == pytest.approx(10 ** (-30 / 20), rel=0.05)
    assert MIMODetection(**prob.init_args()).shadowing_db == 6.0


def test_snr_list_and_range() -> None:
    _, _h, var = MIMODetection(snr_db=[0.0, 10.0]).split(
        MIMODetection(snr_db=[0.0, 10.0]).sample(200, seed=0, dtype=F64)[0]
    )
    assert set(np.round(var.numpy(), 6)) == {1.0, 0.1}
    x, _ = MIMODetection(snr_db=None, snr_range=(7.0, 14.0)).sample(500, seed=0, dtype=F64)
    snr = -10 * torch.log10(x[:, -1])
    assert float(snr.min()) >= 7.0 and float(snr.max()) <= 14.0 and float(snr.std()) > 1.0


# -- metrics and loss --------------------------------------------------------------------------
def test_ber_ser_and_cross_entropy() -> None:
    prob = MIMODetection(n_users=2, n_antennas=2, constellation="qpsk")
    ber, ser = prob.metrics()
    assert (ber.name, ser.name) == ("ber", "ser")
    target = torch.tensor([[0, 3], [1, 2]])
    # row 0: user 1 decided 1 (neighbour of 3 = 11 -> 01: one bit); row 1 correct
    est = torch.nn.functional.one_hot(torch.tensor([[0, 1], [1, 2]]), 4).double()
    x = torch.zeros(2, prob.width)
    assert float(ber.finalize(ber.statistics(est, target, x))) == pytest.approx(1 / 8)
    assert float(ser.finalize(ser.statistics(est, target, x))) == pytest.approx(1 / 4)
    p = torch.softmax(torch.randn(2, 2, 4, dtype=F64), -1)
    expected = torch.nn.functional.nll_loss(p.log().reshape(-1, 4), target.reshape(-1))
    assert torch.allclose(prob.supervised_loss(p, target), expected)
    half = torch.tensor([[0, 3], [-1, -1]])  # -1 = unlabelled row
    assert torch.allclose(
        prob.supervised_loss(p, half),
        torch.nn.functional.nll_loss(p[0].log(), target[0]),
    )
    assert prob.supervised_loss(p, torch.full((2, 2), -1)) is None


def test_integer_targets_through_the_data_module_and_the_module() -> None:
    prob = MIMODetection(snr_db=8.0)
    dm = SyntheticDataModule(prob, batch_size=16, train_batches=2, labelled_fraction=0.5, seed=0)
    dm.trainer = None
    batch = next(iter(dm.train_dataloader()))
    assert batch[1].dtype == torch.long and bool((batch[1] == -1).any())
    module = UnfoldedModule(prob, paradigm="classical", depth=3)
    data = SyntheticDataModule(prob, batch_size=64, val_size=256, seed=0)
    _trainer([], limit_val_batches=1.0).validate(module, data, verbose=False)
    curve = module.primary_curves["val"]
    assert module.primary_metric.name == "ber" and len(curve) == 4
    assert curve[0] > 0.3 and curve[3] < 0.1  # uniform start, soft-IC decisions after 3


# -- soft-IC -----------------------------------------------------------------------------------
@pytest.mark.parametrize("const", ["bpsk", "qpsk"])
def test_soft_ic_learns_two_hyperparameters_per_iteration_and_outputs_probabilities(
    const: str,
) -> None:
    """(Its classical-init equivalence is in tests/zoo.)"""
    prob = MIMODetection(n_users=3, n_antennas=4, constellation=const, snr_db=8.0, csi_noise=0.1)
    x, _ = prob.sample(64, seed=0, dtype=F64)
    model = UnfoldedModel(SoftIC(), prob, 5, "hyperparameters", dtype=F64)
    assert len(list(model.parameters())) == 10  # damping and var_scale per iteration
    for est in model(x).estimates:
        check_probabilities(est, tol=1e-10)


def _brute_posterior(y: np.ndarray, H: np.ndarray, var: float, pts: np.ndarray) -> np.ndarray:
    """Exact per-user marginal posteriors by summing over all hypotheses (numpy)."""
    U = H.shape[1] // pts.shape[1]
    M = pts.shape[0]
    post = np.zeros((U, M))
    for combo in itertools.product(range(M), repeat=U):
        s = pts[list(combo)].reshape(-1)
        w = math.exp(-0.5 * float(np.sum((y - H @ s) ** 2)) / var)
        for u, c in enumerate(combo):
            post[u, c] += w
    return post / post.sum(1, keepdims=True)


def test_soft_ic_against_references() -> None:
    # one user: no interference, so one soft-IC iteration is the exact posterior
    prob1 = MIMODetection(
        n_users=1, n_antennas=3, constellation="16qam", channel="correlated", snr_db=5.0
    )
    x, _ = prob1.sample(5, seed=0, dtype=F64)
    out = ClassicalSolver(SoftIC(), prob1, 1, dtype=F64)(x).final_estimate
    for i in range(5):
        y, H, var = (t[0].numpy() for t in prob1.split(x[i : i + 1]))
        ref = _brute_posterior(y, H, float(var), prob1.const.points.numpy())
        assert np.allclose(out[i].numpy(), ref, atol=1e-10)
    # several users: the first iteration (uniform priors) decides as LMMSE does ...
    prob = MIMODetection(n_users=4, n_antennas=4, snr_db=6.0)
    x, t = prob.sample(4000, seed=1, dtype=F64)
    traj = ClassicalSolver(SoftIC(), prob, 8, dtype=F64)(x)
    assert torch.equal(traj.estimates[1].argmax(-1), lmmse(x, prob).argmax(-1))
    # ... and after 8 iterations it is close to the ML floor (0.2 percentage points)
    ber = prob.metrics()[0]

    def rate(e: torch.Tensor) -> float:
        return float(ber.finalize(ber.statistics(e, t, x)))

    assert rate(maximum_likelihood(x, prob)) <= rate(traj.final_estimate) + 1e-3
    assert rate(traj.final_estimate) < rate(maximum_likelihood(x, prob)) + 2e-3
    assert rate(traj.final_estimate) < rate(traj.estimates[1])


def test_ml_lmmse_zf_against_closed_forms_and_brute_force() -> None:
    prob = MIMODetection(
        n_users=3, n_antennas=3, constellation="qpsk", channel="gaussian", snr_db=4.0
    )
    x, _ = prob.sample(40, seed=2, dtype=F64)
    pts = prob.const.points.numpy()
    ml, mm, zf = maximum_likelihood(x, prob), lmmse(x, prob), zero_forcing(x, prob)
    for i in range(40):
        y, H, var = (t[0].numpy() for t in prob.split(x[i : i + 1]))
        best = min(
            itertools.product(range(4), repeat=3),
            key=lambda c: float(np.sum((y - H @ pts[list(c)].reshape(-1)) ** 2)),
        )
        assert ml[i].argmax(-1).tolist() == list(best)
        for det, reg in ((mm, 2 * float(var)), (zf, 0.0)):  # d = 2 coordinates per symbol
            s = np.linalg.solve(H.T @ H + reg * np.eye(6), H.T @ y).reshape(3, 2)
            near = np.argmin(((s[:, None, :] - pts[None]) ** 2).sum(-1), axis=1)
            assert det[i].argmax(-1).tolist() == near.tolist()


# -- DeepSIC: sequential training --------------------------------------------------------------
def _deepsic(depth: int = 3) -> UnfoldedModule:
    torch.manual_seed(0)
    return UnfoldedModule(
        MIMODetection(snr_db=6.0), algorithm="soft_ic", paradigm="inductive_bias", depth=depth
    )


def test_deepsic_layer_is_the_papers_classifier() -> None:
    module = _deepsic(5)
    layer = module.model.nets[0]
    assert isinstance(layer, DeepSICLayer) and len(layer.nets) == 4
    sizes = [m.weight.shape[::-1] for m in layer.nets[0] if isinstance(m, torch.nn.Linear)]
    assert sizes == [(7, 60), (60, 30), (30, 2)]
    x, _ = module.problem.sample(8, seed=0)
    for est in module(x).estimates:
        check_probabilities(est)


class _Watch(Callback):
    """Records which DeepSIC iterations' networks changed at every optimizer step."""

    def __init__(self) -> None:
        self.changed: list[tuple[int, set[int]]] = []

    def _snap(self, pl_module: Any) -> list[list[torch.Tensor]]:
        m = pl_module.model
        return [[p.detach().clone() for p in m.layer_parameters(k)] for k in range(1, m.depth + 1)]

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: Any, *args: Any) -> None:
        self._before = self._snap(pl_module)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: Any, *args: Any) -> None:
        after = self._snap(pl_module)
        moved = {
            k + 1
            for k, (a, b) in enumerate(zip(self._before, after, strict=True))
            if any(not torch.equal(u, v) for u, v in zip(a, b, strict=True))
        }
        self.changed.append((int(pl_module.train_depth or 0), moved))


def _data() -> SyntheticDataModule:
    return SyntheticDataModule(
        MIMODetection(snr_db=6.0), batch_size=32, train_batches=4, val_size=64, seed=0
    )


def test_deepsic_sequential_training_freezes_earlier_iterations() -> None:
    watch = _Watch()
    sched = SequentialSchedule(steps_per_layer=3, log_curves=True)
    module = _deepsic()
    _trainer([watch, sched]).fit(module, _data())
    assert sched.done and [k for k, _ in watch.changed] == [1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert all(moved == {k} for k, moved in watch.changed)
    assert sorted(sched.curves) == [1, 2, 3] and all(0 <= v <= 1 for v in sched.curves[3])


class _Kill(Callback):
    def __init__(self, at_step: int) -> None:
        self.at_step = at_step

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.global_step == self.at_step:
            raise RuntimeError("killed")


def test_deepsic_resume_mid_schedule_matches_uninterrupted(tmp_path: Path) -> None:
    def sched() -> SequentialSchedule:
        return SequentialSchedule(steps_per_layer=6, log_curves=False)

    ref = _deepsic()
    _trainer([sched()]).fit(ref, _data())

    def ckpt() -> ModelCheckpoint:
        return ModelCheckpoint(
            dirpath=tmp_path, save_last=True, every_n_train_steps=4, save_top_k=0
        )

    with pytest.raises(RuntimeError, match="killed"):
        _trainer([sched(), _Kill(at_step=10), ckpt()], enable_checkpointing=True).fit(
            _deepsic(), _data()
        )
    saved = torch.load(tmp_path / "last.ckpt", weights_only=False)
    state = next(v for k, v in saved["callbacks"].items() if "SequentialSchedule" in k)
    assert saved["global_step"] == 8 and state["stage_index"] == 1 and state["steps_in_stage"] == 2
    resumed_sched = sched()
    mod = _deepsic()
    _trainer([resumed_sched, ckpt()], enable_checkpointing=True).fit(
        mod, _data(), ckpt_path=tmp_path / "last.ckpt"
    )
    assert resumed_sched.done
    for a, b in zip(ref.parameters(), mod.parameters(), strict=True):
        assert torch.equal(a, b)


def test_deepsic_end_to_end_learns() -> None:
    module = _deepsic(2)
    module.hparams["lr"] = 1e-2
    data = SyntheticDataModule(MIMODetection(snr_db=6.0), batch_size=128, train_batches=60, seed=0)
    x, t = MIMODetection(snr_db=6.0).sample(2000, seed=9)
    with torch.no_grad():
        before = float(module.problem.supervised_loss(module(x).final_estimate, t))
    _trainer([], max_epochs=1).fit(module, data)
    with torch.no_grad():
        after = float(module.problem.supervised_loss(module(x).final_estimate, t))
    assert after < 0.7 * before


# -- DetNet ------------------------------------------------------------------------------------
def test_projected_gradient_converges_to_box_least_squares() -> None:
    """(Its classical-init equivalence is in tests/zoo.)"""
    from scipy.optimize import lsq_linear

    prob = MIMODetection(n_users=4, n_antennas=8, channel="gaussian", snr_db=2.0, loss="symbol_mse")
    x, _ = prob.sample(6, seed=0, dtype=F64)
    alg = ProjectedGradientDetector()
    solved = ClassicalSolver(alg, prob, 1, dtype=F64).solve(x, tol=1e-13, max_iter=20_000)
    assert solved.converged
    for i in range(6):
        y, H, _ = (t[0].numpy() for t in prob.split(x[i : i + 1]))
        box = lsq_linear(H, y, bounds=(-1.0, 1.0), tol=1e-14, method="bvls").x
        assert np.allclose(solved.trajectory.final.s[i].numpy(), box, atol=1e-7)


def test_detnet_layers_and_its_log_k_multi_iteration_loss() -> None:
    prob = MIMODetection(
        n_users=6,
        n_antennas=12,
        channel="gaussian",
        snr_db=None,
        snr_range=(7.0, 14.0),
        loss="symbol_mse",
    )
    depth = 4
    torch.manual_seed(0)
    module = UnfoldedModule(
        prob,
        algorithm="projected_gradient",
        paradigm="inductive_bias",
        depth=depth,
        formulation="multi_iteration",
        layer_weights=[math.log(k) for k in range(1, depth + 1)],
    )
    x, t = prob.sample(16, seed=0)
    traj = module(x)
    s = prob.const.points.float()[t].squeeze(-1)
    expected = sum(
        math.log(k) * (traj.iterates[k].s - s).pow(2).sum(1).mean() for k in range(1, depth + 1)
    )
    assert torch.allclose(module.loss(traj, x, t), expected, rtol=1e-5)
    for est in traj.estimates:
        check_probabilities(est)


# -- bad input -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: MIMODetection(constellation="8psk"), r"valid: \['bpsk', 'qpsk', '16qam'\]"),
        (lambda: MIMODetection(channel="rayleigh"), r"valid: \['deepsic', 'gaussian'"),
        (lambda: MIMODetection(snr_db=float("nan")), "NaN/Inf is not an SNR"),
        (lambda: MIMODetection(snr_db=[5.0, float("nan")]), "NaN/Inf is not an SNR"),
        (lambda: MIMODetection(snr_db=None, snr_range=(10.0, 2.0)), "lo <= hi"),
        (lambda: MIMODetection(snr_db=5.0, snr_range=(1.0, 2.0)), "exactly one"),
        (lambda: MIMODetection(csi_noise=-0.1), "csi_noise"),
        (lambda: MIMODetection(shadowing_db=-1.0), "shadowing_db .* >= 0"),
        (lambda: MIMODetection(shadowing_db=float("inf")), "shadowing_db .* finite"),
        (lambda: SoftIC(damping=1.0), r"damping must lie in \[0, 1\)"),
    ],
)
def test_bad_configuration(make: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make()


def test_bad_input_to_detectors() -> None:
    wide = MIMODetection(n_users=5, n_antennas=3, snr_db=5.0)
    x, _ = wide.sample(4, seed=0)
    with pytest.raises(ValueError, match=r"U <= N.*U = 5 > N = 3"):
        zero_forcing(x, wide)
    assert lmmse(x, wide).shape == (4, 5, 2)  # LMMSE and ML still work for U > N
    with pytest.raises(ValueError, match="M\\^U = 16\\^5"):
        maximum_likelihood(
            *MIMODetection(n_users=5, n_antennas=5, constellation="16qam").sample(2, seed=0)[:1],
            MIMODetection(n_users=5, n_antennas=5, constellation="16qam"),
        )
    prob = MIMODetection()
    x, _ = prob.sample(3, seed=0)
    with pytest.raises(ValueError, match="width 21"):
        lmmse(x[:, :-1], prob)
    with pytest.raises(ValueError, match="not bound"):
        SoftIC().init(x, {"points": prob.const.points})
    with pytest.raises(ValueError, match="leaves the simplex"):
        UnfoldedModel(SoftIC(), prob, 2, "correction")
    with pytest.raises(ValueError, match="implemented for BPSK"):
        UnfoldedModel(ProjectedGradientDetector(), MIMODetection(constellation="qpsk"), 2)


def test_a_user_probability_iterate_must_sum_to_one() -> None:
    prob = MIMODetection(snr_db=8.0)
    x, _ = prob.sample(3, seed=0, dtype=F64)
    solver = ClassicalSolver(SoftIC(), prob, 1, dtype=F64)
    p = solver.layer_params(1)
    unnormalised = torch.full((3, 4, 2), 0.7, dtype=F64)
    with pytest.raises(ValueError, match=r"do not sum to 1.*p / p\.sum"):
        solver.algorithm.step(unnormalised, x, p, 1)
    negative = torch.tensor([1.5, -0.5], dtype=F64).expand(3, 4, 2)
    with pytest.raises(ValueError, match="negative entries"):
        solver.algorithm.step(negative, x, p, 1)
    fixed = unnormalised / unnormalised.sum(-1, keepdim=True)  # the fix the message names
    assert torch.allclose(
        solver.algorithm.step(fixed, x, p, 1).sum(-1), torch.ones(3, 4, dtype=F64)
    )


# -- the study -------------------------------------------------------------------------------
def test_study_tiny_preset(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location(
        "mimo_detection_study", ROOT / "examples" / "mimo_detection_study.py"
    )
    assert spec is not None and spec.loader is not None
    study = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = study  # dataclasses look their module up there
    spec.loader.exec_module(study)
    study.main(["--preset", "tiny", "--out", str(tmp_path)])
    res = json.loads((tmp_path / "results.json").read_text())
    assert list(res) == ["deepsic_4x4", "detnet_30x60"]
    assert list(res["deepsic_4x4"]) == ["perfect_csi", "csi_uncertainty"]
    for setting in res["deepsic_4x4"].values():
        assert list(setting) == ["soft_ic", "deepsic", "lmmse", "zf", "ml", "black_box"]
        for r in setting.values():
            assert set(r) == {"snr_db", "ber"} and r["snr_db"] == [6.0, 10.0]
            assert all(0.0 <= b <= 1.0 for b in r["ber"])
        assert setting["ml"]["ber"][1] <= setting["zf"]["ber"][1]
    assert list(res["detnet_30x60"]) == ["detnet", "lmmse", "zf"]
    extras = json.loads((tmp_path / "extras.json").read_text())
    assert set(extras["perfect_csi"]["timing_ms_per_10k_symbols"]) == set(
        res["deepsic_4x4"]["perfect_csi"]
    )
    assert (tmp_path / "ber_vs_snr.png").stat().st_size > 0
    # the anchors are measured on their own test set, with a standard error over the chunks
    for name, refs in (("perfect_csi", (6, 8, 10)), ("csi_uncertainty", (6, 10, 14))):
        anchors = extras[name]["anchors"]
        assert list(anchors) == [str(s) for s in refs]
        for a in anchors.values():
            assert a["channel_uses"] == 2000 and 0.0 <= a["ours"] <= 1.0
            assert a["rel_dev"] == pytest.approx(a["ours"] / a["reference"] - 1.0)
            assert a["within_20_percent"] == (abs(a["rel_dev"]) <= 0.2)


# -- checks ------------------------------------------------------------------------------------
def test_checks_on_deepsic_generalization_runs_and_the_others_say_why_not() -> None:
    from lightning_unfold.checks import run_checks

    module = _deepsic(3)
    results = {r.name: r for r in run_checks(module, n_samples=64)}
    # no distance to a symbol label: descent runs on the cross-entropy, the rate on soft-IC's
    # fixed-point residual, and agreement is skipped for a model trained on the labels
    assert results["descent"].details["quantity"] == "loss", results["descent"].message
    assert results["linear_convergence"].details["reference"] == "certificate"
    assert "trained on the ground truth" in results["reference_agreement"].message
    for name in ("coupling", "alista_coherence"):
        assert "concerns sparse coding" in results[name].message, results[name]
    gen = run_checks(
        module,
        suite="generalization",
        options={"generalization": {"depths": (1, 2), "n_train": 32, "n_test": 64, "steps": 5}},
    )[0]
    assert gen.details["depths"] == [1, 2] and all(math.isfinite(v) for v in gen.details["gap"])
    # the cross-entropy of a classifier of two equiprobable symbols starts near log 2
    assert 0.3 < gen.details["test_loss"][0] < 1.5
