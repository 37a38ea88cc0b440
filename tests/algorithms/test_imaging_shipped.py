"""Real images shipped inside wheels for compressive imaging: every file is in its wheel's
RECORD (nothing fetched), grey levels and resizing against independent references, seeded
patches and whole views, clear errors (a missing extra names it), config and checkpoint round
trips, and the real-image study's tiny preset."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pytest
import torch
import yaml
from algorithm_helpers import HAS_SKIMAGE, needs_skimage

from lightning_unfold.algorithms import CompressiveImaging
from lightning_unfold.algorithms.imaging import (
    SHIPPED_IMAGES,
    load_shipped,
    parse_image_set,
)
from lightning_unfold.algorithms.imaging.shipped import shipped_path
from lightning_unfold.core.algorithm import problem_from_config
from lightning_unfold.core.shipped import read_shipped
from lightning_unfold.training import UnfoldedModule

HAS = {"scikit-image": HAS_SKIMAGE, "pydicom": importlib.util.find_spec("pydicom") is not None}
needs_pydicom = pytest.mark.skipif(
    not HAS["pydicom"], reason="pydicom (pip install lightning-unfold[images]) is not installed"
)


@pytest.mark.parametrize("distribution", ["scikit-image", "pydicom"])
def test_every_shipped_image_is_a_file_of_its_installed_wheel(distribution: str) -> None:
    """The wheel's RECORD lists every file we read: it was installed with the package, not
    downloaded at run time (scikit-image's pooch-fetched images, e.g. brain, are not offered)."""
    if not HAS[distribution]:
        pytest.skip(f"{distribution} is not installed")
    record = {str(f).replace(os.sep, "/") for f in importlib.metadata.files(distribution) or ()}
    keys = [k for k, im in SHIPPED_IMAGES.items() if im.distribution == distribution]
    assert keys
    for key in keys:
        image = SHIPPED_IMAGES[key]
        assert f"{image.package}/{image.path}" in record, key
        assert os.path.isfile(shipped_path(key))
    assert "skimage:brain" not in SHIPPED_IMAGES  # fetched by pooch, not in the wheel


@needs_skimage
def test_grey_levels_match_an_independent_reading_of_the_files() -> None:
    from PIL import Image

    camera = load_shipped("skimage:camera")
    raw = np.asarray(Image.open(shipped_path("skimage:camera")), dtype=np.float64)
    np.testing.assert_array_equal(camera, raw / 255.0)
    astronaut = load_shipped("skimage:astronaut")
    rgb = np.asarray(Image.open(shipped_path("skimage:astronaut")).convert("RGB"), np.float64)
    lum = (0.2125 * rgb[..., 0] + 0.7154 * rgb[..., 1] + 0.0721 * rgb[..., 2]) / 255.0
    np.testing.assert_allclose(astronaut, lum, atol=1e-12)
    assert astronaut.shape == (512, 512) and not astronaut.flags.writeable


@needs_skimage
def test_raw_arrays_and_the_bt601_rule_match_an_independent_reading() -> None:
    """The shared reader behind Segmentation (stored arrays), BlindDeblurring (BT.601 luma of
    the code values, then scaled) and SuperResolution (YCbCr's Y) against PIL."""
    from PIL import Image

    horse = read_shipped("skimage:horse")
    assert horse.dtype == np.uint8 and not horse.flags.writeable
    np.testing.assert_array_equal(horse, np.asarray(Image.open(shipped_path("skimage:horse"))))
    rgb = np.asarray(Image.open(shipped_path("skimage:coffee")).convert("RGB"), np.float64)
    luma = (0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]) / 255.0
    coffee = load_shipped("skimage:coffee", luma="bt601")
    np.testing.assert_allclose(coffee, luma, atol=1e-12)
    assert not np.array_equal(coffee, load_shipped("skimage:coffee"))  # the rule matters
    y = 16.0 + 65.481 * rgb[..., 0] / 255 + 128.553 * rgb[..., 1] / 255 + 24.966 * rgb[..., 2] / 255
    np.testing.assert_allclose(load_shipped("skimage:coffee", luma="ycbcr"), y / 255.0, atol=1e-12)
    # a grey image has no luma rule to apply: both rules give the scaled code values
    np.testing.assert_array_equal(
        load_shipped("skimage:camera", luma="bt601"), load_shipped("skimage:camera")
    )
    with pytest.raises(ValueError, match="Unknown luma rule 'bt2020'"):
        load_shipped("skimage:camera", luma="bt2020")
    with pytest.raises(ValueError, match="Unknown shipped image 'skimage:brain'"):
        read_shipped("skimage:brain")


