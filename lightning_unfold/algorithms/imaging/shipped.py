"""Real images shipped inside wheels, for :class:`CompressiveImaging`: the reader moved to
:mod:`lightning_unfold.core.shipped` (shared with Segmentation and BlindDeblurring); its names
stay importable from here."""

from __future__ import annotations

from lightning_unfold.core.shipped import (
    CROPS,
    INSTALL,
    LUMA,
    SHIPPED_IMAGES,
    ShippedImage,
    load_shipped,
    parse_image_set,
    read_shipped,
    shipped_batch,
    shipped_path,
)

__all__ = [
    "CROPS",
    "INSTALL",
    "LUMA",
    "SHIPPED_IMAGES",
    "ShippedImage",
    "load_shipped",
    "parse_image_set",
    "read_shipped",
    "shipped_batch",
    "shipped_path",
]
