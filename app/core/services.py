"""The adapters of one running server, chosen once by ``create_app`` and passed around together."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable
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
        """Close every adapter, even when one of them fails to close.

        The Embedder and LanguageModel ports have no ``close``: an adapter of theirs that holds
        connections (OpenAI's) has an async one, called here; the embedded ones hold a model
        that may be shared with other apps, left to whoever made it.
        """
        results = await asyncio.gather(
            self.store.close(),
            self.index.close(),
            self.blobs.close(),
            self.kv.close(),
            self.stt.close(),
            *_async_close(self.embedder),
            *_async_close(self.llm),
            return_exceptions=True,
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result


def _async_close(adapter: object) -> list[Awaitable[None]]:
    close = getattr(adapter, "close", None)
    return [close()] if close is not None and inspect.iscoroutinefunction(close) else []
