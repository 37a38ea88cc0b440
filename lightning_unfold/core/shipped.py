r"""Real images that ship *inside* packages on PyPI: one reader for every family that uses them.

Every image here is a file inside an installed wheel — scikit-image's ``skimage/data`` (the
photographs that ``skimage.data`` loads without pooch) and pydicom's ``pydicom/data/test_files``
(two DICOM slices, an MR and a CT) — read from the package's own directory: nothing is fetched at
run time, and a name that is not in the wheel is an error rather than a download. Both packages
come with the optional extra ``pip install lightning-unfold[images]``; a missing one is an
:class:`ImportError` naming it. Images are named ``package:name`` (:data:`SHIPPED_IMAGES`, checked
against the wheels' RECORD files in the tests). Users:
:class:`~lightning_unfold.algorithms.imaging.CompressiveImaging`
(``images="skimage:camera,astronaut,pydicom:MR_small"``),
:class:`~lightning_unfold.algorithms.crf.Segmentation`,
:class:`~lightning_unfold.algorithms.dublid.BlindDeblurring` and
:class:`~lightning_unfold.algorithms.scn.SuperResolution` (``source="skimage"``).

:func:`read_shipped` gives the stored array as is (e.g. ``uint8`` RGBA), for rules on the code
values such as Segmentation's masks. :func:`load_shipped` gives a real array in :math:`[0, 1]`:
DICOM slices by their stored values mapped affinely, minimum to 0 and maximum to 1; photographs
divided by the dtype's range, RGB(A) ones (alpha dropped) reduced to grey by a ``luma`` rule:

* ``"bt709"`` (default): :math:`0.2125R + 0.7154G + 0.0721B` (ITU-R BT.709, scikit-image's
  ``rgb2gray`` weights) of the scaled values;
* ``"bt601"``: :math:`0.299R + 0.587G + 0.114B` (ITU-R BT.601 luma) of the stored code values,
  then scaled (the order is part of the rule: the two orders differ in the last bit);
* ``"ycbcr"``: the Y channel of BT.601 YCbCr of the scaled values,
  :math:`(16 + 65.481R + 128.553G + 24.966B)/255`, in :math:`[16/255, 235/255]` (the channel
  super-resolution papers score); grey images stay the scaled code values.

Two views of a set for training and testing (:func:`shipped_batch`):

* ``"patches"`` (training): a seeded random image of the set, a random square crop whose side is
  drawn log-uniformly between the problem size and the image's shorter side (so the patches span
  the scales from native resolution to the whole image shrunk), one of the 8 flips/rotations of
  the square, resized to ``size × size``;
* ``"whole"`` (testing): image ``i mod len(set)`` of the set in the given order, its centred
  square (the shorter side) resized to ``size × size`` — the whole image, no randomness.

Resizing is bilinear with an anti-aliasing filter (``torch.nn.functional.interpolate(...,
antialias=True)``) when shrinking; an image smaller than the problem is enlarged bilinearly.
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as tF

#: the optional extra that installs the packages shipping the images
INSTALL = "pip install lightning-unfold[images]"
#: the view of an image set: random patches (training) or whole images (testing)
CROPS: tuple[str, ...] = ("patches", "whole")


@dataclass(frozen=True)
class ShippedImage:
    """One image shipped inside a wheel: the importable ``package`` that ships it, the file's
    path relative to ``package``'s directory, the PyPI distribution, and what it shows."""

    package: str
    path: str
    distribution: str
    content: str

    @property
    def key(self) -> str:
        return f"{self.package}:{os.path.splitext(os.path.basename(self.path))[0]}"


def _sk(name: str, content: str, ext: str = "png") -> ShippedImage:
    return ShippedImage("skimage", f"data/{name}.{ext}", "scikit-image", content)


def _dcm(name: str, content: str) -> ShippedImage:
    return ShippedImage("pydicom", f"data/test_files/{name}.dcm", "pydicom", content)


