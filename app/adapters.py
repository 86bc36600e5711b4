"""One builder per port: the adapter ``Settings`` asks for, embedded or production.

``build_services`` in :mod:`app.main` puts them together for the server; the operations
commands (``doctor``, ``reindex``, ``migrate``) call them one at a time, so that a backend
that cannot even be constructed (no credentials, say) is reported on its own. This module
and ``build_services`` are the only places that branch on the choice. Vendor SDKs are
imported only for the adapter chosen.
"""

from __future__ import annotations

from typing import Any

from app.config import Settings, SettingsError
from app.core.ports import (
    BlobStore,
    Embedder,
    KeyValue,
    LanguageModel,
    MemoryStore,
    SpeechToText,
    VectorIndex,
)

__all__ = [
    "build_blob_store",
    "build_embedder",
    "build_key_value",
    "build_language_model",
    "build_memory_store",
    "build_speech_to_text",
    "build_vector_index",
    "describe",
]

# Sent as the key to an OpenAI-compatible server of your own that wants none (OPENAI_BASE_URL).
_NO_KEY = "none"


def build_memory_store(settings: Settings) -> MemoryStore:
    """``OMI_MEMORY_STORE``: SQLite under the data dir, or Firestore."""
    if settings.memory_store == "firestore":
        from app.backends.firestore_store import FirestoreMemoryStore

        project = settings.firestore_project_id or ""
        return FirestoreMemoryStore(project, settings.firestore_database, timeout=settings.backend_timeout)
    from app.backends.sqlite_store import SQLiteMemoryStore

    return SQLiteMemoryStore(settings.data_dir / "memories.db")


def build_vector_index(settings: Settings) -> VectorIndex:
    """``OMI_VECTOR_INDEX``: NumPy over SQLite under the data dir, or Pinecone by host."""
    if settings.vector_index == "pinecone":
        from app.backends.pinecone_index import PineconeVectorIndex

        return PineconeVectorIndex(
            settings.pinecone_api_key or "",
            settings.pinecone_host or "",
            namespace=settings.pinecone_namespace,
            timeout=settings.backend_timeout,
            tries=settings.backend_retries + 1,
        )
    from app.backends.numpy_index import NumpyVectorIndex

    return NumpyVectorIndex(settings.data_dir / "vectors.db")


def build_blob_store(settings: Settings) -> BlobStore:
    """``OMI_BLOB_STORE``: files under the data dir, or a Cloud Storage bucket."""
    if settings.blob_store == "gcs":
        from app.backends.gcs_blobs import GCSBlobStore

        return GCSBlobStore(
            settings.gcs_bucket or "", prefix=settings.gcs_prefix, timeout=settings.backend_timeout
        )
    from app.backends.file_blobs import FileBlobStore

    return FileBlobStore(settings.data_dir / "blobs")


def build_key_value(settings: Settings) -> KeyValue:
    """``REDIS_URL``: Redis (keys under ``OMI_REDIS_PREFIX``) when set, else SQLite."""
    if settings.redis_url:
        from app.backends.redis_kv import RedisKeyValue

        return RedisKeyValue(settings.redis_url, prefix=settings.redis_prefix)
    from app.backends.sqlite_kv import SQLiteKeyValue

    return SQLiteKeyValue(settings.data_dir / "kv.db")


def build_embedder(settings: Settings) -> Embedder:
    """``OMI_EMBEDDER``: all-MiniLM-L6-v2 on ONNX, or OpenAI embeddings."""
    if settings.embedder == "openai":
        from app.backends.openai_embedder import OpenAIEmbedder

        return OpenAIEmbedder(
            settings.openai_api_key or _NO_KEY,
            base_url=settings.openai_base_url,
            model=settings.openai_embedding_model,
            dimensions=settings.openai_embedding_dimensions,
            timeout=settings.backend_timeout,
            max_retries=settings.backend_retries,
        )
    from app.backends.minilm_embedder import MiniLMEmbedder

    return MiniLMEmbedder(threads=settings.inference_threads)


