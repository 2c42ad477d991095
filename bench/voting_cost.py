"""Calls saved by adaptive voting, and how often it still agrees with the full vote.

Classification items with three options are voted on by the fake provider. Each voter
agrees with the item's true label with probability ``p`` and otherwise picks one of the
two other labels at random. A voter's answer depends only on ``(seed, item, voter)``, so
the full vote and the adaptive vote see the very same answers; the only difference is
how many of them adaptive voting asks for. Each answer also takes a latency drawn from
``(seed, item, voter)`` (lognormal, median 1 s, on a virtual clock, so nothing waits):
answers then arrive in a realistic, repeatable order, and a wave of ``w`` voters means
``w`` calls in flight, as it would against a real API. (With no latency at all, a whole
wave would finish before the stopping rule looked at any of it, which says nothing about
real waves.) Every configuration (p, voters, wave,
confidence) runs the full vote (every voter asked) and the adaptive vote (quorum's
``Adaptive`` through ``VotingWorkflow``) on the same items, and reports:

- ``calls_full`` and ``calls_adaptive``: calls the provider received (calls cancelled in
  flight count: they were started, and a real API bills their input);
- ``calls_cancelled``: of the adaptive calls, those cancelled in flight by an early stop;
- ``saving_pct``: ``100 * (1 - calls_adaptive / calls_full)``;
- ``agreement_with_full``: the share of items whose adaptive winner equals the full vote's
  winner (a tie, winner ``None``, agrees only with a tie);
- ``accuracy_full`` / ``accuracy_adaptive``: the share of items whose winner is the true
  label;
- ``meets_target``: at least ``TARGET_SAVING_PCT`` fewer calls at at least
  ``TARGET_AGREEMENT`` agreement.

    python bench/voting_cost.py [--json] [--items 1000] [--seed 7]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import time
from dataclasses import asdict, dataclass
from typing import Any

from quorum import Adaptive, FakeProvider, Request, Voter, VotingWorkflow
from quorum.testing.clock import VirtualClock

OPTIONS = ("acceptable", "needs_review", "rejected")
PROBABILITIES = (0.7, 0.9)
VOTER_COUNTS = (5, 9)
WAVES = (1, 2, 3)
CONFIDENCES: tuple[float | None, ...] = (None, 0.85, 0.9, 0.95, 0.99)
TARGET_SAVING_PCT = 40.0
BATCH = 50
TARGET_AGREEMENT = 0.99
_ITEM = re.compile(r"Item (\d+):")
_VOTER = re.compile(r"You are voter (\d+)\.")


@dataclass(frozen=True)
class Config:
    p: float
    voters: int
    wave: int
    confidence: float | None  # None: only the exact "decided" rule


@dataclass(frozen=True)
class Row:
    p: float
    voters: int
    wave: int
    confidence: float | None
    items: int
    calls_full: int
    calls_adaptive: int
    calls_cancelled: int
    saving_pct: float
    agreement_with_full: float
    accuracy_full: float
    accuracy_adaptive: float
    meets_target: bool


def true_labels(items: int, seed: int) -> list[str]:
    rng = random.Random(f"labels:{seed}")
    return [rng.choice(OPTIONS) for _ in range(items)]


def answer(seed: int, p: float, item: int, voter: int, truth: str) -> str:
    """The voter's answer on the item: the same in every run with this seed."""
    rng = random.Random(f"{seed}:{p}:{item}:{voter}")
    if rng.random() < p:
        return truth
    return rng.choice([o for o in OPTIONS if o != truth])


def latency(seed: int, item: int, voter: int) -> float:
    """Seconds the voter takes on the item (virtual): lognormal, median 1 s, sigma 0.5."""
    return random.Random(f"latency:{seed}:{item}:{voter}").lognormvariate(0.0, 0.5)


def provider(seed: int, p: float, labels: list[str], clock: VirtualClock) -> FakeProvider:
    async def respond(request: Request) -> dict[str, str]:
        item = int(_search(_ITEM, request.text))
        voter = int(_search(_VOTER, request.text))
        await clock.sleep(latency(seed, item, voter))
        decision = answer(seed, p, item, voter, labels[item])
        return {"decision": decision, "confidence": "high", "reasoning": "scripted"}

    return FakeProvider(responder=respond)


def _search(pattern: re.Pattern[str], text: str) -> str:
    found = pattern.search(text)
    if found is None:
        raise ValueError(f"{pattern.pattern!r} not in the request")
    return found.group(1)


def prompt(item: int) -> str:
    return f"Item {item}: classify the comment."


