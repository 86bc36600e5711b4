"""The ``omi_webhooks`` plugin: Omi catalogue entries with an external integration, called.

For each catalogue entry (``context.extras["catalogue"].omi_entries()``) with the
``external_integration`` capability:

- ``triggers_on: memory_creation``: after a kept memory is stored, ``POST
  {webhook_url}?uid=<uid>`` with the Memory JSON, for users who enabled the entry. The
  first attempt runs inline, bounded by the read timeout; a failure goes to the durable
  retry queue (:mod:`.state`), retried on :data:`SCHEDULE` by a background task.
- ``triggers_on: transcript_processed``: after each final transcript result, ``POST
  {webhook_url}?uid=<uid>`` with ``{"session_id", "segments"}``, fire-and-forget, once.

Every attempt is signed (:mod:`.signing`), logged (:func:`.state.read_deliveries`) and
passes a per-target circuit breaker (:mod:`.breaker`). A ``200`` reply ``{"message": ...}``
longer than 5 characters becomes a Message from that entry; a ``410`` disables the entry
for that user. URLs resolving to private addresses are refused unless
``OMI_WEBHOOK_ALLOW_PRIVATE`` is set.

Each user sees the delivery log of an entry at ``/plugins/{id}/deliveries`` (:mod:`.pages`,
a page this plugin adds to the web app), where a delivery still waiting for a retry, or
given up, can be sent again at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime
from importlib.resources.abc import Traversable
from typing import Any, TypeVar

import httpx
import msgspec

from app.core.errors import BackendUnavailable
from app.core.holding import held
from app.core.models import Memory, Message, TranscriptSegment
from app.core.netguard import check_public_url
from app.core.pinned_transport import PinnedTransport
from app.core.ports import KeyValue
from app.plugins import PluginContext, PluginInfo, TranscriptSession, hookimpl
from builtin_plugins.omi_webhooks.breaker import CircuitBreaker
from builtin_plugins.omi_webhooks.pages import TEMPLATES, deliveries_pages
from builtin_plugins.omi_webhooks.sender import Outcome, send_signed
from builtin_plugins.omi_webhooks.signing import webhook_secret
from builtin_plugins.omi_webhooks.state import (
    CLAIM_PREFIX,
    QUEUE_KEY,
    DeliveryRecord,
    Event,
    QueuedDelivery,
    append_delivery,
    disable_for_user,
    give_up,
    memory_webhook_id,
    requeue,
)
from builtin_plugins.omi_webhooks.targets import Target, breaker_key, webhook_targets, with_uid

__all__ = ["SCHEDULE", "OmiWebhooks"]

log = logging.getLogger("omi_backend.plugins.omi_webhooks")

SCHEDULE: tuple[float, ...] = (0.0, 5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0)
"""Seconds before each attempt of a memory-created delivery, counted from the previous failure."""

RECORD_HOLD_SECONDS = 20.0
"""How long an attempt's outcome waits for the KeyValue port (Redis restarting) to be recorded
in the queue: a delivered webhook left in the queue would be sent again. Shorter than the
claim's lifetime after an attempt, so no other process takes the delivery meanwhile."""

_T = TypeVar("_T")


