"""Is a concurrent history of client operations linearizable against a sequential model?

The search is Wing & Gong's with Lowe's memoisation, as in Porcupine and Knossos'
"linear" checker. Calls and returns sit in one time-ordered, doubly linked list.
The search tries to linearize each operation whose call comes before the first
return still in the list; a linearized operation is lifted out of the list (and
put back on backtracking, dancing-links style). Reaching a return means its
operation found no place, so the search backtracks. Every configuration
(set of linearized operations, model state) is visited at most once. Beyond
Lowe, a configuration is also skipped when one with the same state and returned
operations but a subset of its unreturned ones was searched before (that one can
do anything this one can), which trims the search around timed-out writes.

Time semantics
  * a precedes b in real time iff a.ret < b.call, strictly. An operation that
    returns at t and one called at t overlap and may be linearized in either
    order: a virtual clock that stamps both with t cannot tell which came first.
    In the event list, calls therefore sort before returns at equal times.
  * ret=None: the client never learnt the outcome (timeout, crash). The operation
    may take effect at any instant after its call, even after every other one,
    or never; it is as if it returned at +infinity. When it took no effect it is
    left out of the witness. Its recorded output is ignored.

Models
  step(state, input, output) -> (legal, next_state), with hashable immutable
  states. For an operation that never returned the checker passes output=UNKNOWN:
  the model must then accept any output and return the effect. A model may define
  show(state) -> str to make explanations readable.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol


class _Unknown:
    def __repr__(self) -> str:
        return "UNKNOWN"


UNKNOWN: Any = _Unknown()
"""The output passed to Model.step for an operation that never returned."""


@dataclass(frozen=True)
class Operation:
    client: int
    call: float
    ret: float | None  # None: never returned, may or may not have taken effect
    input: Any  # e.g. ("put", key, value), ("get", key), ("cas", key, old, new)
    output: Any = None  # the response observed; ignored when ret is None

    def __str__(self) -> str:
        if self.ret is None:
            return f"client {self.client} [{self.call:g} .. never returned] {_call(self.input)}"
        return (f"client {self.client} [{self.call:g} .. {self.ret:g}] "
                f"{_call(self.input)} -> {self.output!r}")


def _call(input: Any) -> str:
    """("put", "x", 1) reads as put('x', 1)."""
    if isinstance(input, tuple) and input and isinstance(input[0], str):
        return f"{input[0]}({', '.join(map(repr, input[1:]))})"
    return repr(input)


class Model(Protocol):
    def init(self) -> Hashable: ...

    def step(self, state: Hashable, input: Any, output: Any) -> tuple[bool, Hashable]: ...


def _apply(input: tuple, current: Any, output: Any) -> tuple[bool, Any]:
    """One operation on one value: is `output` legal, and the value afterwards."""
    kind, *args = input
    if kind in ("get", "read"):
        return output is UNKNOWN or output == current, current
    if kind in ("put", "write"):
        return True, args[0]  # the acknowledgement carries no information
    if kind == "append":
        return True, args[0] if current is None else current + args[0]
    if kind == "cas":
        old, new = args
        swapped = current == old
        legal = output is UNKNOWN or output == swapped
        return legal, new if swapped else current
    raise ValueError(f"unknown operation {input!r}: expected get/read, put/write, append or cas")


class KvModel:
    """Keys to values, missing keys read as None.

    ("get", k) -> the value or None; ("put", k, v) -> anything (an ack);
    ("append", k, v) -> anything, the value becomes old + v (v when k is missing);
    ("cas", k, old, new) -> True iff the value was old and is now new.
    The state is a frozenset of (key, value) pairs.
    """

    def init(self) -> frozenset:
        return frozenset()

    def step(self, state: frozenset, input: tuple, output: Any) -> tuple[bool, frozenset]:
        key = input[1]
        current = next((v for k, v in state if k == key), None)
        legal, value = _apply((input[0], *input[2:]), current, output)
        if not legal or value == current:
            return legal, state
        return True, frozenset((k, v) for k, v in state if k != key) | {(key, value)}

    def show(self, state: frozenset) -> str:
        pairs = sorted(state, key=repr)
        return "{" + ", ".join(f"{k!r}: {v!r}" for k, v in pairs) + "}"


class RegisterModel:
    """One register, initially None: ("read",) -> the value; ("write", v) -> anything;
    ("cas", old, new) -> True iff it swapped. The state is the value itself."""

    def init(self) -> Hashable:
        return None

    def step(self, state: Hashable, input: tuple, output: Any) -> tuple[bool, Hashable]:
        return _apply(input, state, output)

    def show(self, state: Hashable) -> str:
        return repr(state)


def kv_model() -> KvModel:
    return KvModel()


def register_model() -> RegisterModel:
    return RegisterModel()


@dataclass
class CheckResult:
    ok: bool
    linearization: list[Operation] | None  # one witness order when ok
    explanation: str
    timed_out: bool = False  # inconclusive: ok is False but no violation was proven


# --- the search ---------------------------------------------------------------------------


class _Event:
    """A call or a return in the time-ordered event list; a call's match is its return."""

    __slots__ = ("index", "is_call", "match", "prev", "next")

    def __init__(self, index: int, is_call: bool, match: _Event | None = None):
        self.index = index
        self.is_call = is_call
        self.match = match
        self.prev: _Event | None = None
        self.next: _Event | None = None


