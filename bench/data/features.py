"""Slide features as CLAM writes them, gathered into one bag per patient.

`h5_files/<stem>.h5` (dataset `features` [N, D]) or `pt_files/<stem>.pt` (a [N, D] tensor,
loaded with weights_only=True), float32 or float16 (read as float32). D is any encoder's width:
the store takes it from the cohort's first file and holds every later file to it. All slides of a
patient are concatenated in table order.

Memory stays bounded: a fold's bags are read through the store on access (`Bags`), and the only
thing that keeps bags between batches is one byte-limited cache per process (`BagCache`, which keeps what
fits), shared by every cohort's store, so the budget holds however many cohorts a process has loaded.
"""

from __future__ import annotations

import contextlib
import os
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import h5py
import numpy as np
import torch

from bench.errors import BenchError

from .layout import slide_stem

DEFAULT_CACHE_SHARE = 0.25  # the bag cache's default budget: this share of MemAvailable
CACHE_DTYPES = ("float32", "float16")
ENCODER_WIDTHS = "CONCH 512, CLAM ResNet-50 trunc 1024, UNI2-h and GigaPath 1536, Virchow2 2560"


def available_memory() -> int:
    """Bytes the kernel can still hand out (MemAvailable, Linux); elsewhere the free physical pages."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def default_cache_bytes() -> int:
    return int(DEFAULT_CACHE_SHARE * available_memory())


class BagCache:
    """Bags under a byte budget that keeps what fits: a bag is kept while there is room and stays until its cohort
    is released; only bags of another feature folder give way to make room, least recently used first.

    Not an LRU: an epoch reads every bag once in a new order, so an LRU smaller than the cohort evicts each bag
    before its next use (1 hit in 56 bags with a quarter of the cohort cached). An epoch reads no bag twice, so it
    can hit only the bags held at its start, and no policy hits more than it holds; keeping them hits every one of
    them every epoch, so the hit rate is the cache's share of the cohort. Another folder's bags (a cohort that a
    worker process, which never releases, has moved on from) are not protected. A bag larger than the whole
    budget is never kept.
    """

    def __init__(self, max_bytes: int):
        self.max_bytes = int(max_bytes)
        self.nbytes = 0
        self._bags: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()  # least recently used first
        self._folder_bytes: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._bags)

    def get(self, key: tuple[str, str]) -> np.ndarray | None:
        bag = self._bags.get(key)
        if bag is not None:
            self._bags.move_to_end(key)
        return bag

    def put(self, key: tuple[str, str], bag: np.ndarray) -> None:
        """Keep `bag` if it fits in the room left, or in what other folders' bags would free; else keep nothing."""
        self._drop(key)
        folder = key[0]
        need = self.nbytes + bag.nbytes - self.max_bytes
        if need > self.nbytes - self._folder_bytes.get(folder, 0):
            return
        if need > 0:
            for other in [k for k in self._bags if k[0] != folder]:  # least recently used first
                need -= self._drop(other)
                if need <= 0:
                    break
        self._bags[key] = bag
        self.nbytes += bag.nbytes
        self._folder_bytes[folder] = self._folder_bytes.get(folder, 0) + bag.nbytes

    def _drop(self, key: tuple[str, str]) -> int:
        """Forget one bag; its bytes (0 if it was not held)."""
        bag = self._bags.pop(key, None)
        if bag is None:
            return 0
        self.nbytes -= bag.nbytes
        self._folder_bytes[key[0]] -= bag.nbytes
        return bag.nbytes

    def release(self, folder: str) -> None:
        """Drop every bag of one feature folder (a cohort whose last job has run)."""
        for key in [k for k in self._bags if k[0] == folder]:
            self._drop(key)


_PROCESS_CACHE: BagCache | None = None


def process_cache(max_bytes: int) -> BagCache | None:
    """This process's one bag cache (None for a budget of 0); a new budget starts an empty cache.

    One per process, not per store: a sweep loads every cohort, and per-store caches would each take the budget.
    """
    global _PROCESS_CACHE
    if max_bytes <= 0:
        return None
    if _PROCESS_CACHE is None or _PROCESS_CACHE.max_bytes != max_bytes:
        _PROCESS_CACHE = BagCache(max_bytes)
    return _PROCESS_CACHE


