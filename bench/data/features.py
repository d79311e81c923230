"""Slide features as CLAM writes them, gathered into one bag per patient.

`h5_files/<stem>.h5` (dataset `features` [N, D]) or `pt_files/<stem>.pt` (a [N, D] tensor,
loaded with weights_only=True). All slides of a patient are concatenated in table order. The
optional in-memory cache makes every epoch after the first free of disk I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import h5py
import numpy as np
import torch

from bench.errors import BenchError

from .layout import slide_stem


class FeatureStore:
    """Reads and validates bags from one cohort's feature folder."""

    def __init__(self, folder: Path, dim: int = 1024, cache: bool = True):
        self.folder = Path(folder)
        self.dim = dim
        self.cache = cache
        self._bags: dict[str, np.ndarray] = {}

    def slide_path(self, slide_id: str) -> Path | None:
        """The slide's feature file (h5 preferred), or None when neither exists."""
        stem = slide_stem(slide_id)
        for sub, ext in (("h5_files", ".h5"), ("pt_files", ".pt")):
            p = self.folder / sub / f"{stem}{ext}"
            if p.is_file():
                return p
        return None

    def missing_slides(self, slides: Iterable[str]) -> list[str]:
        return [s for s in slides if self.slide_path(s) is None]

    def _read_slide(self, slide_id: str, case_id: str) -> np.ndarray:
        path = self.slide_path(slide_id)
        if path is None:
            raise BenchError(
                f"no feature file for slide {slide_id} of patient {case_id}: looked for h5_files/{slide_stem(slide_id)}.h5 "
                f"and pt_files/{slide_stem(slide_id)}.pt under {self.folder}. Extract it with CLAM, or pass "
                "--on-missing skip to drop patients whose slides lack features (they are listed)."
            )
        try:
            if path.suffix == ".h5":
                with h5py.File(path, "r") as f:
                    feats = np.asarray(f["features"][:])
            else:
                obj = torch.load(path, map_location="cpu", weights_only=True)
                if not isinstance(obj, torch.Tensor):
                    raise TypeError(f"holds a {type(obj).__name__}, not a tensor")
                feats = obj.numpy()
        except BenchError:
            raise
        except Exception as err:  # h5py/torch raise many types for a damaged file
            raise BenchError(f"feature file {path} (slide {slide_id}, patient {case_id}) cannot be read: {err}. "
                             "It is probably truncated or corrupt; re-extract it with CLAM.") from None
        if feats.ndim != 2 or feats.shape[1] != self.dim:
            raise BenchError(f"feature file {path} (slide {slide_id}, patient {case_id}) has shape {tuple(feats.shape)}; "
                             f"expected [N, {self.dim}]. Use features from the same encoder for every slide "
                             "(CLAM ResNet-50 trunc gives 1024).")
        feats = feats.astype(np.float32, copy=False)
        if not np.isfinite(feats).all():
            raise BenchError(f"feature file {path} (slide {slide_id}, patient {case_id}) contains NaN or inf values. "
                             "Re-extract the slide's features.")
        return feats

    def bag(self, case_id: str, slides: Iterable[str]) -> np.ndarray:
        """All patches of a patient's slides, [N, dim] float32."""
        if case_id in self._bags:
            return self._bags[case_id]
        parts = [self._read_slide(s, case_id) for s in slides]
        bag = np.concatenate(parts, axis=0) if parts else np.zeros((0, self.dim), np.float32)
        if len(bag) == 0:
            raise BenchError(f"patient {case_id} has an empty bag: its slides ({', '.join(slides) or 'none'}) hold no "
                             "patches. Check the tissue segmentation, or drop the patient from the table.")
        if self.cache:
            self._bags[case_id] = bag
        return bag