class OmiWebhooks:
    """The plugin object; the server makes one per app (entry point ``omi_webhooks``).

    Everything defaults to what the context gives at start-up; tests set the attributes
    before the app starts.

    Attributes:
        clock: Unix seconds now; drives the retry schedule and the breaker (the signature's
            timestamp, messages and the log use the wall clock).
        catalogue: Overrides ``context.extras["catalogue"]``.
        is_enabled: Overrides ``context.is_enabled``.
        connect_timeout: Overrides ``OMI_WEBHOOK_CONNECT_TIMEOUT`` (seconds).
        read_timeout: Overrides ``OMI_WEBHOOK_READ_TIMEOUT`` (seconds).
        poll_interval: Most seconds the retry task sleeps between two looks at the queue.
        max_transcript_tasks: Transcript deliveries in flight at once; more are dropped.
        breaker: The per-target circuit breaker.
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        breaker_threshold: int = 5,
        breaker_cooldown: float = 60.0,
        poll_interval: float = 30.0,
        max_transcript_tasks: int = 64,
        max_parallel_retries: int = 8,
    ) -> None:
        self.clock = clock
        self.catalogue: Any = None
        self.is_enabled: Callable[[str, str], Awaitable[bool]] | None = None
        self.connect_timeout: float | None = None
        self.read_timeout: float | None = None
        self.poll_interval = poll_interval
        self.max_transcript_tasks = max_transcript_tasks
        self.breaker = CircuitBreaker(
            lambda: self.clock(), threshold=breaker_threshold, cooldown=breaker_cooldown
        )
        self._max_parallel = max_parallel_retries
        self._context: PluginContext | None = None
        self._client: httpx.AsyncClient | None = None
        self._worker: asyncio.Task[None] | None = None
        self._inflight: set[str] = set()
        self._secrets: dict[str, str] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._transcripts: set[asyncio.Task[Any]] = set()
        self._inline_budget = 15.0
        self._claim_ttl = 60.0

    # -- hooks -------------------------------------------------------------------------------

    @hookimpl
    def plugin_info(self) -> PluginInfo:
        return PluginInfo(
            name="Omi webhooks",
            author="omi-backend",
            description="Calls the plugin servers of Omi catalogue entries with an external integration.",
            capabilities=("external_integration",),
            always_on=True,  # it checks, per catalogue entry, whether the user enabled that entry
        )

    @hookimpl
    async def on_startup(self, context: PluginContext) -> None:
        self._context = context
        self._parallel = asyncio.Semaphore(self._max_parallel)
        self._wake = asyncio.Event()
        self._pass_lock = asyncio.Lock()
        settings = context.settings
        if self.catalogue is None:
            self.catalogue = context.extras.get("catalogue")
        if self.is_enabled is None:
            self.is_enabled = context.is_enabled
        connect = self.connect_timeout or settings.webhook_connect_timeout
        read = self.read_timeout or settings.webhook_read_timeout
        # Within the host's own timeout, so the host never cancels a slow inline attempt.
        self._inline_budget = min(read, 0.8 * settings.plugin_timeout)
        self._claim_ttl = connect + read + 30.0
        if settings.redis_url is None:  # the embedded KeyValue is this process's alone:
            await self._drop_stale_claims(context.kv)  # its claims are a killed run's
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(read, connect=connect),
            follow_redirects=False,
            transport=PinnedTransport(allow_private=settings.webhook_allow_private),
        )
        self._worker = asyncio.create_task(self._retry_loop(), name="omi_webhooks retries")

    @hookimpl
    async def on_shutdown(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
            self._worker = None
        pending = self._tasks | self._transcripts
        for task in pending:  # queued deliveries stay in the queue for the next start
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    @hookimpl
    async def on_memory_created(self, uid: str, memory: Memory) -> list[Message] | None:
        if memory.discarded or self._context is None:
            return None
        targets = await webhook_targets(self.catalogue, "memory_creation")
        targets = [t for t in targets if await self._enabled(t.plugin_id, uid)]
        if not targets:
            return None
        body = msgspec.json.encode(memory).decode()
        tasks: list[asyncio.Task[Message | None]] = []
        for target in targets:
            queued = await self._enqueue(target, uid, body, memory.id)
            if queued is not None:  # else already queued (announced again after a crash)
                tasks.append(self._spawn(self._attempt(*queued)))
        if not tasks:
            return None
        done: set[asyncio.Task[Message | None]] = set()
        try:
            done, _ = await asyncio.wait(tasks, timeout=self._inline_budget)
        finally:  # answers that come later (or after a cancellation) are stored when they come
            for task in tasks:
                if task not in done:
                    task.add_done_callback(functools.partial(self._store_late, uid))
        return [m for task in tasks if task in done and (m := task.result()) is not None] or None

    @hookimpl
    async def on_transcript(self, session: TranscriptSession, segments: list[TranscriptSegment]) -> None:
        if self._context is None:
            return
        targets = await webhook_targets(self.catalogue, "transcript_processed")
        targets = [t for t in targets if await self._enabled(t.plugin_id, session.uid)]
        if not targets:
            return
        body = msgspec.json.encode({"session_id": session.id, "segments": segments}).decode()
        for target in targets:
            if len(self._transcripts) >= self.max_transcript_tasks:
                log.warning("too many transcript webhooks in flight; dropped one for %s", target.plugin_id)
                continue
            task = asyncio.create_task(self._transcript(target, session.uid, body))
            self._transcripts.add(task)
            task.add_done_callback(self._transcripts.discard)

    @hookimpl
    def register_pages(self) -> list[Any]:
        return deliveries_pages(self)

    @hookimpl
    def templates_dir(self) -> Traversable:
        return TEMPLATES

    # -- the retry queue ---------------------------------------------------------------------

    async def retry(self, plugin_id: str, uid: str, webhook_id: str) -> bool:
        """Send a delivery of ``plugin_id`` to ``uid`` again now (the delivery log's retry
        button): one waiting for a later attempt, or one given up. ``False`` when ``uid`` has
        no such delivery."""
        if await requeue(self._kv(), plugin_id, uid, webhook_id, self.clock()) is None:
            return False
        wake: asyncio.Event | None = getattr(self, "_wake", None)
        if wake is not None:
            wake.set()
        return True

    async def process_due(self) -> float | None:
        """Attempt every queued delivery that is due; when the next one is due (or ``None``).

        The background task calls it; tests call it after moving their clock. Passes are
        serialised, so when it returns every delivery due at its start has been attempted.
        """
        kv = self._kv()
        async with self._pass_lock:
            now = self.clock()
            due: list[tuple[str, QueuedDelivery]] = []
            later: list[float] = []
            try:
                await self._scan(now, due, later)
            except BaseException:  # the KeyValue failed mid-pass: give back what was claimed
                for webhook_id, _ in due:
                    await self._release(webhook_id)
                raise
            if not due:
                return min(later, default=None)
            # The breaker decides for the whole pass before any attempt starts, so a half-open
            # target gets exactly one probe (the oldest delivery) and the rest wait for it.
            admitted: list[tuple[str, QueuedDelivery]] = []
            for webhook_id, delivery in sorted(due, key=lambda item: item[1].due_at):
                target = breaker_key(delivery.url)
                if self.breaker.allow(target):
                    admitted.append((webhook_id, delivery))
                    continue
                delivery.due_at = self.breaker.retry_at(target)
                try:
                    await kv.hset(QUEUE_KEY, webhook_id, msgspec.json.encode(delivery).decode())
                except BackendUnavailable as exc:  # it stays due; the breaker answers the same
                    log.warning("could not postpone webhook %s: %s", webhook_id, exc)
                await self._release(webhook_id)
            await asyncio.gather(*(self._retry(webhook_id, delivery) for webhook_id, delivery in admitted))
            later.extend(d.due_at for d in await self._queued() if d.due_at > now)
            return min(later, default=None)

    async def _scan(self, now: float, due: list[tuple[str, QueuedDelivery]], later: list[float]) -> None:
        """Sort the queue: claim into ``due`` what is due now; ``later`` gets the other times."""
        kv = self._kv()
        for webhook_id, raw in (await kv.hgetall(QUEUE_KEY)).items():
            try:
                delivery = msgspec.json.decode(raw, type=QueuedDelivery)
            except msgspec.DecodeError:
                log.error("dropping unreadable queued webhook %s", webhook_id)
                await kv.hdel(QUEUE_KEY, webhook_id)
                continue
            if webhook_id in self._inflight:
                continue
            if delivery.due_at > now:
                later.append(delivery.due_at)
            elif await self._claim(webhook_id):  # released by _attempt, or by the caller
                due.append((webhook_id, delivery))
            else:  # another process holds it: look again when its claim would expire
                later.append(now + (await kv.ttl(f"{CLAIM_PREFIX}{webhook_id}") or 1.0))

    async def _retry(self, webhook_id: str, delivery: QueuedDelivery) -> None:
        async with self._parallel:
            enabled: bool | None = None
            try:
                enabled = await self._enabled(delivery.plugin_id, delivery.uid)
            except BackendUnavailable as exc:  # no answer is not "disabled": it stays queued
                log.warning("webhook %s waits: %s", webhook_id, exc)
            if enabled is not True:
                self.breaker.release(breaker_key(delivery.url))
                await self._release(webhook_id)
                if enabled is False:
                    log.info("dropping webhook %s: %s is disabled", webhook_id, delivery.plugin_id)
                    await self._kv().hdel(QUEUE_KEY, webhook_id)
                return
            message = await self._attempt(webhook_id, delivery, admitted=True)
            if message is not None:
                await self._store_message(delivery.uid, message)

    async def _retry_loop(self) -> None:
        failures = 0
        while True:
            try:
                next_due = await self.process_due()
                failures = 0
            except Exception as exc:  # the KeyValue is down (Redis restarting): look again soon
                failures += 1
                if isinstance(exc, BackendUnavailable):
                    log.warning("webhook retry pass failed (%d in a row): %s", failures, exc)
                else:
                    log.exception("webhook retry pass failed")
                next_due = self.clock() + min(2.0 ** (failures - 1), self.poll_interval)
            delay = self.poll_interval if next_due is None else next_due - self.clock()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=min(max(delay, 0.05), self.poll_interval))
            self._wake.clear()

    async def _claim(self, webhook_id: str) -> bool:
        """Take a delivery for an attempt: in this process, and (for a shared KeyValue) across
        processes, with a claim key that expires if its holder dies mid-attempt."""
        if webhook_id in self._inflight:
            return False
        self._inflight.add(webhook_id)
        try:
            if await self._kv().add(f"{CLAIM_PREFIX}{webhook_id}", "1", ttl=self._claim_ttl):
                return True
        except BaseException:  # else this process would skip the delivery until it restarts
            self._inflight.discard(webhook_id)
            raise
        self._inflight.discard(webhook_id)
        return False

    async def _release(self, webhook_id: str) -> None:
        self._inflight.discard(webhook_id)
        try:
            await self._kv().delete(f"{CLAIM_PREFIX}{webhook_id}")
        except Exception:  # it expires anyway
            log.warning("could not release the claim on webhook %s", webhook_id)

    async def _drop_stale_claims(self, kv: KeyValue) -> None:
        """Release the claims a killed process left, so its deliveries go out now, not when
        the claims expire (only where no other process shares the KeyValue)."""
        stale = await kv.keys(CLAIM_PREFIX)
        if stale:
            log.info("releasing %d webhook claims left by the last run", len(stale))
            await kv.delete(*stale)

    async def _queued(self) -> list[QueuedDelivery]:
        raw = await self._kv().hgetall(QUEUE_KEY)
        return [msgspec.json.decode(value, type=QueuedDelivery) for value in raw.values()]

    async def _enqueue(
        self, target: Target, uid: str, body: str, memory_id: str
    ) -> tuple[str, QueuedDelivery] | None:
        """Queue the memory's delivery to ``target``, claimed for its inline attempt; ``None``
        when it was queued before (the retry task has it) or another attempt holds it."""
        webhook_id = memory_webhook_id(target.plugin_id, uid, memory_id)
        if await self._kv().hget(QUEUE_KEY, webhook_id) is not None:
            return None
        delivery = QueuedDelivery(
            plugin_id=target.plugin_id,
            uid=uid,
            url=with_uid(target.webhook_url, uid),
            body=body,
            due_at=self.clock(),
            memory_id=memory_id,
        )
        claimed = await self._claim(webhook_id)  # for the inline attempt, which releases it
        try:
            await self._kv().hset(QUEUE_KEY, webhook_id, msgspec.json.encode(delivery).decode())
        except BaseException:  # not queued: the hook fails and the memory stays owed to it
            if claimed:
                await self._release(webhook_id)
            raise
        return (webhook_id, delivery) if claimed else None

    # -- attempts ----------------------------------------------------------------------------

    async def _attempt(
        self, webhook_id: str, delivery: QueuedDelivery, *, admitted: bool = False
    ) -> Message | None:
        """One attempt of a claimed queued delivery; its entry is then removed or rescheduled.

        ``admitted``: the breaker already let it through (else it asks the breaker first).

        Never raises (but for cancellation): a failure to reach the KeyValue leaves the entry
        as it was, to be attempted again.
        """
        kv = self._kv()
        try:
            target = breaker_key(delivery.url)
            if not admitted and not self.breaker.allow(target):
                delivery.due_at = self.breaker.retry_at(target)
                await kv.hset(QUEUE_KEY, webhook_id, msgspec.json.encode(delivery).decode())
                return None
            delivery.attempt += 1
            outcome = await self._post(
                delivery.plugin_id,
                delivery.uid,
                webhook_id,
                delivery.url,
                delivery.body,
                delivery.attempt,
                "memory_created",
            )
            record: Callable[[], Awaitable[object]]
            if outcome.final:
                record = functools.partial(kv.hdel, QUEUE_KEY, webhook_id)
            elif delivery.attempt >= len(SCHEDULE):
                log.warning(
                    "webhook %s to %s: giving up after %d attempts (%s)",
                    webhook_id,
                    delivery.plugin_id,
                    delivery.attempt,
                    outcome.error or outcome.status,
                )
                record = functools.partial(self._give_up, webhook_id, delivery)
            else:
                delivery.due_at = self.clock() + SCHEDULE[delivery.attempt]
                encoded = msgspec.json.encode(delivery).decode()
                record = functools.partial(kv.hset, QUEUE_KEY, webhook_id, encoded)
            # Sent: the outcome must reach the queue, or a delivered webhook would go again.
            await held(f"recording webhook {webhook_id}", record, RECORD_HOLD_SECONDS)
            if not outcome.final:
                self._wake.set()
            if outcome.reply is None:
                return None
            return self._message(webhook_id, delivery.plugin_id, outcome.reply, delivery.memory_id)
        except Exception:
            log.exception("webhook %s to %s failed", webhook_id, delivery.plugin_id)
            return None
        finally:
            await self._release(webhook_id)

    async def _give_up(self, webhook_id: str, delivery: QueuedDelivery) -> None:
        kv = self._kv()
        await give_up(kv, webhook_id, delivery)
        await kv.hdel(QUEUE_KEY, webhook_id)

    async def _transcript(self, target: Target, uid: str, body: str) -> None:
        """One transcript delivery: attempted once, not queued (a live session moves on)."""
        webhook_id = f"msg_{uuid.uuid4().hex}"
        url = with_uid(target.webhook_url, uid)
        try:
            if not self.breaker.allow(breaker_key(url)):
                log.info("breaker open for %s: transcript webhook dropped", breaker_key(url))
                return
            outcome = await self._post(
                target.plugin_id, uid, webhook_id, url, body, 1, "transcript_processed"
            )
            if outcome.reply is not None:
                await self._store_message(
                    uid, self._message(webhook_id, target.plugin_id, outcome.reply, None)
                )
        except Exception:
            log.exception("transcript webhook to %s failed", target.plugin_id)

    async def _post(
        self, plugin_id: str, uid: str, webhook_id: str, url: str, body: str, attempt: int, event: Event
    ) -> Outcome:
        """POST one signed attempt (the breaker has admitted it); log it, feed the breaker, handle a 410."""
        context = self._require_context()
        started = time.time()  # wall time: what the log and the receiver see
        ticks = time.monotonic()
        target = breaker_key(url)
        try:
            await check_public_url(url, allow_private=context.settings.webhook_allow_private)
        except ValueError as exc:
            self.breaker.release(target)
            outcome = Outcome(error=f"refused: {exc}", final=True)
        else:
            try:
                if self._client is None:
                    raise RuntimeError("the plugin is shut down")
                secret = self._secrets.get(plugin_id) or await webhook_secret(context.kv, plugin_id)
                self._secrets[plugin_id] = secret
                outcome = await send_signed(
                    self._client,
                    url,
                    body.encode(),
                    secret=secret,
                    webhook_id=webhook_id,
                    timestamp=int(started),
                )
            except BaseException:
                self.breaker.release(target)
                raise
            if outcome.target_failed:
                self.breaker.failure(target)
            else:
                self.breaker.success(target)
        record = DeliveryRecord(
            webhook_id=webhook_id,
            at=datetime.fromtimestamp(started, UTC),
            url=url,
            status=outcome.status,
            attempt=attempt,
            error=outcome.error,
            duration_ms=int((time.monotonic() - ticks) * 1000),
            event=event,
        )
        try:
            await append_delivery(context.kv, plugin_id, uid, record)
        except BackendUnavailable as exc:  # the attempt happened: its outcome still counts
            log.warning("webhook %s: not in the delivery log: %s", webhook_id, exc)
        if outcome.error is not None:
            log.warning(
                "webhook %s (%s, attempt %d) to %s: %s", webhook_id, event, attempt, url, outcome.error
            )
        if outcome.status == 410:
            log.info("%s answered 410 Gone: disabling it for %s", plugin_id, uid)
            await self._disable(plugin_id, uid)
        return outcome

    # -- helpers -----------------------------------------------------------------------------

    def _message(self, webhook_id: str, plugin_id: str, text: str, memory_id: str | None) -> Message:
        return Message(
            id=webhook_id,  # one message per delivery, whichever attempt got it
            text=text,
            created_at=datetime.now(UTC),
            sender="ai",
            plugin_id=plugin_id,
            from_external_integration=True,
            memories_id=[memory_id] if memory_id else [],
        )

    async def _enabled(self, plugin_id: str, uid: str) -> bool:
        check = self.is_enabled
        if check is None:
            return False
        try:
            return bool(await check(plugin_id, uid))
        except BackendUnavailable:  # not an answer: the caller decides what waiting means
            raise
        except Exception:
            log.exception("could not tell whether %s is enabled for %s", plugin_id, uid)
            return False

    async def _disable(self, plugin_id: str, uid: str) -> None:
        """Disable an entry for a user: through the catalogue's ``disable`` when it has one."""
        try:
            disable = getattr(self.catalogue, "disable", None)
            if callable(disable):
                result = disable(plugin_id, uid)
                if inspect.isawaitable(result):
                    await result
            else:
                await disable_for_user(self._kv(), plugin_id, uid)
        except Exception:
            log.exception("could not disable %s for %s after a 410", plugin_id, uid)

    async def _store_message(self, uid: str, message: Message) -> None:
        try:
            await self._require_context().store.put_message(uid, message)
        except Exception:
            log.exception("could not store the reply of %s", message.plugin_id)

    def _store_late(self, uid: str, task: asyncio.Task[Message | None]) -> None:
        if task.cancelled() or task.exception() is not None:
            return
        message = task.result()
        if message is not None:
            self._spawn(self._store_message(uid, message))

    def _spawn(self, coroutine: Coroutine[Any, Any, _T]) -> asyncio.Task[_T]:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _require_context(self) -> PluginContext:
        if self._context is None:
            raise RuntimeError("omi_webhooks has not started")
        return self._context

    def _kv(self) -> KeyValue:
        return self._require_context().kv

    def key_value(self) -> KeyValue:
        """The KeyValue port the queue and the delivery log are kept in (once started)."""
        return self._kv()