#: every shipped image by ``package:name`` (checked against the wheels' RECORD files in the tests)
SHIPPED_IMAGES: dict[str, ShippedImage] = {
    im.key: im
    for im in (
        _sk("astronaut", "portrait of astronaut Eileen Collins (NASA), 512×512 RGB"),
        _sk("brick", "brick wall texture, 512×512"),
        _sk("camera", "the cameraman, 512×512"),
        _sk("cell", "fluorescence micrograph of a cell, 660×550"),
        _sk("chelsea", "a cat (Chelsea), 300×451 RGB"),
        _sk("clock_motion", "a motion-blurred clock, 300×400"),
        _sk("coffee", "a cup of coffee, 400×600 RGB"),
        _sk("coins", "Greek coins (Brooklyn Museum), 303×384"),
        _sk("grass", "grass texture, 512×512"),
        _sk("gravel", "gravel texture, 512×512"),
        _sk("horse", "a horse silhouette, 328×400 RGBA"),
        _sk("hubble_deep_field", "Hubble deep field, 872×1000 RGB", "jpg"),
        _sk("ihc", "immunohistochemistry stain, 512×512 RGB"),
        _sk("microaneurysms", "retina detail with microaneurysms, 102×102"),
        _sk("moon", "surface of the moon, 512×512"),
        _sk("motorcycle_left", "a motorcycle (left stereo view), 500×741 RGB"),
        _sk("page", "a scanned page of text, 191×384"),
        _sk("phantom", "Shepp–Logan phantom rendering, 400×400 RGB"),
        _sk("retina", "fundus photograph of a retina, 1411×1411 RGB", "jpg"),
        _sk("rocket", "a rocket launch, 427×640 RGB", "jpg"),
        _sk("text", "photographed text, 172×448"),
        _dcm(
            "MR_small",
            "MR slice, 64×64, downsized from NEMA WG04 MR1_UNC (pydicom's test files)",
        ),
        _dcm(
            "CT_small",
            "CT slice, 128×128, downsized from NEMA WG04 CT1_UNC (pydicom's test files)",
        ),
    )
}