async def winners(fake: FakeProvider, voters: int, items: int, adaptive: Adaptive | None) -> list[str | None]:
    """Every item's winner. Items are voted on BATCH at a time (each vote is separate and
    sees the same answers whatever the batch; batches only keep the virtual clock fast)."""
    workflow = VotingWorkflow(llm=fake, adaptive=adaptive)
    ballot = [Voter(f"voter_{v}", f"You are voter {v}.") for v in range(voters)]
    chosen: list[str | None] = []
    for start in range(0, items, BATCH):
        batch = range(start, min(items, start + BATCH))
        results = await asyncio.gather(*(workflow.run(ballot, prompt(i), OPTIONS) for i in batch))
        chosen += [r.winner for r in results]
    return chosen


async def measure(config: Config, labels: list[str], seed: int, full: tuple[list[str | None], int]) -> Row:
    items = len(labels)
    fake = provider(seed, config.p, labels, VirtualClock())
    adaptive = Adaptive(wave=config.wave, confidence=config.confidence)
    chosen = await winners(fake, config.voters, items, adaptive)
    full_winners, calls_full = full
    calls = len(fake.calls)
    saving = 100.0 * (1 - calls / calls_full)
    agreement = sum(a == f for a, f in zip(chosen, full_winners, strict=True)) / items
    return Row(
        p=config.p,
        voters=config.voters,
        wave=config.wave,
        confidence=config.confidence,
        items=items,
        calls_full=calls_full,
        calls_adaptive=calls,
        calls_cancelled=fake.cancelled,
        saving_pct=round(saving, 1),
        agreement_with_full=round(agreement, 4),
        accuracy_full=round(_accuracy(full_winners, labels), 4),
        accuracy_adaptive=round(_accuracy(chosen, labels), 4),
        meets_target=saving >= TARGET_SAVING_PCT and agreement >= TARGET_AGREEMENT,
    )


def _accuracy(chosen: list[str | None], labels: list[str]) -> float:
    return sum(c == t for c, t in zip(chosen, labels, strict=True)) / len(labels)


async def bench(items: int, seed: int) -> list[Row]:
    rows = []
    labels = true_labels(items, seed)
    for p in PROBABILITIES:
        for voters in VOTER_COUNTS:
            fake = provider(seed, p, labels, VirtualClock())
            full = (await winners(fake, voters, items, None), len(fake.calls))
            for wave in WAVES:
                for confidence in CONFIDENCES:
                    config = Config(p, voters, wave, confidence)
                    rows.append(await measure(config, labels, seed, full))
    return rows


def table(rows: list[Row]) -> str:
    head = f"{'p':>4} {'voters':>6} {'wave':>4} {'conf':>5} {'full':>6} {'adaptive':>8} {'cancel':>6} "
    head += f"{'saving':>7} {'agree':>7} {'acc_full':>8} {'acc_adapt':>9}  target"
    lines = [head]
    for r in rows:
        conf = "-" if r.confidence is None else f"{r.confidence:g}"
        lines.append(
            f"{r.p:>4} {r.voters:>6} {r.wave:>4} {conf:>5} {r.calls_full:>6} {r.calls_adaptive:>8} "
            f"{r.calls_cancelled:>6} "
            f"{r.saving_pct:>6.1f}% {r.agreement_with_full:>7.2%} {r.accuracy_full:>8.2%} "
            f"{r.accuracy_adaptive:>9.2%}  {'yes' if r.meets_target else 'no'}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--items", type=int, default=1000, help="items to classify (default 1000)")
    parser.add_argument("--seed", type=int, default=7, help="seed for labels and answers (default 7)")
    args = parser.parse_args()
    started = time.perf_counter()
    rows = asyncio.run(bench(args.items, args.seed))
    report: dict[str, Any] = {
        "items": args.items,
        "seed": args.seed,
        "options": list(OPTIONS),
        "target": {"saving_pct": TARGET_SAVING_PCT, "agreement_with_full": TARGET_AGREEMENT},
        "configurations": [asdict(r) for r in rows],
        "meeting_target": sum(r.meets_target for r in rows),
        "wall_s": round(time.perf_counter() - started, 1),
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(table(rows))
        print(
            f"{report['meeting_target']} of {len(rows)} configurations meet the target "
            f"(>= {TARGET_SAVING_PCT:g}% fewer calls at >= {TARGET_AGREEMENT:.0%} agreement); "
            f"{report['wall_s']}s"
        )


if __name__ == "__main__":
    main()