def _event_list(history: Sequence[Operation]) -> _Event:
    """The head sentinel of all events; calls sort before returns at equal times."""
    keyed = []
    for i, op in enumerate(history):
        ret = _Event(i, is_call=False)
        keyed.append(((op.call, 0, i), _Event(i, is_call=True, match=ret)))
        keyed.append(((math.inf if op.ret is None else op.ret, 1, i), ret))
    keyed.sort(key=lambda pair: pair[0])
    head = prev = _Event(-1, is_call=False)
    for _, event in keyed:
        prev.next, event.prev = event, prev
        prev = event
    return head


def _lift(call: _Event) -> None:
    for event in (call, call.match):
        event.prev.next = event.next
        if event.next is not None:
            event.next.prev = event.prev


def _unlift(call: _Event) -> None:
    """Undo _lift; valid because lifts are undone in reverse order."""
    for event in (call.match, call):
        event.prev.next = event
        if event.next is not None:
            event.next.prev = event


@dataclass
class _DeadEnd:
    """The deepest point the search reached: where a human should look."""

    prefix: list[int]  # linearized operations, in order
    state: Hashable  # the model state after them
    blocked: int  # the operation whose return came before any place for it
    candidates: list[int]  # every operation that could have been linearized next
    depth: tuple[int, int]


class _Visited:
    """The configurations searched so far, with dominance over unreturned operations."""

    def __init__(self, unreturned_mask: int):
        self.unreturned_mask = unreturned_mask
        self.placed_unreturned: dict[tuple[int, Hashable], list[int]] = {}
        self.count = 0

    def first_visit(self, linearized: int, state: Hashable) -> bool:
        """Record a configuration; False if it, or one that dominates it, was searched.

        With the same returned operations placed and the same state, placing a subset
        of the unreturned operations dominates: the others may still go later, or never.
        """
        unreturned = linearized & self.unreturned_mask
        earlier = self.placed_unreturned.setdefault((linearized ^ unreturned, state), [])
        if any(subset & ~unreturned == 0 for subset in earlier):
            return False
        earlier.append(unreturned)
        self.count += 1
        return True


