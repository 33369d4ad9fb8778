"""The linearizability checker accepts real executions and rejects impossible ones.

Hand-written classics pin the semantics (real-time order, unreturned operations,
equal timestamps); hypothesis runs a real dict under random interleavings, where
each operation takes effect at a random instant within its call and return, and
checks the checker against those executions, against itself per key, and against
brute force on small histories.
"""

import itertools
import random
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.property.linearizability import (
    UNKNOWN,
    CheckResult,
    Operation,
    check,
    check_partitioned,
    kv_model,
    register_model,
)

KV = kv_model()
NEVER_WRITTEN = "never-written"  # generated values start with p, a or c


def op(client, call, ret, *input, out=None):
    return Operation(client, call, ret, tuple(input), out)


def both(history, model=KV) -> list[CheckResult]:
    return [check(history, model), check_partitioned(history, model)]


def assert_witness(history, result, model=KV):
    """The witness places every returned op once, respects real time and the model."""
    assert result.ok, result.explanation
    order = result.linearization
    placed = [id(o) for o in order]
    assert len(set(placed)) == len(placed)
    assert {id(o) for o in history if o.ret is not None} <= set(placed) <= {id(o) for o in history}
    for earlier, later in itertools.combinations(order, 2):
        assert not (later.ret is not None and later.ret < earlier.call), (earlier, later)
    state = model.init()
    for o in order:
        legal, state = model.step(state, o.input, UNKNOWN if o.ret is None else o.output)
        assert legal, o


# --- hand-written histories -----------------------------------------------------------------


def test_a_sequential_history_is_linearizable_in_its_own_order():
    h = [op(0, 0, 1, "put", "x", 1), op(1, 2, 3, "get", "x", out=1),
         op(0, 4, 5, "append", "x", 2), op(1, 6, 7, "get", "x", out=3),
         op(2, 8, 9, "get", "y", out=None)]
    for result in both(h):
        assert_witness(h, result)
        assert result.linearization == h


@pytest.mark.parametrize("seen", [None, 1])
def test_a_read_concurrent_with_a_write_may_see_either_value(seen):
    h = [op(0, 0, 10, "put", "x", 1), op(1, 1, 2, "get", "x", out=seen)]
    for result in both(h):
        assert_witness(h, result)


def test_a_stale_read_after_a_completed_write_is_rejected_and_named():
    stale = op(2, 4, 5, "get", "x", out=1)
    h = [op(0, 0, 1, "put", "x", 1), op(1, 2, 3, "put", "x", 2), stale]
    for result in both(h):
        assert not result.ok and not result.timed_out
        assert result.linearization is None
        assert f"Stuck at #2 {stale}" in result.explanation
        assert "put('x', 2)" in result.explanation and "{'x': 2}" in result.explanation


def test_new_old_inversion_is_rejected():
    # Two reads during one write: the first sees the new value, a later one the old.
    old = op(2, 3, 4, "read", out=None)
    h = [op(0, 0, 10, "write", 1), op(1, 1, 2, "read", out=1), old]
    result = check(h, register_model())
    assert not result.ok
    assert f"Stuck at #2 {old}" in result.explanation
    # The same reads overlapping each other are fine: the old one goes first.
    overlapping = [*h[:2], op(2, 1.5, 4, "read", out=None)]
    assert_witness(overlapping, check(overlapping, register_model()), register_model())


def test_a_read_of_a_value_never_written_is_rejected():
    bogus = op(1, 2, 3, "get", "x", out=42)
    h = [op(0, 0, 1, "put", "x", 1), bogus]
    for result in both(h):
        assert not result.ok and str(bogus) in result.explanation


def test_concurrent_cas_lets_exactly_one_win():
    winner = op(0, 0, 5, "cas", "x", None, 1, out=True)
    loser = op(1, 1, 6, "cas", "x", None, 2, out=False)
    read = op(2, 7, 8, "get", "x", out=1)
    h = [winner, loser, read]
    for result in both(h):
        assert_witness(h, result)
        assert result.linearization.index(winner) < result.linearization.index(loser)
    two_winners = [winner, op(1, 1, 6, "cas", "x", None, 2, out=True), read]
    assert not any(r.ok for r in both(two_winners))
    nobody_won = [op(0, 0, 5, "cas", "x", None, 1, out=False)]
    assert not any(r.ok for r in both(nobody_won))


def test_a_failed_cas_must_have_seen_another_value():
    h = [op(0, 0, 1, "put", "x", "a"), op(1, 2, 3, "cas", "x", "a", "b", out=False)]
    assert not any(r.ok for r in both(h))
    h_concurrent = [op(9, 1.5, 4, "put", "x", "z"), *h]
    for result in both(h_concurrent):
        assert_witness(h_concurrent, result)


def test_append_order_follows_the_linearization():
    h = [op(0, 0, 5, "append", "x", "a"), op(1, 0, 5, "append", "x", "b")]
    for seen in ("ab", "ba"):
        history = [*h, op(2, 6, 7, "get", "x", out=seen)]
        assert all(r.ok for r in both(history))
    impossible = [*h, op(2, 6, 7, "get", "x", out="aa")]
    assert not any(r.ok for r in both(impossible))


