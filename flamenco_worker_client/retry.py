"""When a failed request is sent again, and how long the client waits before it does.

Only transient failures are retried: the manager could not be reached, did not answer in time,
or answered 5xx. A request that may have reached the manager is retried only when sending it
twice does no harm (see ``Call.repeatable``); a connection that was never made is always safe
to retry. Waits grow exponentially with a little jitter, so a farm of workers that lost their
manager at the same moment does not come back in lockstep. When the manager says how long to
wait (``Retry-After``, as it does while its database is away), the client waits at least that
long: a farm of workers retrying within the second would only add to the load of a manager that
asked for five.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import attrs

from .exceptions import ConnectError, FlamencoClientError

__all__ = ["NO_RETRIES", "RetryPolicy"]


@attrs.frozen
class RetryPolicy:
    """How often and how patiently a transient failure is retried within one call."""

    retries: int = 3
    """Attempts after the first; 0 turns retrying off."""
    initial_delay: float = 0.25
    """Seconds before the first retry."""
    multiplier: float = 2.0
    """Factor by which each wait grows."""
    max_delay: float = 5.0
    """Longest wait between two attempts."""
    jitter: float = 0.1
    """Each wait is varied at random by up to this fraction of itself."""
    max_retry_after: float = 30.0
    """Longest wait a manager's ``Retry-After`` may ask for within one call."""

    def delays(self) -> Iterator[float]:
        """The waits before each retry, in order."""
        delay = self.initial_delay
        for _ in range(self.retries):
            spread = delay * self.jitter
            yield max(0.0, min(self.max_delay, delay + random.uniform(-spread, spread)))
            delay = min(self.max_delay, delay * self.multiplier)

    def wait(self, delay: float, error: FlamencoClientError) -> float:
        """Seconds to wait before retrying after ``error``: ``delay`` (from :meth:`delays`), or
        what the manager asked for when that is longer, up to :attr:`max_retry_after`."""
        if error.retry_after is None:
            return delay
        return max(delay, min(error.retry_after, self.max_retry_after))

    @staticmethod
    def should_retry(error: FlamencoClientError, repeatable: bool) -> bool:
        """Whether ``error`` from a call is worth another attempt."""
        if isinstance(error, ConnectError):
            return True
        return error.transient and repeatable


NO_RETRIES = RetryPolicy(retries=0)
"""Fail on the first error; for callers that run their own retry loop."""
