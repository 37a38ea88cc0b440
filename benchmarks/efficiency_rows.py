"""The rows of ``python -m benchmarks efficiency``: one :class:`~benchmarks.efficiency.EfficiencyRow`
per learned model with a classical counterpart.

A row names a shipped config (the learned model), the registered families it covers, the
classical solvers it is matched against (with an optional tuning grid), the review's claim and
per-preset sizes. The ``tiny`` sizes keep the test fast; the ``cpu`` sizes keep the whole table
within about half an hour of one core. Adding a family is adding a row here.
"""

from __future__ import annotations

from benchmarks.efficiency import CONFIGS, Classical, EfficiencyRow, register_row
from lightning_unfold.algorithms import FAMILIES

_LISTA_CLAIM = "LISTA “may be 20 times faster than ISTA”"
_ISTA = Classical("ISTA", "ista")
_FISTA = Classical("FISTA", "fista")
_SPARSE_TINY = {"problem": {"m": 10, "n": 20}, "depth": 3}
_SPARSE_CPU = {"steps": 600, "batch": 64, "test": 500, "max_it": 2000}

# -- sparse recovery: LISTA, LISTA-CP, ALISTA against ISTA, FISTA (and ADMM) ---------------------
register_row(
    EfficiencyRow(
        name="lista",
        title="LISTA",
        config="lista",
        families=("ista", "fista", "admm_lasso"),
        classical=(
            _ISTA,
            _FISTA,
            Classical("ADMM", "admm_lasso", grid={"penalty": (0.1, 0.3, 1.0)}),
        ),
        claim=_LISTA_CLAIM,
        presets={"tiny": _SPARSE_TINY, "cpu": _SPARSE_CPU},
    )
)
register_row(
    EfficiencyRow(
        name="lista_cp",
        title="LISTA-CP",
        config="lista_cp",
        families=("ista", "fista"),
        classical=(_ISTA, _FISTA),
        presets={"tiny": _SPARSE_TINY, "cpu": _SPARSE_CPU},
    )
)
register_row(
    EfficiencyRow(
        name="alista",
        title="ALISTA",
        config="alista",
        families=("ista", "fista"),
        classical=(_ISTA, _FISTA),
        presets={"tiny": _SPARSE_TINY, "cpu": _SPARSE_CPU},
    )
)

# -- l0 sparse recovery: LIHT against IHT ---------------------------------------------------------
register_row(
    EfficiencyRow(
        name="liht",
        title="LIHT-CP",
        config="liht",
        families=("iht",),
        classical=(Classical("IHT", "iht", grid={"l0_weight": (0.003, 0.01, 0.03)}),),
        presets={"tiny": _SPARSE_TINY, "cpu": _SPARSE_CPU},
    )
)

# -- robust PCA: learned hyperparameters of the alternating solver --------------------------------
register_row(
    EfficiencyRow(
        name="rpca",
        title="learned RPCA (η, ζ per layer)",
        config="rpca_hyperparameters",
        families=("rpca",),
        classical=(
            Classical(
                "RPCA (alternating)",
                "rpca",
                {"step": 1.0, "zeta": 1.0, "zeta_init": 2.0, "decay": 0.5},
            ),
        ),
        presets={
            "tiny": {"problem": {"n1": 12, "n2": 10, "rank": 2}, "depth": 3},
            "cpu": {"steps": 300, "batch": 8, "test": 64, "max_it": 500},
        },
    )
)

# -- ultrasound clutter: CORONA against ISTA-RPCA and FISTA-RPCA ---------------------------------
_RPCA_GRID = {"lam": (0.25, 0.5), "mu": (0.1, 0.2)}
register_row(
    EfficiencyRow(
        name="corona",
        title="CORONA",
        config="corona",
        families=("corona", "ista_rpca", "fista_rpca"),
        classical=(
            Classical("ISTA-RPCA", "ista_rpca", {"penalty": "l12"}),
            Classical("FISTA-RPCA", "fista_rpca", {"penalty": "l12"}, grid=_RPCA_GRID),
        ),
        claim="“over 50 times faster than Fast-ISTA”",
        presets={
            "tiny": {"problem": {"n_x": 6, "n_z": 6, "n_frames": 6, "rank": 2}, "depth": 3},
            # the paper's patch size, 32 × 32 pixels × 20 frames
            "cpu": {
                "problem": {"n_x": 32, "n_z": 32, "n_frames": 20},
                "steps": 60,
                "batch": 4,
                "test": 16,
                "val": 8,
                "max_it": 1000,
                "tune_it": 100,
                "black_box_scales": (1,),
            },
        },
    )
)

# -- power allocation: UWMMSE against WMMSE --------------------------------------------------------
register_row(
    EfficiencyRow(
        name="uwmmse",
        title="UWMMSE",
        config="power_correction",
        families=("wmmse",),
        classical=(Classical("WMMSE", "wmmse"),),
        presets={
            "tiny": {"problem": {"M": 5}, "depth": 2},
            "cpu": {"steps": 400, "batch": 64, "test": 500, "max_it": 200},
        },
    )
)

