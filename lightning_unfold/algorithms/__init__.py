"""Classical solvers declared for unfolding, and the registry that names them."""

from __future__ import annotations

from typing import Any

from lightning_unfold.algorithms.admm import ADMMLasso, ADMMState
from lightning_unfold.algorithms.corona import (
    CORONA,
    FISTARPCA,
    ISTARPCA,
    FISTARPCAState,
    LowRankSparseState,
    UltrasoundClutter,
)
from lightning_unfold.algorithms.crf import (
    CRFState,
    MeanFieldCRF,
    Segmentation,
    SegmentationBlackBoxNet,
)
from lightning_unfold.algorithms.detection import (
    DeepSICLayer,
    DetectionBlackBoxNet,
    DetNetLayer,
    DetNetState,
    MIMODetection,
    ProjectedGradientDetector,
    SoftIC,
    lmmse,
    maximum_likelihood,
    zero_forcing,
)
from lightning_unfold.algorithms.dublid import (
    BlindDeblurring,
    DeblurBlackBoxNet,
    DeblurState,
    HQSBlindDeblur,
)
from lightning_unfold.algorithms.families import (
    BASELINE_SETTINGS,
    FAMILIES,
    FamilyCase,
    ParadigmSetting,
    ProblemFamily,
    register_family,
)
from lightning_unfold.algorithms.iht import IHT, LIHT, LIHTCP, hard_threshold, l0_objective
from lightning_unfold.algorithms.imaging import (
    ADMMTV,
    CompressiveImaging,
    ImagingADMMState,
    ImagingBlackBoxNet,
    ImagingCorrectionNet,
)
from lightning_unfold.algorithms.nmf import (
    NMF,
    NMFBlackBoxNet,
    NMFCorrectionNet,
    NMFNetIteration,
    NMFSeparation,
    NMFState,
    beta_divergence,
    bss_decomposition,
)
from lightning_unfold.algorithms.power import (
    WMMSE,
    GraphConv,
    GraphIteration,
    InterferenceChannel,
    PowerBlackBoxNet,
    UWMMSECorrection,
    WMMSEState,
    full_power,
)
from lightning_unfold.algorithms.precoding import (
    HybridBlackBoxNet,
    HybridPGA,
    HybridPrecoding,
    PrecoderState,
)
from lightning_unfold.algorithms.rpca import (
    RPCA,
    RPCABlackBoxNet,
    RPCAConvIteration,
    RPCACorrectionNet,
    RPCAProblem,
    RPCAState,
)
from lightning_unfold.algorithms.scn import (
    SCN,
    SparseCodingSR,
    SRBlackBoxNet,
    SRState,
    SuperResolution,
)
from lightning_unfold.algorithms.sparse import (
    ALISTA,
    FISTA,
    ISTA,
    LISTA,
    LISTACP,
    LISTACPSS,
    FISTAState,
    SparseRecovery,
    lasso_objective,
    soft_threshold,
    soft_threshold_support_selection,
)
from lightning_unfold.core.algorithm import Algorithm

ALGORITHMS: dict[str, type[Algorithm[Any]]] = {
    cls.name: cls
    for cls in (ISTA, FISTA, LISTA, LISTACP, LISTACPSS, ALISTA, ADMMLasso, RPCA, HybridPGA)
}
ALGORITHMS[WMMSE.name] = WMMSE
ALGORITHMS.update({cls.name: cls for cls in (SoftIC, ProjectedGradientDetector)})
ALGORITHMS.update({cls.name: cls for cls in (IHT, LIHT, LIHTCP, NMF)})
ALGORITHMS[ADMMTV.name] = ADMMTV
ALGORITHMS.update({cls.name: cls for cls in (ISTARPCA, FISTARPCA, CORONA)})
ALGORITHMS[MeanFieldCRF.name] = MeanFieldCRF
ALGORITHMS.update({cls.name: cls for cls in (SparseCodingSR, SCN)})
ALGORITHMS[HQSBlindDeblur.name] = HQSBlindDeblur


def register_algorithm(cls: type[Algorithm[Any]]) -> type[Algorithm[Any]]:
    """Class decorator adding an algorithm to :data:`ALGORITHMS` under ``cls.name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} needs a non-empty class attribute `name`.")
    ALGORITHMS[cls.name] = cls
    return cls


def make_algorithm(name: str, **options: Any) -> Algorithm[Any]:
    """Instantiate a registered algorithm by name; unknown names list the valid ones."""
    if name not in ALGORITHMS:
        raise ValueError(f"Unknown algorithm {name!r}; valid: {sorted(ALGORITHMS)}.")
    return ALGORITHMS[name](**options)


__all__ = [
    "ADMMTV",
    "ALGORITHMS",
    "ALISTA",
    "BASELINE_SETTINGS",
    "CORONA",
    "FAMILIES",
    "FISTA",
    "FISTARPCA",
    "IHT",
    "ISTA",
    "ISTARPCA",
    "LIHT",
    "LIHTCP",
    "LISTA",
    "LISTACP",
    "LISTACPSS",
    "NMF",
    "RPCA",
    "SCN",
    "WMMSE",
    "ADMMLasso",
    "ADMMState",
    "BlindDeblurring",
    "CRFState",
    "CompressiveImaging",
    "DeblurBlackBoxNet",
    "DeblurState",
    "DeepSICLayer",
    "DetNetLayer",
    "DetNetState",
    "DetectionBlackBoxNet",
    "FISTARPCAState",
    "FISTAState",
    "FamilyCase",
    "GraphConv",
    "GraphIteration",
    "HQSBlindDeblur",
    "HybridBlackBoxNet",
    "HybridPGA",
    "HybridPrecoding",
    "ImagingADMMState",
    "ImagingBlackBoxNet",
    "ImagingCorrectionNet",
    "InterferenceChannel",
    "LowRankSparseState",
    "MIMODetection",
    "MeanFieldCRF",
    "NMFBlackBoxNet",
    "NMFCorrectionNet",
    "NMFNetIteration",
    "NMFSeparation",
    "NMFState",
    "ParadigmSetting",
    "PowerBlackBoxNet",
    "PrecoderState",
    "ProblemFamily",
    "ProjectedGradientDetector",
    "RPCABlackBoxNet",
    "RPCAConvIteration",
    "RPCACorrectionNet",
    "RPCAProblem",
    "RPCAState",
    "SRBlackBoxNet",
    "SRState",
    "Segmentation",
    "SegmentationBlackBoxNet",
    "SoftIC",
    "SparseCodingSR",
    "SparseRecovery",
    "SuperResolution",
    "UWMMSECorrection",
    "UltrasoundClutter",
    "WMMSEState",
    "beta_divergence",
    "bss_decomposition",
    "full_power",
    "hard_threshold",
    "l0_objective",
    "lasso_objective",
    "lmmse",
    "make_algorithm",
    "maximum_likelihood",
    "register_algorithm",
    "register_family",
    "soft_threshold",
    "soft_threshold_support_selection",
    "zero_forcing",
]
