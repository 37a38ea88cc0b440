r"""The registry of problem families: every classical solver on a small seeded instance of its
problem, with the paradigm settings that keep its classical iteration.

A :class:`ProblemFamily` is one row of the test zoo (``tests/zoo``): the zoo checks, for every
registered family,

* *classical-init equivalence*: every setting in :attr:`ProblemFamily.keeps_classical`, built at
  its classical values, reproduces :class:`~lightning_unfold.core.unfolded.ClassicalSolver` in
  float64 (complex128 where the data are complex) to :math:`10^{-8}`, for every
  :attr:`~ProblemFamily.cases` entry;
  and a tied setting does so at a depth it was not built for;
* a state-dict round trip of every model it builds (:meth:`ProblemFamily.settings`);
* that the problem's metrics pool exactly: the whole batch equals two unequal parts accumulated,
  in one process and held by two DDP ranks;
* a clear error on a NaN or an Inf in the observation (the problem's ``validate_observation``);
* float32 and float64 forward passes that keep their precision.

Adding a family is adding a row with :func:`register_family`; the zoo then tests it without a
new test file (``docs/adding_a_problem.md`` walks through one). Sizes are small on purpose: the
whole zoo takes about 25 s of CPU time.

>>> from lightning_unfold.algorithms.families import FAMILIES
>>> family = FAMILIES["ista"]
>>> problem, algorithm = family.instance()
>>> x, target = problem.sample(family.batch, seed=0)
>>> model = family.build(family.keeps_classical[0], problem, algorithm)
>>> model(x).depth == family.depth
True
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
from torch import nn

from lightning_unfold.algorithms.admm import ADMMLasso
from lightning_unfold.algorithms.corona import CORONA, FISTARPCA, ISTARPCA, UltrasoundClutter
from lightning_unfold.algorithms.crf import MeanFieldCRF, Segmentation
from lightning_unfold.algorithms.detection import (
    MIMODetection,
    ProjectedGradientDetector,
    SoftIC,
)
from lightning_unfold.algorithms.dublid import BlindDeblurring, HQSBlindDeblur
from lightning_unfold.algorithms.iht import IHT
from lightning_unfold.algorithms.imaging import ADMMTV, CompressiveImaging
from lightning_unfold.algorithms.nmf import NMF, NMFSeparation
from lightning_unfold.algorithms.power import WMMSE, InterferenceChannel
from lightning_unfold.algorithms.precoding import HybridPGA, HybridPrecoding
from lightning_unfold.algorithms.rpca import RPCA, RPCAProblem
from lightning_unfold.algorithms.scn import SparseCodingSR, SuperResolution
from lightning_unfold.algorithms.sparse import FISTA, ISTA, SparseRecovery
from lightning_unfold.core.algorithm import Algorithm, ProblemSpec
from lightning_unfold.core.unfolded import PARADIGMS, BlackBoxModel, ClassicalSolver, UnfoldedModel

__all__ = [
    "BASELINE_SETTINGS",
    "FAMILIES",
    "FamilyCase",
    "ParadigmSetting",
    "ProblemFamily",
    "register_family",
]

#: the two baselines every family is compared with (no paradigm of its own)
_BASELINES = ("classical", "black_box")


@dataclass(frozen=True)
class ParadigmSetting:
    """One way of building a model of a family: a paradigm (or a baseline) and its options.

    Attributes:
        paradigm: one of :data:`~lightning_unfold.core.unfolded.PARADIGMS`, ``"classical"`` or
            ``"black_box"``.
        variant: the objective-paradigm variant (``"lista_cp"``, ``"corona"``, ...).
        tied: one parameter set (and one network) for all layers.
        shared_correction: one correction network for all layers.
        learn_hyperparameters: the correction paradigm also learns the hyperparameters.
    """

    paradigm: str
    variant: str | None = None
    tied: bool = False
    shared_correction: bool = False
    learn_hyperparameters: bool = False

    def __post_init__(self) -> None:
        if self.paradigm not in PARADIGMS + _BASELINES:
            raise ValueError(
                f"Unknown paradigm {self.paradigm!r}; valid: {list(PARADIGMS + _BASELINES)}."
            )

    @property
    def id(self) -> str:
        """A readable test id, e.g. ``"objective[lista_cp]"``, ``"hyperparameters-tied"``."""
        out = self.paradigm + (f"[{self.variant}]" if self.variant else "")
        if self.tied:
            out += "-tied"
        if self.shared_correction:
            out += "-shared"
        if self.learn_hyperparameters:
            out += "-learn_hyperparameters"
        return out


#: the baselines, built for every family
BASELINE_SETTINGS: tuple[ParadigmSetting, ...] = (
    ParadigmSetting("classical"),
    ParadigmSetting("black_box"),
)


@dataclass(frozen=True)
class FamilyCase:
    """A named configuration of a family: keyword arguments that override the problem's and the
    algorithm's small defaults (e.g. NMF with :math:`\\beta = 2`, precoding without the
    unit-modulus constraint). Empty mappings: the family's defaults. ``paradigms`` lists the
    paradigms the case supports when that is not all of them (NMF's networks correct the
    activation update only, so a case that also updates the dictionary has no correction)."""

    name: str = "default"
    problem: Mapping[str, Any] = field(default_factory=dict)
    algorithm: Mapping[str, Any] = field(default_factory=dict)
    paradigms: tuple[str, ...] | None = None

    def supports(self, setting: ParadigmSetting) -> bool:
        """Whether this case builds ``setting`` (baselines: always)."""
        return (
            self.paradigms is None
            or setting.paradigm in _BASELINES
            or setting.paradigm in self.paradigms
        )


def _keeps(*objective: ParadigmSetting) -> tuple[ParadigmSetting, ...]:
    """The settings that keep the classical iteration in most families, in the zoo's order:
    learned hyperparameters (untied and tied), the family's ``objective`` forms, the correction
    (with and without learned hyperparameters)."""
    return (
        ParadigmSetting("hyperparameters"),
        ParadigmSetting("hyperparameters", tied=True),
        *objective,
        ParadigmSetting("correction"),
        ParadigmSetting("correction", learn_hyperparameters=True),
    )


_GENERIC_KEEPS: tuple[ParadigmSetting, ...] = (
    ParadigmSetting("hyperparameters"),
    ParadigmSetting("hyperparameters", tied=True),
    ParadigmSetting("objective"),
    ParadigmSetting("correction"),
    ParadigmSetting("correction", shared_correction=True),
    ParadigmSetting("correction", learn_hyperparameters=True),
)


@dataclass(frozen=True)
class ProblemFamily:
    """One classical solver on a small seeded instance of its problem (a row of the test zoo).

    Attributes:
        name: the registry key (the algorithm's registered name where there is one).
        problem: factory of a small seeded :class:`~lightning_unfold.core.algorithm.ProblemSpec`;
            called with a case's ``problem`` keywords (a :func:`functools.partial` of the class
            with the small sizes is the usual form). The data's precision is chosen when
            sampling: ``problem.sample(n, seed=..., dtype=torch.float64)``.
        algorithm: factory of the classical :class:`~lightning_unfold.core.algorithm.Algorithm`,
            called with a case's ``algorithm`` keywords. A fresh instance per model: some
            algorithms bind to their problem.
        keeps_classical: the settings whose classical initialisation reproduces the classical
            solver exactly (equivalence is tested for each, in every case).
        others: further settings that build and run but do not reproduce the classical solver
            (an inductive-bias network, ALISTA's analytic weight, support selection).
        complex_data: the observations are complex (float64 data are complex128).
        cases: named configurations; equivalence is tested in each.
        reference: factory of the algorithm whose classical solver the settings reproduce
            (``None``: :attr:`algorithm` itself; CORONA's classical kernels are ISTA-RPCA).
        depth: the number of layers K the zoo uses.
        batch: the batch size the zoo uses.
        hidden: the width of correction and inductive-bias networks.
    """

    name: str
    problem: Callable[..., ProblemSpec]
    algorithm: Callable[..., Algorithm[Any]]
    keeps_classical: tuple[ParadigmSetting, ...] = _GENERIC_KEEPS
    others: tuple[ParadigmSetting, ...] = ()
    complex_data: bool = False
    cases: tuple[FamilyCase, ...] = (FamilyCase(),)
    reference: Callable[..., Algorithm[Any]] | None = None
    depth: int = 10
    batch: int = 6
    hidden: int = 8

    def __post_init__(self) -> None:
        names = [c.name for c in self.cases]
        if not names or len(set(names)) != len(names):
            raise ValueError(f"Family {self.name!r} needs unique, non-empty case names: {names}.")
        if not self.keeps_classical:
            raise ValueError(
                f"Family {self.name!r} declares no setting that keeps the classical iteration; "
                "at least ParadigmSetting('hyperparameters') does for every algorithm."
            )

    def case(self, name: str | None = None) -> FamilyCase:
        """The case called ``name`` (default: the first one); unknown names list the valid ones."""
        if name is None:
            return self.cases[0]
        for c in self.cases:
            if c.name == name:
                return c
        raise ValueError(
            f"Family {self.name!r} has no case {name!r}; valid: {[c.name for c in self.cases]}."
        )

    def instance(self, case: FamilyCase | str | None = None) -> tuple[ProblemSpec, Algorithm[Any]]:
        """A fresh problem and classical algorithm of ``case`` (default: the first case)."""
        c = case if isinstance(case, FamilyCase) else self.case(case)
        return self.problem(**c.problem), self.algorithm(**c.algorithm)

    def reference_algorithm(self, case: FamilyCase | str | None = None) -> Algorithm[Any]:
        """A fresh instance of the algorithm whose classical solver the settings reproduce."""
        c = case if isinstance(case, FamilyCase) else self.case(case)
        return (self.reference or self.algorithm)(**c.algorithm)

    def settings(self) -> tuple[ParadigmSetting, ...]:
        """Every model the family builds: the equivalence settings, the others, the baselines."""
        return self.keeps_classical + self.others + BASELINE_SETTINGS

    def build(
        self,
        setting: ParadigmSetting,
        problem: ProblemSpec,
        algorithm: Algorithm[Any],
        *,
        depth: int | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> nn.Module:
        """The model of ``setting`` for ``problem`` with ``algorithm`` (depth K = :attr:`depth`)."""
        depth = self.depth if depth is None else depth
        if setting.paradigm == "classical":
            return ClassicalSolver(algorithm, problem, depth, dtype=dtype)
        if setting.paradigm == "black_box":
            target = sum(
                p.numel()
                for p in UnfoldedModel(algorithm, problem, depth, "hyperparameters").parameters()
            )
            net = algorithm.make_black_box_net(problem, max(target, 64))
            return BlackBoxModel(
                problem, max(target, 64), net=net, algorithm=algorithm, dtype=dtype
            )
        return UnfoldedModel(
            algorithm,
            problem,
            depth,
            setting.paradigm,
            variant=setting.variant,
            tied=setting.tied,
            hidden=self.hidden,
            shared_correction=setting.shared_correction,
            learn_hyperparameters=setting.learn_hyperparameters,
            dtype=dtype,
        )


FAMILIES: dict[str, ProblemFamily] = {}


def register_family(family: ProblemFamily) -> ProblemFamily:
    """Add ``family`` to :data:`FAMILIES` under its name (a name may be registered once)."""
    if family.name in FAMILIES:
        raise ValueError(f"A problem family named {family.name!r} is already registered.")
    FAMILIES[family.name] = family
    return family


_S = ParadigmSetting

# -- sparse recovery (LASSO): ISTA with its LISTA forms, FISTA, ADMM ------------------------------
register_family(
    ProblemFamily(
        name="ista",
        problem=partial(SparseRecovery, m=20, n=40, sparsity=0.15, rho=0.05, seed=1),
        algorithm=ISTA,
        keeps_classical=(
            *_GENERIC_KEEPS,
            _S("objective", "direct"),
            _S("objective", "lista"),
            _S("objective", "lista_cp"),
        ),
        others=(_S("objective", "lista_cpss"), _S("objective", "alista"), _S("inductive_bias")),
        cases=(
            FamilyCase("noiseless"),
            FamilyCase(
                "noisy-step",
                problem={"m": 15, "n": 30, "snr_db": 20.0, "rho": 0.1, "seed": 2},
                algorithm={"step": 0.15},
            ),
        ),
        depth=20,
    )
)
register_family(
    ProblemFamily(
        name="fista",
        problem=partial(SparseRecovery, m=20, n=40, sparsity=0.1, rho=0.05, seed=3),
        algorithm=FISTA,
        keeps_classical=(*_GENERIC_KEEPS, _S("objective", "direct")),
        others=(_S("inductive_bias"),),
        depth=20,
    )
)
register_family(
    ProblemFamily(
        name="admm_lasso",
        problem=partial(SparseRecovery, m=20, n=40, rho=0.05, seed=4),
        algorithm=partial(ADMMLasso, penalty=2.0),
        keeps_classical=(*_GENERIC_KEEPS, _S("objective", "direct")),
        others=(_S("inductive_bias"),),
        depth=20,
    )
)

# -- l0 sparse recovery: IHT and its learned forms ------------------------------------------------
register_family(
    ProblemFamily(
        name="iht",
        problem=partial(SparseRecovery, m=20, n=40, sparsity=0.1, rho=0.1, snr_db=30.0, seed=1),
        algorithm=partial(IHT, l0_weight=0.002),
        keeps_classical=_keeps(
            _S("objective", "liht"), _S("objective", "liht_cp"), _S("objective", "direct")
        ),
        others=(_S("inductive_bias"),),
        depth=20,
    )
)

# -- robust PCA (alternating factorisation, learned transform) ------------------------------------
register_family(
    ProblemFamily(
        name="rpca",
        problem=partial(
            RPCAProblem, n1=14, n2=10, rank=2, outlier_fraction=0.1, psi_noise=0.2, seed=3
        ),
        algorithm=partial(RPCA, step=0.8, zeta=1.2, decay=0.6),
        keeps_classical=_keeps(_S("objective")),
        others=(_S("inductive_bias"),),
        cases=(
            FamilyCase("identity", problem={"transform": "identity"}),
            FamilyCase("dct", problem={"transform": "dct"}),
        ),
        batch=4,
        hidden=3,
    )
)

# -- power allocation: WMMSE (UWMMSE's correction) ------------------------------------------------
register_family(
    ProblemFamily(
        name="wmmse",
        problem=partial(InterferenceChannel, M=12, seed=4),
        algorithm=WMMSE,
        keeps_classical=(*_keeps(_S("objective")), _S("correction", tied=True)),
        others=(_S("inductive_bias"),),
    )
)

# -- MIMO detection: soft interference cancellation (DeepSIC) and projected gradient (DetNet) -----
register_family(
    ProblemFamily(
        name="soft_ic",
        problem=partial(MIMODetection, n_users=3, n_antennas=4, snr_db=8.0, csi_noise=0.1, seed=0),
        algorithm=SoftIC,
        keeps_classical=(
            _S("hyperparameters"),
            _S("hyperparameters", tied=True),
            _S("objective"),
        ),
        others=(_S("inductive_bias"),),
        cases=(
            FamilyCase("bpsk", problem={"constellation": "bpsk"}),
            FamilyCase("qpsk", problem={"constellation": "qpsk"}),
        ),
        depth=5,
        batch=8,
    )
)
register_family(
    ProblemFamily(
        name="projected_gradient",
        problem=partial(
            MIMODetection,
            n_users=4,
            n_antennas=8,
            channel="gaussian",
            snr_db=2.0,
            loss="symbol_mse",
            seed=0,
        ),
        algorithm=ProjectedGradientDetector,
        keeps_classical=_keeps(_S("objective")),
        others=(_S("inductive_bias"),),
        depth=6,
    )
)

# -- hybrid precoding: projected gradient ascent on the rate ---------------------------------------
register_family(
    ProblemFamily(
        name="hybrid_pga",
        problem=partial(
            HybridPrecoding, n_bands=3, n_users=2, n_rf=3, n_antennas=4, snr_db=10.0, seed=1
        ),
        algorithm=partial(HybridPGA, 0.3),
        keeps_classical=_keeps(_S("objective")),
        others=(_S("inductive_bias"),),
        complex_data=True,
        cases=(
            FamilyCase("unit_modulus", problem={"analog": "unit_modulus"}),
            FamilyCase("unconstrained", problem={"analog": "unconstrained"}),
        ),
        depth=6,
        batch=5,
    )
)

# -- compressive imaging: ADMM-TV (ADMM-CSNet) -----------------------------------------------------
register_family(
    ProblemFamily(
        name="admm_tv",
        problem=partial(CompressiveImaging, size=8, sampling_rate=0.3, tv_weight=0.01, seed=1),
        algorithm=partial(ADMMTV, penalty=0.2),
        keeps_classical=_keeps(_S("objective")),
        complex_data=True,
        cases=(
            FamilyCase("tv", algorithm={"filters": "tv"}),
            FamilyCase("tv4", algorithm={"filters": "tv4"}),
        ),
        depth=6,
        batch=4,
        hidden=4,
    )
)

# -- NMF source separation: multiplicative updates (deep NMF) --------------------------------------
register_family(
    ProblemFamily(
        name="nmf",
        problem=partial(NMFSeparation, n_freq=24, n_frames=10, combs=3, bands=1, seed=2),
        algorithm=partial(NMF, sparsity=0.01),
        keeps_classical=(*_keeps(_S("objective")), _S("inductive_bias")),
        cases=(
            FamilyCase("kl", algorithm={"beta": 1.0}),
            FamilyCase("euclid", algorithm={"beta": 2.0}),
            FamilyCase(
                "kl-update_w",
                algorithm={"beta": 1.0, "update_dictionary": True},
                paradigms=("hyperparameters", "objective"),
            ),
            FamilyCase(
                "euclid-update_w",
                algorithm={"beta": 2.0, "update_dictionary": True},
                paradigms=("hyperparameters", "objective"),
            ),
        ),
        depth=15,
        hidden=4,
    )
)

# -- ultrasound clutter suppression: ISTA-RPCA, FISTA-RPCA, CORONA --------------------------------
_CLUTTER = partial(UltrasoundClutter, n_x=8, n_z=8, n_frames=10, rank=2, lam=0.5, mu=0.1, seed=1)
_CLUTTER_CASES = (
    FamilyCase("l12", problem={"psf_width": 0.0}, algorithm={"penalty": "l12"}),
    FamilyCase("l1", problem={"psf_width": 0.0}, algorithm={"penalty": "l1"}),
    FamilyCase(
        "psf-l12", problem={"psf_width": 0.5}, algorithm={"penalty": "l12", "kernel_size": 5}
    ),
    FamilyCase("psf-l1", problem={"psf_width": 0.5}, algorithm={"penalty": "l1", "kernel_size": 5}),
)
register_family(
    ProblemFamily(
        name="ista_rpca",
        problem=_CLUTTER,
        algorithm=ISTARPCA,
        keeps_classical=_keeps(
            _S("objective"), _S("objective", "corona"), _S("objective", "corona", tied=True)
        ),
        others=(_S("inductive_bias"),),
        complex_data=True,
        cases=_CLUTTER_CASES,
        batch=3,
        hidden=2,
    )
)
register_family(
    ProblemFamily(
        name="fista_rpca",
        problem=_CLUTTER,
        algorithm=FISTARPCA,
        keeps_classical=_keeps(_S("objective")),
        others=(_S("inductive_bias"),),
        complex_data=True,
        cases=(_CLUTTER_CASES[0], _CLUTTER_CASES[3]),
        batch=3,
        hidden=2,
    )
)
register_family(
    ProblemFamily(
        name="corona",
        problem=_CLUTTER,
        algorithm=CORONA,
        reference=ISTARPCA,
        keeps_classical=_keeps(_S("objective")),
        others=(_S("inductive_bias"),),
        complex_data=True,
        cases=(
            _CLUTTER_CASES[0],
            FamilyCase(
                "psf-l1-2d",
                problem={"psf_width": 0.5},
                algorithm={"penalty": "l1", "kernel_size": 5, "time_kernel": 1},
            ),
        ),
        batch=3,
        hidden=2,
    )
)

# -- dense-CRF segmentation: mean-field inference, CRF-RNN -------------------------------------
register_family(
    ProblemFamily(
        name="mean_field_crf",
        problem=partial(Segmentation, size=8, n_labels=3, seed=1),
        algorithm=partial(MeanFieldCRF, spatial_weight=2.0, bilateral_weight=1.0),
        keeps_classical=(*_GENERIC_KEEPS, _S("objective", tied=True)),
        others=(_S("inductive_bias"),),
        cases=(  # damped first: the round trip perturbs eta, and eta = 1 sits on its clamp
            FamilyCase("damped", algorithm={"step": 0.6}),
            FamilyCase("crf_rnn_update", algorithm={"step": 1.0}),
        ),
        depth=6,
        batch=4,
        hidden=4,
    )
)

# -- super-resolution: sparse coding per patch by ISTA, SCN ----------------------------------------
register_family(
    ProblemFamily(
        name="sc_sr",
        problem=partial(SuperResolution, size=16, source="synthetic", seed=1),
        algorithm=partial(
            SparseCodingSR,
            patch=3,
            atoms=8,
            lam=0.01,
            dictionary_iterations=2,
            training_patches=300,
        ),
        keeps_classical=(
            _S("hyperparameters"),
            _S("hyperparameters", tied=True),
            _S("objective", "direct"),
            _S("objective", "lista"),
            _S("objective", "lista", tied=True),
        ),
        cases=(
            FamilyCase("default-step", paradigms=("hyperparameters", "objective")),
            FamilyCase(
                "short-step", algorithm={"step": 0.1}, paradigms=("hyperparameters", "objective")
            ),
        ),
        depth=6,
        batch=4,
        hidden=4,
    )
)

# -- blind deblurring: alternating half-quadratic splitting, DUBLID -----------------------------
register_family(
    ProblemFamily(
        name="hqs_deblur",
        problem=partial(BlindDeblurring, size=16, kernel_size=5, source="synthetic", seed=1),
        algorithm=partial(HQSBlindDeblur, threshold=0.05, penalty=0.05, kernel_reg=1.0),
        keeps_classical=(*_GENERIC_KEEPS, _S("objective", tied=True)),
        cases=(
            FamilyCase("tv", algorithm={"filters": "tv"}),
            FamilyCase("tv4", algorithm={"filters": "tv4"}),
        ),
        depth=5,
        batch=3,
        hidden=4,
    )
)
