"""Latency of emulated answers: a fixed delay or a random distribution, seeded.

Real model latency is long-tailed, and a fan-out's wall time is set by its slowest
call, so benchmarks need more than a constant. The forms accepted::

    0.2                  always 0.2 s
    uniform:0.1,0.5      uniform between 0.1 and 0.5 s
    normal:MEAN,SD       normal, cut at 0
    lognormal:MEDIAN,SIGMA
                         log-normal with that median; SIGMA is the spread of log(latency)
    exp:MEAN             exponential with that mean
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from quorum.errors import ConfigError

_FORMS = "a number of seconds, uniform:LOW,HIGH, normal:MEAN,SD, lognormal:MEDIAN,SIGMA or exp:MEAN"
_ARITY = {"uniform": 2, "normal": 2, "lognormal": 2, "exp": 1}


@dataclass(frozen=True, slots=True)
class Latency:
    """A latency distribution; ``sample`` draws seconds (never negative) from a generator."""

    kind: str = "fixed"
    a: float = 0.0
    b: float = 0.0

    def sample(self, rng: random.Random) -> float:
        if self.kind == "fixed":
            return self.a
        if self.kind == "uniform":
            return rng.uniform(self.a, self.b)
        if self.kind == "normal":
            return max(0.0, rng.gauss(self.a, self.b))
        if self.kind == "lognormal":
            return rng.lognormvariate(math.log(self.a), self.b)
        return rng.expovariate(1.0 / self.a) if self.a > 0 else 0.0

    def __str__(self) -> str:
        if self.kind == "fixed":
            return f"{self.a:g}"
        args = f"{self.a:g}" if self.kind == "exp" else f"{self.a:g},{self.b:g}"
        return f"{self.kind}:{args}"


def parse_latency(spec: float | str | Latency) -> Latency:
    """A ``Latency`` from a number of seconds or one of the forms in the module docstring."""
    if isinstance(spec, Latency):
        return spec
    if isinstance(spec, (int, float)):
        return _checked(Latency("fixed", float(spec)), str(spec))
    text = spec.strip()
    kind, sep, args = text.partition(":")
    if not sep:
        return _checked(Latency("fixed", _number(text, text)), text)
    kind = kind.strip().lower()
    if kind not in _ARITY:
        raise ConfigError(f"latency {text!r}: unknown distribution {kind!r}; use {_FORMS}")
    values = [_number(v, text) for v in args.split(",")]
    if len(values) != _ARITY[kind]:
        raise ConfigError(
            f"latency {text!r}: {kind} takes {_ARITY[kind]} number(s) after the colon, "
            f"got {len(values)}; use {_FORMS}"
        )
    return _checked(Latency(kind, *values), text)


def _number(value: str, whole: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(f"latency {whole!r}: {value.strip()!r} is not a number; use {_FORMS}") from None
    if not math.isfinite(number):
        raise ConfigError(f"latency {whole!r}: {value.strip()!r} is not a finite number")
    return number


def _checked(latency: Latency, text: str) -> Latency:
    kind, a, b = latency.kind, latency.a, latency.b
    problem = ""
    if kind in ("fixed", "exp", "normal") and a < 0:
        problem = "seconds cannot be negative"
    elif kind == "uniform" and not 0 <= a <= b:
        problem = "uniform needs 0 <= LOW <= HIGH"
    elif kind == "normal" and b < 0:
        problem = "the standard deviation cannot be negative"
    elif kind == "lognormal" and (a <= 0 or b < 0):
        problem = "lognormal needs MEDIAN > 0 and SIGMA >= 0"
    if problem:
        raise ConfigError(f"latency {text!r}: {problem}")
    return latency