@pytest.mark.parametrize("seen", [None, 1])
def test_an_unreturned_write_may_or_may_not_have_taken_effect(seen):
    lost = op(0, 0, None, "put", "x", 1, out="ignored")
    h = [lost, op(1, 5, 6, "get", "x", out=seen)]
    for result in both(h):
        assert_witness(h, result)
        assert (lost in result.linearization) == (seen == 1)


def test_an_unreturned_write_may_take_effect_long_after_its_client_gave_up():
    h = [op(0, 0, None, "put", "x", 1), op(1, 1, 2, "get", "x", out=None),
         op(1, 100, 101, "get", "x", out=1)]
    for result in both(h):
        assert_witness(h, result)


def test_unreturned_writes_may_take_effect_in_the_opposite_order_of_their_calls():
    h = [op(0, 0, None, "put", "x", 2), op(1, 1, None, "put", "x", 1),
         op(2, 5, 6, "get", "x", out=1), op(2, 7, 8, "get", "x", out=2)]
    for result in both(h):
        assert_witness(h, result)
        assert result.linearization == [h[1], h[2], h[0], h[3]]


def test_an_unreturned_write_cannot_be_undone():
    later_old = op(1, 7, 8, "get", "x", out=None)
    h = [op(0, 0, None, "put", "x", 1), op(1, 5, 6, "get", "x", out=1), later_old]
    for result in both(h):
        assert not result.ok and str(later_old) in result.explanation


def test_equal_return_and_call_times_overlap_but_any_gap_orders_them():
    write = op(0, 0, 5, "put", "x", 1)
    assert all(r.ok for r in both([write, op(1, 5, 6, "get", "x", out=None)]))
    assert not any(r.ok for r in both([write, op(1, 5.001, 6, "get", "x", out=None)]))


def test_partitioned_witness_interleaves_keys_in_real_time_order():
    h = [op(0, 0, 1, "put", "x", 1), op(1, 2, 3, "put", "y", 1),
         op(0, 4, 5, "get", "x", out=1), op(1, 0.5, 6, "get", "y", out=1)]
    result = check_partitioned(h, KV)
    assert_witness(h, result)
    assert result.linearization[:2] == h[:2]


def test_partitioned_failure_names_the_key_and_uses_history_positions():
    bogus = op(1, 2, 3, "get", "y", out=7)
    h = [op(0, 0, 1, "put", "x", 1), op(0, 0, 1, "put", "y", 1), bogus]
    result = check_partitioned(h, KV)
    assert result.explanation.startswith("key 'y': not linearizable")
    assert f"#2 {bogus}" in result.explanation


def test_a_search_that_runs_out_of_time_says_it_is_inconclusive():
    # Many unreturned writes that may each land anywhere, then an impossible read.
    h = [op(c, 0, None, "put", "x", c) for c in range(16)]
    h.append(op(99, 1, 2, "get", "x", out=NEVER_WRITTEN))
    result = check(h, KV, timeout_s=0)
    assert not result.ok and result.timed_out
    assert result.explanation.startswith("inconclusive")


def test_malformed_histories_are_refused_with_the_reason():
    with pytest.raises(ValueError, match="returns before it is called"):
        check([op(0, 5, 4, "get", "x")], KV)
    with pytest.raises(ValueError, match="unknown operation"):
        check([op(0, 0, 1, "delete", "x")], KV)


# --- generated executions -------------------------------------------------------------------


@st.composite
def executions(draw, max_ops=30, keys=("x", "y", "z"), unreturned_one_in=8):
    """A real run of a dict: each op takes effect at an instant in [call, ret].

    Clients issue ops one after another on an integer clock (so equal times are
    common); about one op in unreturned_one_in never returns and may take effect at
    any later instant, or never.
    """
    n_clients = draw(st.integers(1, 5))
    free_at = [0] * n_clients
    plans, written = [], [None]
    for i in range(draw(st.integers(1, max_ops))):
        client = draw(st.integers(0, n_clients - 1))
        kind = draw(st.sampled_from(["get", "get", "put", "append", "cas"]))
        key = draw(st.sampled_from(keys))
        args = {"get": (), "put": (f"p{i}",), "append": (f"a{i}",),
                "cas": (draw(st.sampled_from(written)), f"c{i}")}[kind]
        written.extend(v for v in args if v is not None)
        call = free_at[client] + draw(st.integers(0, 3))
        ret = call + draw(st.integers(0, 6))
        effect = draw(st.integers(call, ret))
        if draw(st.integers(1, unreturned_one_in)) == 1:
            effect = draw(st.none() | st.integers(call, call + 40))
            free_at[client], ret = ret, None
        else:
            free_at[client] = ret
        plans.append((effect, i, client, call, ret, (kind, key, *args)))
    return draw(st.permutations(_run(plans)))


