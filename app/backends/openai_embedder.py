"""The production :class:`~app.core.ports.Embedder`: OpenAI embeddings.

Any OpenAI-compatible server works through ``base_url``. Vectors are asked for as
``base64`` (little-endian float32, half the bytes of JSON floats) and decoded with NumPy;
a server that answers with float arrays anyway is understood too. Rows are L2-normalised
float32.

The dimension is, in this order: ``dimensions`` when given (the v3 models shorten their
vectors to it); the model's known dimension (``KNOWN_DIMENSIONS``); otherwise it is learnt
from the first reply. ``dimension`` cannot make a request (it is a property, read on the
event loop), so for a model outside the table call ``await embedder.probe()`` once at
start-up (it embeds one short text) before reading it; ``embed`` learns it too.

Texts go in batches of at most ``batch_size`` (and about 400,000 characters, to stay
under the API's per-request token limit); each text is cut at 20,000 characters (about
5,000 tokens of English, inside the 8,192-token input limit) and an empty one is sent as
a space, which the API accepts where it rejects an empty string.

Failures: timeouts, connection errors, 429 and 5xx are retried by the SDK itself
(``max_retries``, exponential backoff, ``Retry-After`` honoured); what still fails, any
other API error, and a reply that does not fit (wrong count or dimension) is raised as
:class:`~app.core.errors.BackendUnavailable`.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import openai

from app.core.errors import BackendUnavailable

__all__ = ["KNOWN_DIMENSIONS", "OpenAIEmbedder"]

BACKEND = "openai"
KNOWN_DIMENSIONS = {
    "text-embedding-3-small": 1536,
    "text-embedding-3-large": 3072,
    "text-embedding-ada-002": 1536,
}
MAX_TEXT_CHARS = 20_000
MAX_BATCH_CHARS = 400_000
MAX_BATCH_SIZE = 2048  # the API's limit on inputs per request


def _row(raw: object) -> npt.NDArray[np.float32]:
    if isinstance(raw, str):
        return np.frombuffer(base64.b64decode(raw), dtype="<f4").astype(np.float32)
    return np.asarray(raw, dtype=np.float32)


class OpenAIEmbedder:
    """``Embedder`` on OpenAI's embeddings endpoint (or a compatible server).

    Args:
        api_key: The API key.
        base_url: Another OpenAI-compatible server, e.g. ``http://localhost:8000/v1``.
        model: The embedding model.
        dimensions: Shorten vectors to this many dimensions (``text-embedding-3-*`` only).
        batch_size: Most texts per request (at most 2048).
        timeout: Seconds one HTTP attempt may take.
        max_retries: Retries the SDK makes after a transient failure.
    """

    def __init__(
        self,
        api_key: str,
        base_url: str | None = None,
        model: str = "text-embedding-3-small",
        dimensions: int | None = None,
        batch_size: int = 256,
        *,
        timeout: float = 30,
        max_retries: int = 3,
    ) -> None:
        if dimensions is not None and dimensions < 1:
            raise ValueError("dimensions must be positive")
        self._client = openai.AsyncOpenAI(
            api_key=api_key, base_url=base_url, timeout=timeout, max_retries=max_retries
        )
        self._model = model
        self._dimensions = dimensions
        self._dimension = dimensions or KNOWN_DIMENSIONS.get(model)
        self._batch_size = max(1, min(batch_size, MAX_BATCH_SIZE))

    @property
    def dimension(self) -> int:
        """The length of every vector (raises ``RuntimeError`` for an unknown model not yet probed)."""
        if self._dimension is None:
            raise RuntimeError(f"the dimension of {self._model!r} is not known yet: await probe() first")
        return self._dimension

    async def probe(self) -> int:
        """The dimension, learnt by embedding one short text when the model is not in the table."""
        if self._dimension is None:
            await self._request(["dimension probe"])
        return self.dimension

    async def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """One L2-normalised row per text, shape ``(len(texts), dimension)``."""
        if not texts:
            return np.zeros((0, await self.probe()), dtype=np.float32)
        matrix = np.concatenate([await self._request(batch) for batch in self._batches(texts)])
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        norms[norms == 0] = 1
        unit: npt.NDArray[np.float32] = (matrix / norms).astype(np.float32, copy=False)
        return unit

    async def close(self) -> None:
        """Close the SDK's connection pool."""
        await self._client.close()

    def _batches(self, texts: Sequence[str]) -> list[list[str]]:
        batches: list[list[str]] = [[]]
        size = 0
        for text in texts:
            text = text[:MAX_TEXT_CHARS] or " "
            if batches[-1] and (len(batches[-1]) == self._batch_size or size + len(text) > MAX_BATCH_CHARS):
                batches.append([])
                size = 0
            batches[-1].append(text)
            size += len(text)
        return batches

    async def _request(self, batch: list[str]) -> npt.NDArray[np.float32]:
        """The raw rows for one batch, in input order; learns the dimension on first use."""
        try:
            response = await self._client.embeddings.create(
                input=batch,
                model=self._model,
                encoding_format="base64",
                dimensions=openai.omit if self._dimensions is None else self._dimensions,
            )
        except openai.APIError as exc:
            raise BackendUnavailable(BACKEND, exc) from exc
        rows = [_row(item.embedding) for item in sorted(response.data, key=lambda item: item.index)]
        if len(rows) != len(batch):
            raise BackendUnavailable(BACKEND, f"asked for {len(batch)} embeddings, got {len(rows)}")
        expected = self._dimension or rows[0].size
        if any(row.size != expected for row in rows) or expected == 0:
            raise BackendUnavailable(BACKEND, f"{self._model} returned vectors not of dimension {expected}")
        self._dimension = expected
        return np.stack(rows)