class FeatureStore:
    """Reads and validates bags from one cohort's feature folder.

    `dim` None takes the width from the first file read. `dtype` float16 holds bags in half precision
    (half the cache) and hands them out as float32: every bag is rounded, cached or not, so the cache's
    size never changes a result.
    """

    def __init__(self, folder: Path, dim: int | None = None, cache: BagCache | None = None, dtype: str = "float32"):
        if dtype not in CACHE_DTYPES:
            raise BenchError(f"bag precision {dtype!r} is not one of {', '.join(CACHE_DTYPES)}.")
        self.folder = Path(folder)
        self.dim = dim
        self._dim_from = "the width asked for" if dim is not None else ""
        self.cache = cache
        self.dtype = np.dtype(dtype)
        self.sizes: dict[str, int] = {}  # patches per patient, from the file headers (`index`)
        self.stored_bytes: dict[str, int] = {}  # bytes of features on disk per slide, in the file's own dtype

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

    def _path(self, slide_id: str, case_id: str) -> Path:
        path = self.slide_path(slide_id)
        if path is None:
            raise BenchError(
                f"no feature file for slide {slide_id} of patient {case_id}: looked for h5_files/{slide_stem(slide_id)}.h5 "
                f"and pt_files/{slide_stem(slide_id)}.pt under {self.folder}. Extract it with CLAM, or pass "
                "--on-missing skip to drop patients whose slides lack features (they are listed)."
            )
        return path

    def _check(self, path: Path, shape: tuple, dtype, slide_id: str, case_id: str) -> None:
        """Shape [N, D] with the cohort's D, and features stored as float32 or float16."""
        where = f"feature file {path} (slide {slide_id}, patient {case_id})"
        if len(shape) != 2:
            raise BenchError(f"{where} has shape {tuple(shape)}; expected [N, D], one row per patch. Re-extract it with CLAM.")
        if self.dim is None:
            self.dim, self._dim_from = int(shape[1]), f"the width of the cohort's first file read, {path}"
        if shape[1] != self.dim:
            raise BenchError(f"{where} has shape {tuple(shape)}; expected [N, {self.dim}], {self._dim_from}. Every slide "
                             f"of a cohort needs features from the same encoder ({ENCODER_WIDTHS}): re-extract the "
                             "slides whose width differs.")
        name = str(dtype).replace("torch.", "")  # numpy, h5py and torch dtypes alike: float32, int64, ...
        if name not in ("float32", "float16", "bfloat16"):
            hint = ("Integers are not encoder outputs: check that its `features` dataset holds the embeddings, not the "
                    "patch coordinates" if name.startswith(("int", "uint", "bool")) else
                    "Convert it to float32 (or float16, half the disk) when writing it, e.g. features.astype('float32')")
            raise BenchError(f"{where} stores {name} features; the suite reads float32 or float16 (read as float32). {hint}.")

    def n_patches(self, slide_id: str, case_id: str) -> int:
        """Patches in one slide's feature file from its header (h5) or a memory-mapped load (pt); checks width and dtype."""
        path = self._path(slide_id, case_id)
        try:
            if path.suffix == ".h5":
                with h5py.File(path, "r") as f:
                    shape, dtype = f["features"].shape, f["features"].dtype
            else:
                t = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
                if not isinstance(t, torch.Tensor):
                    raise TypeError(f"holds a {type(t).__name__}, not a tensor")
                shape, dtype = tuple(t.shape), t.dtype
        except Exception as err:  # h5py/torch raise many types for a damaged file
            raise BenchError(f"feature file {path} (slide {slide_id}, patient {case_id}) cannot be read: {err}. "
                             "It is probably truncated or corrupt; re-extract it with CLAM.") from None
        self._check(path, shape, dtype, slide_id, case_id)
        self.stored_bytes[slide_id] = int(shape[0]) * int(shape[1]) * dtype.itemsize
        return int(shape[0])

    def index(self, patients: Mapping[str, Sequence[str]]) -> dict[str, int]:
        """Patches per patient from the file headers alone: every file's width and dtype are checked before
        any training, and batches can be cut by size without reading a bag."""
        out = {}
        for case, slides in patients.items():
            out[case] = self.sizes[case] = sum(self.n_patches(s, case) for s in slides)
            if out[case] == 0:
                raise BenchError(f"patient {case} has an empty bag: its slides ({', '.join(slides) or 'none'}) hold no "
                                 f"patches in {self.folder}. Check the tissue segmentation, or drop the patient from the table.")
        return out

    def _open(self, slide_id: str, case_id: str, files: contextlib.ExitStack):
        """(path, features) of one slide: an open h5py dataset (read later, into place) or a loaded tensor."""
        path = self._path(slide_id, case_id)
        try:
            if path.suffix == ".h5":
                feats = files.enter_context(h5py.File(path, "r"))["features"]
            else:
                feats = torch.load(path, map_location="cpu", weights_only=True)
                if not isinstance(feats, torch.Tensor):
                    raise TypeError(f"holds a {type(feats).__name__}, not a tensor")
        except Exception as err:  # h5py/torch raise many types for a damaged file
            raise BenchError(f"feature file {path} (slide {slide_id}, patient {case_id}) cannot be read: {err}. "
                             "It is probably truncated or corrupt; re-extract it with CLAM.") from None
        self._check(path, feats.shape, feats.dtype, slide_id, case_id)
        return path, feats

    def _read_bag(self, case_id: str, slides: list[str]) -> np.ndarray:
        """A patient's slides read into one array of the holding dtype, allocated once from the headers.

        h5 features go straight into place (`read_direct`); a stored dtype other than the holding one is
        read into a reused buffer and cast by torch (vectorised; numpy's float16 cast is several times
        slower than the disk). No per-slide arrays and no concatenation: a cold read runs near the disk's rate.
        """
        with contextlib.ExitStack() as files:
            sources = [(s, *self._open(s, case_id, files)) for s in slides]
            out = np.empty((sum(int(f.shape[0]) for _, _, f in sources), self.dim or 0), self.dtype)
            buffer: np.ndarray | None = None
            start = 0
            for slide, path, feats in sources:
                rows = out[start : start + int(feats.shape[0])]
                if isinstance(feats, torch.Tensor):
                    torch.from_numpy(rows).copy_(feats)
                elif feats.dtype == out.dtype:
                    feats.read_direct(rows)
                else:
                    if buffer is None or buffer.dtype != feats.dtype or len(buffer) < len(rows):
                        buffer = np.empty((max(int(f.shape[0]) for *_, f in sources), out.shape[1]), feats.dtype)
                    feats.read_direct(buffer[: len(rows)])
                    torch.from_numpy(rows).copy_(torch.from_numpy(buffer[: len(rows)]))
                if not np.isfinite(rows).all():
                    raise BenchError(f"feature file {path} (slide {slide}, patient {case_id}) contains NaN or inf "
                                     "values. Re-extract the slide's features.")
                start += len(rows)
        return out

    def bag(self, case_id: str, slides: Iterable[str]) -> np.ndarray:
        """All patches of a patient's slides, [N, dim] float32 (a cached bag is shared: do not modify it)."""
        key = (str(self.folder), case_id)
        held = None if self.cache is None else self.cache.get(key)
        if held is None:
            slides = list(slides)
            held = self._read_bag(case_id, slides)
            if len(held) == 0:
                raise BenchError(f"patient {case_id} has an empty bag: its slides ({', '.join(slides) or 'none'}) hold no "
                                 "patches. Check the tissue segmentation, or drop the patient from the table.")
            if self.cache is not None:
                self.cache.put(key, held)
        return held.astype(np.float32, copy=False)

    def bag_bytes(self, case_id: str) -> int:
        """What a patient's bag takes in the cache (after `index`)."""
        return self.sizes[case_id] * self.dim * self.dtype.itemsize

    def release(self) -> None:
        """Drop this cohort's bags from the process's cache."""
        if self.cache is not None:
            self.cache.release(str(self.folder))

    def bags(self, case_ids: Sequence[str], slides: Sequence[Sequence[str]]) -> "Bags":
        return Bags(self, list(case_ids), list(slides))


class Bags(Sequence):
    """A patient set's bags, read through the store on access: between batches only the cache holds bags."""

    def __init__(self, store: FeatureStore, case_ids: list[str], slides: list[Sequence[str]]):
        self.store, self.case_ids, self.slides = store, case_ids, slides

    def __len__(self) -> int:
        return len(self.case_ids)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.store.bag(self.case_ids[i], self.slides[i])

    def sizes(self) -> np.ndarray:
        """Patches per bag from the file headers, without reading a bag."""
        missing = {c: s for c, s in zip(self.case_ids, self.slides) if c not in self.store.sizes}
        self.store.index(missing)
        return np.array([self.store.sizes[c] for c in self.case_ids], dtype=np.int64)

    def take(self, idx: Iterable[int]) -> "Bags":
        idx = list(idx)
        return Bags(self.store, [self.case_ids[i] for i in idx], [self.slides[i] for i in idx])