def parse_image_set(spec: str) -> tuple[str, ...]:
    """The ``package:name`` keys of a comma-separated image list.

    ``"skimage:camera,astronaut,pydicom:MR_small"``: a name without a ``package:`` prefix belongs
    to the package named last. Unknown names and duplicates are errors listing the valid names.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(
            f"An image set is a comma-separated list such as 'skimage:camera,astronaut', got "
            f"{spec!r}."
        )
    keys: list[str] = []
    package: str | None = None
    for item in (s.strip() for s in spec.split(",")):
        if ":" in item:
            package, _, item = item.partition(":")
            package, item = package.strip(), item.strip()
        if package is None:
            raise ValueError(
                f"Image {item!r} in {spec!r} names no package: write 'skimage:{item}' (each name "
                "takes the package named last)."
            )
        key = f"{package}:{item}"
        if key not in SHIPPED_IMAGES:
            raise ValueError(
                f"Unknown shipped image {key!r}; valid: {sorted(SHIPPED_IMAGES)} (only files "
                "inside the installed wheels, nothing fetched at run time)."
            )
        if key in keys:
            raise ValueError(f"Image {key!r} is listed twice in {spec!r}.")
        keys.append(key)
    return tuple(keys)


def shipped_path(key: str) -> str:
    """The file of a shipped image inside its installed package (an error names the extra if
    the package is missing, and refuses a file absent from the package directory)."""
    image = SHIPPED_IMAGES[key]
    try:
        module = __import__(image.package)
    except ImportError as err:
        raise ImportError(
            f"The image {key!r} ships inside the {image.distribution} wheel, which is not "
            f"installed; install the extra: {INSTALL}"
        ) from err
    path = os.path.join(os.path.dirname(str(module.__file__)), *image.path.split("/"))
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{image.path} is not in the installed {image.distribution} ({path}); this problem "
            f"reads only files shipped inside the wheel and never downloads — reinstall with "
            f"{INSTALL}."
        )
    return path


#: RGB → grey weights of the ``luma`` rules of :func:`load_shipped` (``"ycbcr"`` adds 16/255)
LUMA: dict[str, tuple[float, float, float]] = {
    "bt709": (0.2125, 0.7154, 0.0721),
    "bt601": (0.299, 0.587, 0.114),
    "ycbcr": (65.481 / 255.0, 128.553 / 255.0, 24.966 / 255.0),
}


@functools.lru_cache(maxsize=32)
def _decode(path: str, package: str) -> np.ndarray:
    if package == "pydicom":
        import pydicom

        raw = np.asarray(pydicom.dcmread(path).pixel_array)
    else:
        import skimage.io

        raw = np.asarray(skimage.io.imread(path))
    raw.setflags(write=False)
    return raw


def read_shipped(key: str) -> np.ndarray:
    """A shipped image as stored in its file (dtype, channels and all; read-only, cached): the
    package is checked on every call, so a missing extra is always an error naming it."""
    if key not in SHIPPED_IMAGES:
        raise ValueError(f"Unknown shipped image {key!r}; valid: {sorted(SHIPPED_IMAGES)}.")
    return _decode(shipped_path(key), SHIPPED_IMAGES[key].package)


@functools.lru_cache(maxsize=32)
def _load(key: str, luma: str) -> np.ndarray:
    raw = read_shipped(key)
    if SHIPPED_IMAGES[key].package == "pydicom":
        raw = raw.astype(np.float64)
        lo, hi = raw.min(), raw.max()
        out = (raw - lo) / (hi - lo)
    else:
        scale = float(np.iinfo(raw.dtype).max) if raw.dtype.kind in "ui" else 1.0
        weights = np.array(LUMA[luma])
        if raw.ndim != 3:
            out = raw.astype(np.float64) / scale
        elif luma == "bt709":  # scaled, then weighed
            out = (raw.astype(np.float64) / scale)[..., :3] @ weights
        elif luma == "ycbcr":  # scaled, then Y = (16 + 65.481 R + 128.553 G + 24.966 B) / 255
            rgb = raw.astype(np.float64) / scale
            r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
            out = (16.0 + 65.481 * r + 128.553 * g + 24.966 * b) / 255.0
        else:  # weighed code values, then scaled
            out = (raw.astype(np.float64)[..., :3] @ weights) / scale
    if out.ndim != 2 or min(out.shape) < 8 or not np.isfinite(out).all():
        raise ValueError(f"{key} did not load as a finite 2-D image (shape {out.shape}).")
    out = np.clip(out, 0.0, 1.0)
    out.setflags(write=False)
    return out


def load_shipped(key: str, luma: str = "bt709") -> np.ndarray:
    """A shipped image at its native resolution, grey levels in :math:`[0, 1]`, float64
    (read-only; cached), RGB reduced to grey by the ``luma`` rule (module docstring)."""
    if luma not in LUMA:
        raise ValueError(f"Unknown luma rule {luma!r}; valid: {sorted(LUMA)}.")
    if key not in SHIPPED_IMAGES:
        raise ValueError(f"Unknown shipped image {key!r}; valid: {sorted(SHIPPED_IMAGES)}.")
    shipped_path(key)  # the package is checked on every call, cached or not
    return _load(key, luma)


def _cache_clear() -> None:
    """Forget every decoded and converted image (``load_shipped.cache_clear()``, as when
    :func:`load_shipped` was itself an ``lru_cache``)."""
    _load.cache_clear()
    _decode.cache_clear()


load_shipped.cache_clear = _cache_clear  # type: ignore[attr-defined]


def _resize(img: np.ndarray, size: int) -> np.ndarray:
    t = torch.tensor(np.ascontiguousarray(img))[None, None]  # a copy: cached arrays are read-only
    out = tF.interpolate(t, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return out[0, 0].clamp(0.0, 1.0).numpy()


def shipped_batch(
    keys: tuple[str, ...], n: int, size: int, crop: str, rng: np.random.Generator
) -> np.ndarray:
    """``n`` images ``(n, size, size)`` in :math:`[0, 1]` from the shipped images ``keys``, in
    the view ``crop`` (module docstring); ``rng`` draws the patches (unused for ``"whole"``)."""
    if crop not in CROPS:
        raise ValueError(f"Unknown crop {crop!r}; valid: {list(CROPS)}.")
    images = [load_shipped(k) for k in keys]
    out = np.empty((n, size, size))
    for i in range(n):
        if crop == "whole":
            img = images[i % len(images)]
            h, w = img.shape
            side = min(h, w)
            top, left = (h - side) // 2, (w - side) // 2
            out[i] = _resize(img[top : top + side, left : left + side], size)
            continue
        img = images[int(rng.integers(len(images)))]
        h, w = img.shape
        short = min(h, w)
        lo = min(size, short)
        side = min(max(round(math.exp(rng.uniform(math.log(lo), math.log(short)))), lo), short)
        top = int(rng.integers(h - side + 1))
        left = int(rng.integers(w - side + 1))
        patch = img[top : top + side, left : left + side]
        patch = np.rot90(patch, int(rng.integers(4)))
        if rng.integers(2):
            patch = patch[:, ::-1]
        out[i] = _resize(patch, size)
    return out