def build_language_model(settings: Settings, embedder: Embedder) -> LanguageModel:
    """``OMI_LANGUAGE_MODEL``: the rule-based structurer (which uses ``embedder``), or OpenAI."""
    if settings.language_model == "openai":
        from app.backends.openai_llm import OpenAILanguageModel

        return OpenAILanguageModel(
            settings.openai_api_key or _NO_KEY,
            base_url=settings.openai_base_url,
            model=settings.openai_model,
            timeout=settings.backend_timeout,
            max_retries=settings.backend_retries,
        )
    from app.core.structurer import RuleBasedLanguageModel

    return RuleBasedLanguageModel(embedder)


def build_speech_to_text(settings: Settings) -> SpeechToText:
    """The speech-to-text engine (``OMI_STT``): embedded Whisper, or Deepgram live."""
    if settings.stt == "deepgram":
        if not settings.deepgram_api_key:
            raise SettingsError("OMI_STT=deepgram needs DEEPGRAM_API_KEY")
        from app.backends.deepgram_stt import DeepgramSpeechToText

        return DeepgramSpeechToText(settings.deepgram_api_key, _deepgram_environment(settings.deepgram_url))
    from app.backends.whisper_stt import WhisperSpeechToText

    return WhisperSpeechToText(workers=settings.whisper_workers, cpu_threads=settings.inference_threads)


def _deepgram_environment(url: str | None) -> Any:
    """The SDK environment for ``OMI_DEEPGRAM_URL`` (a self-hosted or fake Deepgram), or ``None``."""
    if not url:
        return None
    from deepgram import DeepgramClientEnvironment

    base = url.rstrip("/")
    http = base.replace("wss://", "https://", 1).replace("ws://", "http://", 1)
    ws = http.replace("https://", "wss://", 1).replace("http://", "ws://", 1)
    return DeepgramClientEnvironment(base=http, production=ws, agent=ws, agent_rest=http)


def describe(settings: Settings) -> dict[str, str]:
    """Each port's adapter and where it points, in words (no secrets), for logs and ``doctor``."""
    openai_at = settings.openai_base_url or "api.openai.com"
    return {
        "store": (
            f"firestore (project {settings.firestore_project_id}, database {settings.firestore_database})"
            if settings.memory_store == "firestore"
            else f"sqlite ({settings.data_dir / 'memories.db'})"
        ),
        "index": (
            f"pinecone ({settings.pinecone_host}, namespace {settings.pinecone_namespace or '(default)'})"
            if settings.vector_index == "pinecone"
            else f"numpy ({settings.data_dir / 'vectors.db'})"
        ),
        "blobs": (
            f"gcs (gs://{settings.gcs_bucket}/{settings.gcs_prefix})"
            if settings.blob_store == "gcs"
            else f"file ({settings.data_dir / 'blobs'})"
        ),
        "kv": (
            f"redis ({_without_password(settings.redis_url)})"
            if settings.redis_url
            else f"sqlite ({settings.data_dir / 'kv.db'})"
        ),
        "embedder": (
            f"openai ({settings.openai_embedding_model} at {openai_at})"
            if settings.embedder == "openai"
            else "minilm (all-MiniLM-L6-v2, int8 ONNX)"
        ),
        "llm": (
            f"openai ({settings.openai_model} at {openai_at})"
            if settings.language_model == "openai"
            else "rules (the embedded structurer)"
        ),
        "stt": (
            f"deepgram ({settings.deepgram_url or 'api.deepgram.com'})"
            if settings.stt == "deepgram"
            else "whisper (faster-whisper tiny.en)"
        ),
    }


def _without_password(url: str) -> str:
    """``redis://:secret@host/0`` as ``redis://***@host/0``."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    return f"{scheme}://***@{rest.rpartition('@')[2]}"