class _Search:
    def __init__(self, history: Sequence[Operation], model: Model, deadline: float | None):
        self.history = history
        self.model = model
        self.deadline = deadline
        self.pending = [op.ret is None for op in history]
        self.must_place = self.pending.count(False)
        self.head = _event_list(history)
        self.visited = _Visited(sum(1 << i for i, p in enumerate(self.pending) if p))
        self.stack: list[tuple[_Event, Hashable]] = []  # (linearized call, state before it)
        self.state = model.init()
        self.linearized = 0  # bitset of operation indices
        self.returned = 0  # how many linearized operations returned (the rest never did)
        self.deepest: _DeadEnd | None = None
        self.timed_out = False

    def run(self) -> list[int] | None:
        """A witness order of operation indices, or None (see deepest, timed_out)."""
        entry = self.head.next
        steps = 0
        # Unreturned operations may take effect after everything else, that is never:
        # the search is done once every returned operation is placed. Until then a
        # return (finite, so before every unreturned one) always ends the scan.
        while self.returned < self.must_place:
            steps += 1
            if steps % 1024 == 0 and self._out_of_time():
                return None
            if entry.is_call:
                entry = self._try(entry)
                continue
            self._note_dead_end(entry)
            if not self.stack:
                return None
            entry = self._backtrack()
        return [call.index for call, _ in self.stack]

    def _try(self, call: _Event) -> _Event:
        """Linearize call's operation now if the model allows it; the next event to visit."""
        op = self.history[call.index]
        output = UNKNOWN if self.pending[call.index] else op.output
        legal, after = self.model.step(self.state, op.input, output)
        # An unreturned op that changes nothing here is better left out: omitting it
        # keeps it available for later, so this branch can only lose.
        if not legal or (self.pending[call.index] and after == self.state):
            return call.next
        linearized = self.linearized | 1 << call.index
        if not self.visited.first_visit(linearized, after):
            return call.next
        self.stack.append((call, self.state))
        self.state, self.linearized = after, linearized
        self.returned += not self.pending[call.index]
        _lift(call)
        return self.head.next

    def _backtrack(self) -> _Event:
        """Undo the last linearization; the next candidate after it."""
        call, self.state = self.stack.pop()
        self.linearized &= ~(1 << call.index)
        self.returned -= not self.pending[call.index]
        _unlift(call)
        return call.next

    def _note_dead_end(self, ret: _Event) -> None:
        # Deepest = most returned operations placed; unreturned ones only pad a prefix.
        depth = (self.returned, -len(self.stack))
        if self.deepest is not None and depth <= self.deepest.depth:
            return
        candidates = []
        event = self.head.next
        while event is not ret:
            candidates.append(event.index)
            event = event.next
        prefix = [call.index for call, _ in self.stack]
        self.deepest = _DeadEnd(prefix, self.state, ret.index, candidates, depth)

    def _out_of_time(self) -> bool:
        self.timed_out = self.deadline is not None and time.monotonic() > self.deadline
        return self.timed_out


# --- explanations -------------------------------------------------------------------------


def _show_state(model: Model, state: Hashable) -> str:
    show = getattr(model, "show", repr)
    return show(state)


def _explain_ok(total: int, placed: int) -> str:
    left_out = total - placed
    text = f"linearizable: a witness order of {placed} of {total} operations"
    if left_out:
        text += f"; {left_out} that never returned are left out (they need not take effect)"
    return text


SHOWN = 20  # prefix entries and candidates listed in an explanation; the rest are counted
NO_EFFECT = "never returned, and taking effect here would change nothing"


def _explain_failure(search: _Search, labels: Sequence[int]) -> str:
    n = len(search.history)
    if search.timed_out:
        header = (f"inconclusive: the search timed out after exploring {search.visited.count} "
                  f"configurations of {n} operations (raise timeout_s, or check per key).")
    else:
        header = (f"not linearizable: no order of these {n} operations respects both "
                  "real time and the model.")
    if search.deepest is None:
        return header
    return "\n".join([header, *_prefix_lines(search, labels), *_stuck_lines(search, labels)])


def _prefix_lines(search: _Search, labels: Sequence[int]) -> list[str]:
    history, end = search.history, search.deepest
    lines = [f"Longest linearizable prefix: {len(end.prefix)} of {len(history)} operations"]
    if len(end.prefix) > SHOWN:
        lines.append(f"  ... the first {len(end.prefix) - SHOWN}, then:")
    first = max(0, len(end.prefix) - SHOWN)
    for k, i in enumerate(end.prefix[first:], first + 1):
        lines.append(f"  {k:3}. #{labels[i]} {history[i]}")
    lines.append(f"  state after it: {_show_state(search.model, end.state)}")
    return lines