def _run(plans):
    """Apply the effects in time order to a dict and record what each client saw."""
    values, history = {}, []
    for effect, _, client, call, ret, input in sorted(plans, key=lambda p: (p[0] is None, p)):
        output = None if effect is None else _execute(values, input)
        history.append(Operation(client, call, ret, input, output if ret is not None else None))
    return history


def _execute(values, input):
    """The sequential specification, on a plain dict."""
    kind, key, *args = input
    if kind == "get":
        return values.get(key)
    if kind == "put":
        values[key] = args[0]
    elif kind == "append":
        values[key] = values.get(key, "") + args[0]
    elif values.get(key) == args[0]:
        values[key] = args[1]
        return True
    return False if kind == "cas" else None


def _gets(history):
    return [i for i, o in enumerate(history) if o.input[0] == "get" and o.ret is not None]


FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(executions())
def test_real_executions_are_accepted(history):
    assert_witness(history, check(history, KV))
    assert_witness(history, check_partitioned(history, KV))


@FAST
@given(executions(), st.data())
def test_a_read_of_a_never_written_value_is_always_rejected(history, data):
    gets = _gets(history)
    if gets:
        i = data.draw(st.sampled_from(gets))
        bad = Operation(history[i].client, history[i].call, history[i].ret, history[i].input,
                        NEVER_WRITTEN)
        history = [*history[:i], bad, *history[i + 1:]]
    else:
        end = max(o.ret or o.call for o in history) + 1
        bad = Operation(99, end, end + 1, ("get", "x"), NEVER_WRITTEN)
        history = [*history, bad]
    for result in both(history):
        assert not result.ok and not result.timed_out
        assert str(bad) in result.explanation


@st.composite
def perturbed(draw, max_ops=30, unreturned_one_in=8):
    """A real execution where some reads return another written value (often stale)."""
    history = draw(executions(max_ops, unreturned_one_in=unreturned_one_in))
    written = [None] + [v for o in history for v in o.input[2:] if v is not None]
    for i in draw(st.lists(st.sampled_from(_gets(history)), max_size=3) if _gets(history)
                  else st.just([])):
        o = history[i]
        history[i] = Operation(o.client, o.call, o.ret, o.input, draw(st.sampled_from(written)))
    return history


@FAST
@given(perturbed())
def test_check_and_check_partitioned_agree(history):
    whole, per_key = both(history)
    assert whole.ok == per_key.ok
    if whole.ok:
        assert_witness(history, whole)
        assert_witness(history, per_key)


def brute_force(history, model) -> bool:
    """Try every subset of unreturned ops and every order: the definition, literally."""
    returned = [o for o in history if o.ret is not None]
    unreturned = [o for o in history if o.ret is None]
    for k in range(len(unreturned) + 1):
        for chosen in itertools.combinations(unreturned, k):
            for order in itertools.permutations(returned + list(chosen)):
                if _respects_real_time(order) and _model_accepts(order, model):
                    return True
    return False


def _respects_real_time(order):
    return all(not (b.ret is not None and b.ret < a.call)
               for a, b in itertools.combinations(order, 2))


def _model_accepts(order, model):
    state = model.init()
    for o in order:
        legal, state = model.step(state, o.input, UNKNOWN if o.ret is None else o.output)
        if not legal:
            return False
    return True


@settings(max_examples=300, deadline=None)
@given(perturbed(max_ops=6, unreturned_one_in=3))
def test_check_agrees_with_brute_force_on_small_histories(history):
    assert check(history, KV).ok == brute_force(history, KV)


# --- size -----------------------------------------------------------------------------------


def _random_execution(seed, n_ops=200, n_clients=5, keys=("x", "y", "z", "w")):
    rng = random.Random(seed)
    free_at, plans = [0] * n_clients, []
    for i in range(n_ops):
        client = rng.randrange(n_clients)
        kind = rng.choice(["get", "get", "put", "append", "cas"])
        args = {"get": (), "put": (f"p{i}",), "append": (f"a{i}",),
                "cas": (rng.choice([None, f"p{i - 1}"]), f"c{i}")}[kind]
        call = free_at[client] + rng.randint(0, 3)
        ret = call + rng.randint(1, 8)
        effect = rng.randint(call, ret)
        if rng.random() < 0.05:
            effect, ret = rng.choice([None, call + rng.randint(0, 30)]), None
        free_at[client] = call + 8 if ret is None else ret
        plans.append((effect, i, client, call, ret, (kind, rng.choice(keys), *args)))
    return _run(plans)


def test_two_hundred_operations_over_five_clients_check_quickly():
    histories = [_random_execution(seed) for seed in range(5)]
    started = time.monotonic()
    for history in histories:
        assert_witness(history, check_partitioned(history, KV))
        i = _gets(history)[len(_gets(history)) // 2]
        bad = Operation(0, history[i].call, history[i].ret, history[i].input, NEVER_WRITTEN)
        history[i] = bad
        result = check_partitioned(history, KV)
        assert not result.ok and not result.timed_out and str(bad) in result.explanation
    assert time.monotonic() - started < 5, "the search has lost its memoisation"