@needs_pydicom
def test_the_mr_slice_is_scaled_to_the_unit_interval() -> None:
    import pydicom

    mr = load_shipped("pydicom:MR_small")
    raw = pydicom.dcmread(shipped_path("pydicom:MR_small")).pixel_array.astype(np.float64)
    assert mr.shape == (64, 64) and mr.min() == 0.0 and mr.max() == 1.0
    np.testing.assert_allclose(mr, (raw - raw.min()) / (raw.max() - raw.min()), atol=1e-15)
    assert load_shipped("pydicom:CT_small").shape == (128, 128)


@needs_skimage
@pytest.mark.parametrize("size", [16, 40])
def test_whole_images_are_centred_squares_resized_as_pil_does(size: int) -> None:
    """PIL's anti-aliased bilinear resize is the reference (float32 'F' images)."""
    from PIL import Image

    names = "skimage:coins,camera,text"
    prob = CompressiveImaging(size=size, images=names, crop="whole", snr_db=None)
    _, x = prob.sample(5, seed=0, dtype=torch.float64)
    refs = []
    for key in parse_image_set(names):
        img = load_shipped(key)
        h, w = img.shape
        s = min(h, w)
        sq = img[(h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s]
        pil = Image.fromarray(sq.astype(np.float32)).resize((size, size), Image.BILINEAR)
        refs.append(np.asarray(pil, dtype=np.float64))
    for i in range(5):  # entry i is image i mod 3, whatever the seed
        np.testing.assert_allclose(x[i].numpy(), refs[i % 3], atol=1e-6)
    assert torch.equal(prob.sample(5, seed=7, dtype=torch.float64)[1], x)


@needs_skimage
def test_patches_are_seeded_flips_and_rotations_of_crops() -> None:
    """At the image's own size a patch is the whole image in one of the 8 dihedral poses
    (microaneurysms.png is 102×102); at a smaller size the patches are seeded crops."""
    img = load_shipped("skimage:microaneurysms")
    poses = [np.rot90(img, r) for r in range(4)]
    poses += [p[:, ::-1] for p in poses]
    prob = CompressiveImaging(size=102, images="skimage:microaneurysms", snr_db=None)
    _, x = prob.sample(40, seed=1, dtype=torch.float64)
    seen = set()
    for patch in x.numpy():
        match = [j for j, pose in enumerate(poses) if np.abs(patch - pose).max() < 1e-12]
        assert len(match) == 1
        seen.add(match[0])
    assert seen == set(range(8))
    small = CompressiveImaging(size=16, images="skimage:camera,moon", snr_db=None, seed=3)
    _, a = small.sample(6, seed=1)
    _, b = small.sample(6, seed=1)
    _, c = small.sample(6, seed=2)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0 and float(a.std()) > 0.05
    same_mask = CompressiveImaging(size=16, images="skimage:page", crop="whole", seed=3)
    assert torch.equal(same_mask.mask, small.mask)  # the mask depends on the seed only


def test_bad_image_sets_are_clear_errors() -> None:
    with pytest.raises(ValueError, match=r"Unknown shipped image 'skimage:lena'.*skimage:camera"):
        CompressiveImaging(images="skimage:lena")
    with pytest.raises(ValueError, match="names no package"):
        CompressiveImaging(images="camera")
    with pytest.raises(ValueError, match="listed twice"):
        CompressiveImaging(images="skimage:camera,camera")
    with pytest.raises(ValueError, match="comma-separated"):
        CompressiveImaging(images="")
    with pytest.raises(ValueError, match=r"Unknown crop 'centre'; valid: \['patches', 'whole'\]"):
        CompressiveImaging(images="skimage:camera", crop="centre")
    with pytest.raises(ValueError, match="phantoms are always drawn whole"):
        CompressiveImaging(crop="whole")
    assert parse_image_set("skimage:camera, moon ,pydicom:MR_small") == (
        "skimage:camera",
        "skimage:moon",
        "pydicom:MR_small",
    )


@pytest.mark.parametrize(
    ("modules", "images"),
    [(("skimage", "skimage.io"), "skimage:camera"), (("pydicom",), "pydicom:MR_small")],
)
def test_a_missing_extra_is_an_error_naming_it(
    monkeypatch: pytest.MonkeyPatch, modules: tuple[str, ...], images: str
) -> None:
    load_shipped.cache_clear()
    for name in modules:
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ImportError, match=r"pip install lightning-unfold\[images\]"):
        CompressiveImaging(size=16, images=images)
    load_shipped.cache_clear()


