"""Errors the domain shares with every adapter.

Adapters raise these instead of their SDK's exceptions, so the pipeline and the API never
import a vendor SDK to tell "the service is down" from a bug.
"""

from __future__ import annotations

__all__ = ["BackendUnavailable", "StorageFull"]


class BackendUnavailable(RuntimeError):
    """An outside service could not serve a request, even after the adapter's retries.

    The API answers it with a 503; the pipeline treats it as a failure to retry later,
    never as an empty result.

    Args:
        backend: Which service failed, e.g. ``"pinecone"`` or ``"openai"``.
        cause: The last error (kept as ``cause`` and chained by ``raise ... from``), or a
            description when there is no exception to keep.

    Attributes:
        backend: The service's name.
        cause: The last underlying exception, or ``None``.
        detail: A one-line description of what went wrong.
    """

    def __init__(self, backend: str, cause: BaseException | str) -> None:
        if isinstance(cause, BaseException):
            text = str(cause).strip()
            detail = f"{type(cause).__name__}: {text}" if text else type(cause).__name__
            self.cause: BaseException | None = cause
        else:
            detail, self.cause = cause, None
        super().__init__(f"{backend} is unavailable: {detail}")
        self.backend = backend
        self.detail = detail

    def __reduce__(self) -> tuple[type[BackendUnavailable], tuple[str, str]]:
        # The default would call cls(message) and lose ``backend``; keep both (not the cause).
        return type(self), (self.backend, self.detail)


class StorageFull(RuntimeError):
    """The server's own storage (the data directory's disk) has no room for a write.

    The embedded adapters raise it instead of ``sqlite3``'s "database or disk is full" or
    an ``OSError`` with ``ENOSPC``, ``EDQUOT`` or ``EFBIG`` (a file-size limit), and before
    a write that would leave less than their reserve free. Nothing of the refused write was
    kept. The API answers it with a 507 (a ``/listen`` session with a close code); reads go
    on working, and writes work again as soon as there is room, without a restart.

    Args:
        store: Which store refused the write, e.g. ``"memories.db"`` or ``"blobs"``.
        detail: What happened, for the log.

    Attributes:
        store: The store's name.
        detail: The description.
    """

    def __init__(self, store: str, detail: str) -> None:
        super().__init__(f"{store}: no room to write ({detail})")
        self.store = store
        self.detail = detail

    def __reduce__(self) -> tuple[type[StorageFull], tuple[str, str]]:
        return type(self), (self.store, self.detail)
