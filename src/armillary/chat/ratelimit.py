"""Token buckets: commands per chat account, and lines towards the chat server (flood control).

IRC servers disconnect a client that sends faster than they allow (ngircd and most ircds: a burst of a
few lines, then about one line per second or two); the outgoing bucket keeps the bot under that. The
per-account bucket keeps one person (or a runaway script) from driving the API through the bot.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field


@dataclass
class TokenBucket:
    """``burst`` tokens, refilled at ``rate`` per second."""

    rate: float
    burst: float
    tokens: float = -1.0
    stamp: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        if self.tokens < 0:
            self.tokens = self.burst

    def _refill(self) -> None:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    def try_take(self) -> bool:
        """Take a token if there is one (a command allowed now), else False."""
        self._refill()
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False

    def wait_s(self) -> float:
        """Seconds until a token is there."""
        self._refill()
        return 0.0 if self.tokens >= 1 else (1 - self.tokens) / self.rate

    async def take(self) -> None:
        """Wait for a token, then take it (outgoing lines: late, never dropped)."""
        while not self.try_take():
            await asyncio.sleep(self.wait_s())


class PerAccount:
    """One bucket per chat account, made on first use; idle full buckets are forgotten."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst = rate, burst
        self.buckets: dict[str, TokenBucket] = {}

    def allow(self, account: str) -> bool:
        if len(self.buckets) > 10_000:
            self.buckets = {k: b for k, b in self.buckets.items() if b.wait_s() > 0 or b.tokens < b.burst}
        bucket = self.buckets.setdefault(account, TokenBucket(self.rate, self.burst))
        return bucket.try_take()
