"""A circuit breaker per target (a plugin server's host and port), kept in memory.

Closed: deliveries go through. After ``threshold`` consecutive failures it opens for
``cooldown`` seconds: deliveries to that target are queued, not attempted. Then it is
half-open: one delivery goes through as a probe; its success closes the breaker, its failure
opens it for another cooldown.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

__all__ = ["BreakerState", "CircuitBreaker"]

BreakerState = Literal["closed", "open", "half-open"]


@dataclass
class _Target:
    failures: int = 0
    opened_at: float | None = None
    probing: bool = False


class CircuitBreaker:
    """Consecutive-failure breakers, one per target.

    Args:
        clock: Unix seconds now (injectable for tests).
        threshold: Consecutive failures that open a target's breaker.
        cooldown: Seconds a breaker stays open before it lets a probe through.
    """

    def __init__(self, clock: Callable[[], float], *, threshold: int = 5, cooldown: float = 60.0) -> None:
        self.clock = clock
        self.threshold = threshold
        self.cooldown = cooldown
        self._targets: dict[str, _Target] = {}

    def state(self, target: str) -> BreakerState:
        """The breaker's state for ``target``."""
        entry = self._targets.get(target)
        if entry is None or entry.opened_at is None:
            return "closed"
        if entry.probing or self.clock() >= entry.opened_at + self.cooldown:
            return "half-open"
        return "open"

    def allow(self, target: str) -> bool:
        """Whether a delivery to ``target`` may be attempted now (half-open: the one probe)."""
        entry = self._targets.get(target)
        if entry is None or entry.opened_at is None:
            return True
        if entry.probing or self.clock() < entry.opened_at + self.cooldown:
            return False
        entry.probing = True
        return True

    def retry_at(self, target: str) -> float:
        """When a delivery refused by :meth:`allow` should be tried again (unix seconds)."""
        entry = self._targets.get(target)
        now = self.clock()
        if entry is None or entry.opened_at is None:
            return now
        return max(entry.opened_at + self.cooldown, now + 1.0)

    def success(self, target: str) -> None:
        """The target answered: close its breaker."""
        self._targets.pop(target, None)

    def failure(self, target: str) -> None:
        """The target failed (no connection, timeout, 5xx): count it, maybe open the breaker."""
        entry = self._targets.setdefault(target, _Target())
        entry.failures += 1
        if entry.probing or entry.failures >= self.threshold:
            entry.opened_at = self.clock()
        entry.probing = False

    def release(self, target: str) -> None:
        """A probe that ended without an answer either way (cancelled): let another one through."""
        entry = self._targets.get(target)
        if entry is not None:
            entry.probing = False