# -- MIMO detection: DeepSIC against soft interference cancellation, DetNet against PGD ----------
register_row(
    EfficiencyRow(
        name="deepsic",
        title="DeepSIC (end to end)",
        config="detection_deepsic_end_to_end",
        families=("soft_ic",),
        classical=(Classical("soft IC", "soft_ic"),),
        presets={
            "tiny": {"problem": {"frame": 20}, "depth": 2},
            "cpu": {"steps": 300, "batch": 500, "test": 4000, "max_it": 50},
        },
    )
)
register_row(
    EfficiencyRow(
        name="detnet",
        title="DetNet",
        config="detection_detnet",
        families=("projected_gradient",),
        classical=(Classical("projected gradient", "projected_gradient"),),
        presets={
            "tiny": {
                "problem": {"n_users": 3, "n_antennas": 6},
                "depth": 2,
                "model": {"algorithm_options": {"hidden": 8}},
            },
            "cpu": {
                "steps": 800,
                "batch": 128,
                "test": 2000,
                "max_it": 300,
                "black_box_scales": (1,),
            },
        },
    )
)

# -- hybrid precoding: unfolded PGA against PGA ---------------------------------------------------
register_row(
    EfficiencyRow(
        name="hybrid_pga",
        title="unfolded PGA",
        config="hybrid_precoding_unfolded_pga",
        families=("hybrid_pga",),
        classical=(Classical("PGA", "hybrid_pga", {"step": 0.5, "digital_init": "random"}),),
        presets={
            "tiny": {
                "problem": {"n_bands": 2, "n_users": 2, "n_rf": 3, "n_antennas": 4},
                "depth": 2,
            },
            "cpu": {"steps": 150, "batch": 64, "test": 128, "max_it": 200},
        },
    )
)

# -- compressive imaging: ADMM-CSNet against ADMM-TV ------------------------------------------------
register_row(
    EfficiencyRow(
        name="csnet",
        title="ADMM-CSNet",
        config="csnet",
        families=("admm_tv",),
        classical=(
            Classical(
                "ADMM-TV", "admm_tv", {"filters": "tv"}, grid={"penalty": (0.003, 0.01, 0.03)}
            ),
        ),
        claim="“about four times faster than BM3D-AMP”; “around 40 times” faster than "
        "conventional iterative methods",
        presets={
            "tiny": {"problem": {"size": 8}, "depth": 2},
            "cpu": {
                "steps": 150,
                "batch": 8,
                "test": 32,
                "val": 8,
                "max_it": 600,
                "black_box_scales": (1,),
            },
        },
    )
)

# -- NMF source separation: deep NMF against multiplicative updates ------------------------------
register_row(
    EfficiencyRow(
        name="deep_nmf",
        title="deep NMF",
        config="deep_nmf",
        families=("nmf",),
        classical=(Classical("multiplicative NMF (KL)", "nmf", {"beta": 1.0}),),
        presets={
            "tiny": {"problem": {"n_freq": 16, "n_frames": 8, "combs": 2, "bands": 1}, "depth": 2},
            "cpu": {"steps": 200, "batch": 16, "test": 64, "max_it": 600},
        },
    )
)

# -- dense-CRF segmentation: CRF-RNN against mean-field inference -------------------------------------
register_row(
    EfficiencyRow(
        name="crf_rnn",
        title="CRF-RNN (tied)",
        config="crf_rnn",
        families=("mean_field_crf",),
        classical=(
            Classical(
                "mean-field CRF (hand-set)",
                "mean_field_crf",
                {"spatial_weight": 4.0, "bilateral_weight": 0.0},
            ),
        ),
        test_problem={"split": "test"},
        presets={
            "tiny": {"problem": {"size": 12}, "depth": 2, "test": 4},
            "cpu": {"steps": 150, "batch": 8, "test": 16, "max_it": 60},
        },
    )
)

# -- super-resolution: SCN against sparse-coding super-resolution (ISTA per patch) ----------------
#    (registered once the family and its config are in the library)
if "sc_sr" in FAMILIES and (CONFIGS / "scn.yaml").is_file():
    register_row(
        EfficiencyRow(
            name="scn",
            title="SCN (tied LISTA)",
            config="scn",
            families=("sc_sr",),
            classical=(
                Classical("sparse-coding SR (ISTA per patch)", "sc_sr", inherit_options=True),
            ),
            test_problem={"split": "test"},
            presets={
                "tiny": {
                    "problem": {"size": 16},
                    "depth": 2,
                    "test": 4,
                    "model": {
                        "algorithm_options": {
                            "patch": 3,
                            "atoms": 8,
                            "lam": 0.01,
                            "dictionary_iterations": 2,
                            "training_patches": 300,
                        }
                    },
                },
                "cpu": {"steps": 300, "batch": 16, "test": 16, "max_it": 300},
            },
        )
    )

# -- blind deblurring: DUBLID against alternating half-quadratic splitting (TV filters) ----------
if "hqs_deblur" in FAMILIES and (CONFIGS / "dublid.yaml").is_file():
    register_row(
        EfficiencyRow(
            name="dublid",
            title="DUBLID",
            config="dublid",
            families=("hqs_deblur",),
            classical=(
                Classical(
                    "HQS blind deblurring (TV filters)",
                    "hqs_deblur",
                    grid={"threshold": (0.05, 0.1), "kernel_reg": (3.0, 10.0)},
                    inherit_options=True,
                ),
            ),
            claim="“can be 1000 times faster than TV-based deblurring”",
            test_problem={"split": "test"},
            presets={
                "tiny": {"problem": {"size": 16, "kernel_size": 5}, "depth": 2, "test": 4},
                "cpu": {
                    "steps": 200,
                    "batch": 8,
                    "test": 16,
                    "val": 8,
                    "max_it": 300,
                    "tune_it": 100,
                    "black_box_scales": (1,),
                },
            },
        )
    )
