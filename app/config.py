"""Settings: read from the environment (and a ``.env`` file) once, then passed in.

Nothing reads the environment at import time; ``create_app(settings)`` and the CLI call
:meth:`Settings.from_env` once and hand the frozen struct down. Tests build their own.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal

import msgspec
from dotenv import dotenv_values

__all__ = ["Settings", "SettingsError"]

# Each port's adapters: the embedded one first (the default), then the production one.
MemoryStoreKind = Literal["sqlite", "firestore"]
VectorIndexKind = Literal["numpy", "pinecone"]
BlobStoreKind = Literal["file", "gcs"]
LanguageModelKind = Literal["rules", "openai"]
EmbedderKind = Literal["minilm", "openai"]
SpeechToTextKind = Literal["whisper", "deepgram"]
PositiveSeconds = Annotated[float, msgspec.Meta(gt=0)]


class SettingsError(ValueError):
    """A setting has a value the server cannot use."""


class Settings(msgspec.Struct, kw_only=True, frozen=True):
    """Every setting of the server; the README lists each with its environment variable."""

    data_dir: Path = Path("data")
    host: str = "127.0.0.1"
    port: int = 8000
    log_level: str = "info"
    redis_url: str | None = None
    admin_key: str | None = None
    firebase_project_id: str | None = None
    memory_store: MemoryStoreKind = "sqlite"
    vector_index: VectorIndexKind = "numpy"
    blob_store: BlobStoreKind = "file"
    language_model: LanguageModelKind = "rules"
    embedder: EmbedderKind = "minilm"
    max_body_bytes: int = 10 * 1024 * 1024
    plugin_timeout: float = 10.0
    inference_threads: int = 2
    webhook_allow_private: bool = False
    webhook_connect_timeout: float = 2.0
    webhook_read_timeout: float = 15.0
    integrations_api_key: str | None = None
    plugins_catalogue: str | None = None
    plugins_blocked: str = ""
    web_secret: str | None = None
    web_secure_cookies: bool = False
    web_session_days: Annotated[float, msgspec.Meta(gt=0, le=366)] = 14.0
    stt: SpeechToTextKind = "whisper"
    deepgram_api_key: str | None = None
    deepgram_url: str | None = None
    whisper_workers: Annotated[int, msgspec.Meta(ge=1, le=64)] = 1
    memory_silence_seconds: PositiveSeconds = 120.0
    listen_ping_seconds: PositiveSeconds = 30.0
    listen_idle_seconds: PositiveSeconds = 120.0
    http_header_timeout: PositiveSeconds = 10.0
    http_stall_timeout: PositiveSeconds = 30.0
    redis_prefix: str = ""
    firestore_project: str | None = None
    firestore_database: str = "(default)"
    pinecone_api_key: str | None = None
    pinecone_host: str | None = None
    pinecone_namespace: str = ""
    gcs_bucket: str | None = None
    gcs_prefix: str = ""
    openai_api_key: str | None = None
    openai_base_url: str | None = None
    openai_model: str = "gpt-4o-mini"
    openai_embedding_model: str = "text-embedding-3-small"
    openai_embedding_dimensions: Annotated[int, msgspec.Meta(ge=1)] | None = None
    backend_timeout: PositiveSeconds = 30.0
    backend_retries: Annotated[int, msgspec.Meta(ge=0, le=10)] = 2

    def __post_init__(self) -> None:
        problems = []
        for choice, needed in _required(self).items():
            if absent := [name for name, value in needed.items() if not value]:
                problems.append(f"{choice} needs {' and '.join(absent)}")
        if problems:
            raise SettingsError("; ".join(problems))

    @property
    def firestore_project_id(self) -> str | None:
        """The Firestore project: ``OMI_FIRESTORE_PROJECT``, else ``FIREBASE_PROJECT_ID``."""
        return self.firestore_project or self.firebase_project_id

    @property
    def blocked_plugins(self) -> frozenset[str]:
        """The plugin names never to load (``OMI_PLUGINS_BLOCKED``, comma-separated)."""
        return frozenset(name.strip() for name in self.plugins_blocked.split(",") if name.strip())

    @property
    def key_value(self) -> Literal["sqlite", "redis"]:
        """The KeyValue adapter: Redis when ``REDIS_URL`` is set, else the embedded SQLite one."""
        return "redis" if self.redis_url else "sqlite"

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, env_file: Path | None = Path(".env")
    ) -> Settings:
        """Settings from ``environ`` (default ``os.environ``) over the values in ``env_file``."""
        values: dict[str, str] = {}
        if env_file is not None and env_file.is_file():
            values.update({k: v for k, v in dotenv_values(env_file).items() if v is not None})
        values.update(os.environ if environ is None else environ)
        raw: dict[str, object] = {}
        for field, name in _ENV_NAMES.items():
            value = values.get(name)
            if value is not None and value != "":
                raw[field] = value
        try:
            return msgspec.convert(raw, cls, strict=False, dec_hook=_decode)
        except msgspec.ValidationError as exc:
            raise SettingsError(_explain(str(exc))) from exc


_ENV_NAMES: dict[str, str] = {
    "data_dir": "OMI_DATA_DIR",
    "host": "OMI_HOST",
    "port": "OMI_PORT",
    "log_level": "OMI_LOG_LEVEL",
    "redis_url": "REDIS_URL",
    "admin_key": "ADMIN_KEY",
    "firebase_project_id": "FIREBASE_PROJECT_ID",
    "memory_store": "OMI_MEMORY_STORE",
    "vector_index": "OMI_VECTOR_INDEX",
    "blob_store": "OMI_BLOB_STORE",
    "language_model": "OMI_LANGUAGE_MODEL",
    "embedder": "OMI_EMBEDDER",
    "max_body_bytes": "OMI_MAX_BODY_BYTES",
    "plugin_timeout": "OMI_PLUGIN_TIMEOUT",
    "inference_threads": "OMI_INFERENCE_THREADS",
    "webhook_allow_private": "OMI_WEBHOOK_ALLOW_PRIVATE",
    "webhook_connect_timeout": "OMI_WEBHOOK_CONNECT_TIMEOUT",
    "webhook_read_timeout": "OMI_WEBHOOK_READ_TIMEOUT",
    "integrations_api_key": "OMI_INTEGRATIONS_API_KEY",
    "plugins_catalogue": "OMI_PLUGINS_CATALOGUE",
    "plugins_blocked": "OMI_PLUGINS_BLOCKED",
    "web_secret": "OMI_WEB_SECRET",
    "web_secure_cookies": "OMI_WEB_SECURE_COOKIES",
    "web_session_days": "OMI_WEB_SESSION_DAYS",
    "stt": "OMI_STT",
    "deepgram_api_key": "DEEPGRAM_API_KEY",
    "deepgram_url": "OMI_DEEPGRAM_URL",
    "whisper_workers": "OMI_WHISPER_WORKERS",
    "memory_silence_seconds": "OMI_MEMORY_SILENCE_SECONDS",
    "listen_ping_seconds": "OMI_LISTEN_PING_SECONDS",
    "listen_idle_seconds": "OMI_LISTEN_IDLE_SECONDS",
    "http_header_timeout": "OMI_HTTP_HEADER_TIMEOUT",
    "http_stall_timeout": "OMI_HTTP_STALL_TIMEOUT",
    "redis_prefix": "OMI_REDIS_PREFIX",
    "firestore_project": "OMI_FIRESTORE_PROJECT",
    "firestore_database": "OMI_FIRESTORE_DATABASE",
    "pinecone_api_key": "PINECONE_API_KEY",
    "pinecone_host": "PINECONE_HOST",
    "pinecone_namespace": "PINECONE_NAMESPACE",
    "gcs_bucket": "OMI_GCS_BUCKET",
    "gcs_prefix": "OMI_GCS_PREFIX",
    "openai_api_key": "OPENAI_API_KEY",
    "openai_base_url": "OPENAI_BASE_URL",
    "openai_model": "OMI_OPENAI_MODEL",
    "openai_embedding_model": "OMI_OPENAI_EMBEDDING_MODEL",
    "openai_embedding_dimensions": "OMI_OPENAI_EMBEDDING_DIMENSIONS",
    "backend_timeout": "OMI_BACKEND_TIMEOUT",
    "backend_retries": "OMI_BACKEND_RETRIES",
}


def _required(settings: Settings) -> dict[str, dict[str, object]]:
    """For each production adapter chosen, the settings it cannot start without (by variable)."""
    needs: dict[str, dict[str, object]] = {}
    if settings.memory_store == "firestore":
        project = settings.firestore_project_id
        needs["OMI_MEMORY_STORE=firestore"] = {"OMI_FIRESTORE_PROJECT (or FIREBASE_PROJECT_ID)": project}
    if settings.vector_index == "pinecone":
        needs["OMI_VECTOR_INDEX=pinecone"] = {
            "PINECONE_API_KEY": settings.pinecone_api_key,
            "PINECONE_HOST": settings.pinecone_host,
        }
    if settings.blob_store == "gcs":
        needs["OMI_BLOB_STORE=gcs"] = {"OMI_GCS_BUCKET": settings.gcs_bucket}
    # An OpenAI-compatible server of your own (OPENAI_BASE_URL) may need no key.
    key = settings.openai_api_key or settings.openai_base_url
    if settings.language_model == "openai":
        needs["OMI_LANGUAGE_MODEL=openai"] = {"OPENAI_API_KEY (or OPENAI_BASE_URL)": key}
    if settings.embedder == "openai":
        needs["OMI_EMBEDDER=openai"] = {"OPENAI_API_KEY (or OPENAI_BASE_URL)": key}
    return needs


def _decode(kind: type, value: object) -> object:
    """Types msgspec does not convert from a string by itself (``Path``)."""
    if kind is Path and isinstance(value, str):
        return Path(value)
    raise NotImplementedError(f"no conversion to {kind}")


def _explain(message: str) -> str:
    """Name the environment variable in a validation message such as ``... - at `$.port```."""
    for field, name in _ENV_NAMES.items():
        message = message.replace(f"`$.{field}`", name)
    return f"invalid setting: {message}"