@needs_pydicom
@needs_skimage
@pytest.mark.parametrize("crop", ["patches", "whole"])
def test_real_image_problems_survive_config_and_checkpoint_round_trips(
    crop: str, tmp_path: Path
) -> None:
    prob = CompressiveImaging(
        size=16, sampling_rate=0.3, images="skimage:coins,pydicom:MR_small", crop=crop, seed=4
    )
    again = problem_from_config(yaml.safe_load(yaml.safe_dump(prob.to_config())))
    assert isinstance(again, CompressiveImaging)
    assert again.init_args()["images"] == "skimage:coins,pydicom:MR_small"
    assert again.init_args()["crop"] == crop
    for a, b in zip(prob.sample(4, seed=2), again.sample(4, seed=2), strict=True):
        assert torch.equal(a, b)
    module = UnfoldedModule(prob, algorithm="admm_tv", paradigm="objective", depth=2)
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    from lightning_unfold import SyntheticDataModule

    trainer.fit(module, SyntheticDataModule(prob, batch_size=2, train_batches=1, val_size=2))
    trainer.save_checkpoint(tmp_path / "real.ckpt")
    loaded = UnfoldedModule.load_from_checkpoint(tmp_path / "real.ckpt", weights_only=True)
    assert loaded.problem.init_args() == prob.init_args()
    y, x = loaded.problem.sample(3, seed=5)
    assert torch.equal(x, prob.sample(3, seed=5)[1])
    torch.testing.assert_close(loaded(y).final_estimate, module(y).final_estimate)


@needs_pydicom
@needs_skimage
def test_real_image_study_tiny_preset_writes_results(
    tmp_path: Path, load_example: Callable[[str], Any]
) -> None:
    study = load_example("csnet_real_study")
    results = study.main(["--preset", "tiny", "--out", str(tmp_path)])
    assert json.loads((tmp_path / "results.json").read_text())["methods"].keys() == set(
        study.METHODS
    )
    depth = study.PRESETS["tiny"].depth
    test_images = {"coins", "moon", "retina", "microaneurysms", "MR_small", "CT_small"}
    for name, entry in results["methods"].items():
        if name != "admm_tv_best":
            assert len(entry["psnr_db"]) == len(entry["ssim"]) == depth + 1
        assert all(math.isfinite(v) for v in entry["psnr_db"] + entry["ssim"])
        assert set(entry["per_image"]) == test_images
        assert entry["ms_per_image"] > 0 and entry["cpu_ms_per_image"] >= 0
    assert (
        results["methods"]["admm_csnet"]["params"]
        > results["methods"]["hyperparameters"]["params"]
        > 0
    )
    oracle = results["classical_oracle"]  # tuned on the test images: at least admm_tv's PSNR
    assert (
        oracle["psnr_db"]
        >= oracle["best_at_K_psnr_db"]
        >= results["methods"]["admm_tv"]["psnr_db"][-1] - 1e-9
    )
    images = results["images"]
    assert images["MR_small"] == {**images["MR_small"], "package": "pydicom", "set": "test"}
    assert images["camera"]["package"] == "scikit-image" and images["camera"]["set"] == "train"
    sets = {s: {n for n, v in images.items() if v["set"] == s} for s in ("train", "tune", "test")}
    assert sets["test"] == test_images
    assert not (sets["train"] & sets["test"]) and not (sets["tune"] & sets["test"])
    assert not (sets["train"] & sets["tune"])
    assert (tmp_path / "csnet_real.png").stat().st_size > 20_000
