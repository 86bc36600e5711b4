"""Settings choose each port's adapter, and say clearly what a chosen one is missing."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.backends.firestore_store import FirestoreMemoryStore
from app.backends.gcs_blobs import GCSBlobStore
from app.backends.openai_embedder import OpenAIEmbedder
from app.backends.openai_llm import OpenAILanguageModel
from app.backends.pinecone_index import PineconeVectorIndex
from app.backends.redis_kv import RedisKeyValue
from app.config import Settings, SettingsError
from app.main import build_services
from tests.production import Production

pytestmark = pytest.mark.anyio

PRODUCTION_ENV = {
    "OMI_MEMORY_STORE": "firestore",
    "OMI_FIRESTORE_PROJECT": "acme",
    "OMI_FIRESTORE_DATABASE": "omi",
    "OMI_VECTOR_INDEX": "pinecone",
    "PINECONE_API_KEY": "pc-key",
    "PINECONE_HOST": "https://omi-abc123.svc.us-east1-aws.pinecone.io",
    "PINECONE_NAMESPACE": "prod",
    "OMI_BLOB_STORE": "gcs",
    "OMI_GCS_BUCKET": "acme-omi",
    "OMI_GCS_PREFIX": "omi/",
    "REDIS_URL": "redis://redis.internal:6379/0",
    "OMI_REDIS_PREFIX": "omi:",
    "OMI_LANGUAGE_MODEL": "openai",
    "OMI_EMBEDDER": "openai",
    "OPENAI_API_KEY": "sk-key",
    "OPENAI_BASE_URL": "http://vllm.internal:8000/v1",
    "OMI_OPENAI_MODEL": "qwen2.5-7b-instruct",
    "OMI_OPENAI_EMBEDDING_MODEL": "text-embedding-3-large",
    "OMI_OPENAI_EMBEDDING_DIMENSIONS": "1024",
    "OMI_BACKEND_TIMEOUT": "12.5",
    "OMI_BACKEND_RETRIES": "4",
}


def test_every_production_setting_is_read_from_the_environment() -> None:
    s = Settings.from_env(PRODUCTION_ENV, env_file=None)
    assert (s.memory_store, s.vector_index, s.blob_store, s.language_model, s.embedder) == (
        "firestore",
        "pinecone",
        "gcs",
        "openai",
        "openai",
    )
    assert (s.firestore_project_id, s.firestore_database) == ("acme", "omi")
    assert (s.pinecone_api_key, s.pinecone_host, s.pinecone_namespace) == (
        "pc-key",
        PRODUCTION_ENV["PINECONE_HOST"],
        "prod",
    )
    assert (s.gcs_bucket, s.gcs_prefix, s.redis_url, s.redis_prefix) == (
        "acme-omi",
        "omi/",
        "redis://redis.internal:6379/0",
        "omi:",
    )
    assert (s.openai_api_key, s.openai_base_url, s.openai_model) == (
        "sk-key",
        "http://vllm.internal:8000/v1",
        "qwen2.5-7b-instruct",
    )
    assert (s.openai_embedding_model, s.openai_embedding_dimensions) == ("text-embedding-3-large", 1024)
    assert (s.backend_timeout, s.backend_retries) == (12.5, 4)


def test_the_defaults_are_the_embedded_adapters() -> None:
    s = Settings.from_env({}, env_file=None)
    assert (s.memory_store, s.vector_index, s.blob_store, s.language_model, s.embedder, s.key_value) == (
        "sqlite",
        "numpy",
        "file",
        "rules",
        "minilm",
        "sqlite",
    )


@pytest.mark.parametrize(
    ("choice", "missing"),
    [
        ({"OMI_MEMORY_STORE": "firestore"}, "OMI_FIRESTORE_PROJECT"),
        ({"OMI_VECTOR_INDEX": "pinecone", "PINECONE_HOST": "h"}, "PINECONE_API_KEY"),
        ({"OMI_VECTOR_INDEX": "pinecone", "PINECONE_API_KEY": "k"}, "PINECONE_HOST"),
        ({"OMI_BLOB_STORE": "gcs"}, "OMI_GCS_BUCKET"),
        ({"OMI_LANGUAGE_MODEL": "openai"}, "OPENAI_API_KEY"),
        ({"OMI_EMBEDDER": "openai"}, "OPENAI_API_KEY"),
    ],
)
def test_a_chosen_adapter_without_its_settings_is_refused_by_name(
    choice: dict[str, str], missing: str
) -> None:
    with pytest.raises(SettingsError, match=missing) as caught:
        Settings.from_env(choice, env_file=None)
    assert next(iter(choice)) in str(caught.value)  # which choice needs it


def test_an_openai_compatible_server_needs_no_key_and_firebase_names_the_project() -> None:
    env = {"OMI_EMBEDDER": "openai", "OPENAI_BASE_URL": "http://ollama:11434/v1"}
    env |= {"OMI_MEMORY_STORE": "firestore", "FIREBASE_PROJECT_ID": "acme"}
    s = Settings.from_env(env, env_file=None)
    assert s.openai_api_key is None and s.firestore_project_id == "acme"


@pytest.mark.parametrize(
    ("name", "value"),
    [("OMI_BLOB_STORE", "s3"), ("OMI_OPENAI_EMBEDDING_DIMENSIONS", "0"), ("OMI_BACKEND_RETRIES", "-1")],
)
def test_bad_values_name_their_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: value}, env_file=None)


async def test_build_services_picks_every_production_adapter(production: Production, tmp_path: Path) -> None:
    services = build_services(production.settings(Settings(data_dir=tmp_path)))
    try:
        assert isinstance(services.store, FirestoreMemoryStore)
        assert isinstance(services.index, PineconeVectorIndex)
        assert isinstance(services.blobs, GCSBlobStore)
        assert isinstance(services.kv, RedisKeyValue)
        assert isinstance(services.embedder, OpenAIEmbedder)
        assert isinstance(services.llm, OpenAILanguageModel)
        assert services.embedder.dimension == 256
    finally:
        await services.close()
