"""The adapters of one running server, chosen once by ``create_app`` and passed around together."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from app.core.ports import (
    BlobStore,
    Embedder,
    KeyValue,
    LanguageModel,
    MemoryStore,
    SpeechToText,
    VectorIndex,
)

__all__ = ["Services"]


@dataclass(frozen=True, slots=True)
class Services:
    """One adapter per port."""

    store: MemoryStore
    index: VectorIndex
    blobs: BlobStore
    kv: KeyValue
    embedder: Embedder
    llm: LanguageModel
    stt: SpeechToText

    async def close(self) -> None:
        """Close every adapter, even when one of them fails to close."""
        results = await asyncio.gather(
            self.store.close(),
            self.index.close(),
            self.blobs.close(),
            self.kv.close(),
            self.stt.close(),
            return_exceptions=True,
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result
