"""The resource guard: when the machine is overloaded, a worker stops taking new tests.

Pure logic over health samples, no I/O. `ResourceGuard.observe()` takes a sample and the
time and says whether the worker should accept tests. A crossed limit stops intake at
once; intake resumes only after every measure has stayed below its limit for the whole
cool-down, so a load that hovers around a limit does not flap. The guard never touches
running tests: the worker cancels its queue consumers, nothing more.

    guard = ResourceGuard(GuardLimits(max_memory_percent=90, cooldown_s=30))
    state = guard.observe(sample, now=time.monotonic())
    if not state.accepting: ...
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .health import HealthSample

__all__ = ["GuardLimits", "GuardState", "ResourceGuard", "crossed_limits"]

DEFAULT_COOLDOWN_S = 30.0


@dataclass(frozen=True)
class GuardLimits:
    """Percentages above which a worker takes no new tests; None means not watched."""

    max_cpu_percent: float | None = None
    max_memory_percent: float | None = None
    max_gpu_memory_percent: float | None = None
    cooldown_s: float = DEFAULT_COOLDOWN_S

    @property
    def active(self) -> bool:
        return any(v is not None for v in (self.max_cpu_percent, self.max_memory_percent, self.max_gpu_memory_percent))

    def to_dict(self) -> dict[str, Any]:
        return {"max_cpu_percent": self.max_cpu_percent, "max_memory_percent": self.max_memory_percent,
                "max_gpu_memory_percent": self.max_gpu_memory_percent, "cooldown_s": self.cooldown_s}


@dataclass(frozen=True)
class GuardState:
    """Whether the worker takes tests now, and why not."""

    accepting: bool = True
    reasons: tuple[str, ...] = ()  # the limits crossed when intake stopped
    changed_at: float = 0.0  # when `accepting` last changed
    below_since: float | None = None  # while constrained: since when every measure is below its limit

    def to_dict(self) -> dict[str, Any]:
        return {"state": "accepting" if self.accepting else "constrained", "reasons": list(self.reasons),
                "changed_at": self.changed_at, "below_since": self.below_since}


def crossed_limits(limits: GuardLimits, sample: HealthSample) -> tuple[str, ...]:
    """One line per limit the sample is above, e.g. "memory 93.1% > 90%"."""
    checks = (
        ("cpu", sample.cpu_percent, limits.max_cpu_percent),
        ("memory", sample.memory_percent, limits.max_memory_percent),
        ("gpu memory", sample.gpu_memory_percent, limits.max_gpu_memory_percent),
    )
    return tuple(
        f"{name} {value:.1f}% > {limit:g}%"
        for name, value, limit in checks
        if value is not None and limit is not None and value > limit
    )


class ResourceGuard:
    """Turns a stream of samples into accept / constrained, with a cool-down before resuming."""

    def __init__(self, limits: GuardLimits) -> None:
        self.limits = limits
        self.state = GuardState()

    def observe(self, sample: HealthSample, now: float) -> GuardState:
        crossed = crossed_limits(self.limits, sample)
        self.state = self._next(self.state, crossed, now)
        return self.state

    def _next(self, state: GuardState, crossed: tuple[str, ...], now: float) -> GuardState:
        if crossed:
            if state.accepting:
                return GuardState(False, crossed, now, None)
            return GuardState(False, crossed, state.changed_at, None)
        if state.accepting:
            return state
        below_since = state.below_since if state.below_since is not None else now
        if now - below_since >= self.limits.cooldown_s:
            return GuardState(True, (), now, None)
        return GuardState(False, state.reasons, state.changed_at, below_since)