def _stuck_lines(search: _Search, labels: Sequence[int]) -> list[str]:
    history, end = search.history, search.deepest
    blocked = history[end.blocked]
    lines = [f"Stuck at #{labels[end.blocked]} {blocked}: it returned at {blocked.ret:g}, "
             "yet neither it nor any other operation that may come next fits:"]
    reasons = [(i, _why_not(search, end, i)) for i in end.candidates]
    shown = [(i, why) for i, why in reasons if why != NO_EFFECT]
    for i, why in sorted(shown, key=lambda pair: search.pending[pair[0]])[:SHOWN]:
        lines.append(f"  #{labels[i]} {history[i]}: {why}")
    if len(shown) > SHOWN:
        lines.append(f"  ... and {len(shown) - SHOWN} more that never returned")
    if len(reasons) > len(shown):
        lines.append(f"  (and {len(reasons) - len(shown)} that never returned and would "
                     "change nothing here)")
    return lines


def _why_not(search: _Search, end: _DeadEnd, i: int) -> str:
    op = search.history[i]
    output = UNKNOWN if search.pending[i] else op.output
    legal, after = search.model.step(end.state, op.input, output)
    if not legal:
        return "the model rejects this output from that state"
    if search.pending[i] and after == end.state:
        return NO_EFFECT
    return "every continuation after it fails (explored before)"


# --- entry points -------------------------------------------------------------------------


def _validate(history: Sequence[Operation]) -> None:
    for i, op in enumerate(history):
        if not math.isfinite(op.call):
            raise ValueError(f"operation #{i} ({op}) has call time {op.call}: use a finite clock")
        if op.ret is not None and op.ret < op.call:
            raise ValueError(f"operation #{i} ({op}) returns before it is called: stamp "
                             "call and return from the same clock, ret >= call")


def _deadline(timeout_s: float | None) -> float | None:
    return None if timeout_s is None else time.monotonic() + timeout_s


def _solve(
    history: Sequence[Operation], model: Model, deadline: float | None, labels: Sequence[int]
) -> tuple[list[int] | None, CheckResult]:
    """The witness (indices into history) and the result, labelling ops as #labels[i]."""
    search = _Search(history, model, deadline)
    witness = search.run()
    if witness is None:
        return None, CheckResult(False, None, _explain_failure(search, labels), search.timed_out)
    ops = [history[i] for i in witness]
    return witness, CheckResult(True, ops, _explain_ok(len(history), len(ops)))


def check(
    history: Sequence[Operation], model: Model, timeout_s: float | None = 10.0
) -> CheckResult:
    """Is there an order of history that respects real time and that the model accepts?"""
    _validate(history)
    return _solve(history, model, _deadline(timeout_s), range(len(history)))[1]


def _kv_key(op: Operation) -> Hashable:
    return op.input[1]


def check_partitioned(
    history: Sequence[Operation],
    model: Model,
    key_of: Callable[[Operation], Hashable] = _kv_key,
    timeout_s: float | None = 10.0,
) -> CheckResult:
    """check(), one key at a time: a history is linearizable iff each key's sub-history
    is (Herlihy & Wing's locality), provided no operation touches two keys."""
    _validate(history)
    deadline = _deadline(timeout_s)
    groups: dict[Hashable, list[int]] = {}
    for i, op in enumerate(history):
        groups.setdefault(key_of(op), []).append(i)
    orders = []
    for key, indices in groups.items():
        witness, result = _solve([history[i] for i in indices], model, deadline, indices)
        if witness is None:
            result.explanation = f"key {key!r}: {result.explanation}"
            return result
        orders.append([indices[i] for i in witness])
    merged = _merge(history, orders)
    return CheckResult(True, merged, _explain_ok(len(history), len(merged)))


def _merge(history: Sequence[Operation], orders: Iterable[list[int]]) -> list[Operation]:
    """One global witness from per-key witnesses.

    Give each operation the point max(its call, the calls before it in its key's
    witness). Since a witness respects real time, that point is within [call, ret];
    so a.ret < b.call implies point(a) < point(b), and sorting by point respects
    real time across keys while keeping each key's order.
    """
    keyed = []
    for rank, order in enumerate(orders):
        point = -math.inf
        for position, i in enumerate(order):
            point = max(point, history[i].call)
            keyed.append((point, rank, position, i))
    keyed.sort()
    return [history[i] for *_, i in keyed]
