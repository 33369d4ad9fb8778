"""Erasure coding: any k of the k + m parts give the data back, lost parts are rebuilt
byte for byte, and damaged or foreign parts are set aside instead of decoded into garbage."""

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.chunk.erasure import BACKENDS, ErasureCoder, ErasureError, available_backends

SHAPES = [(2, 1), (3, 2), (4, 2)]
# Bytes of liberasurecode's 80-byte part header that no check covers and no decode reads:
# the library version that wrote it (63..66) and the padding at its end (71..79).
UNCHECKED = {*range(63, 67), *range(71, 80)}
CODERS = {shape: ErasureCoder(*shape) for shape in SHAPES}
sizes = st.one_of(st.sampled_from([0, 1, 2, 64 << 10, (64 << 10) + 1]),
                  st.integers(0, 300_000))


@st.composite
def coded(draw):
    """(coder, data, parts, indices of k parts to keep)."""
    coder = CODERS[draw(st.sampled_from(SHAPES))]
    data = random.Random(draw(st.integers(0, 2**32))).randbytes(draw(sizes))
    keep = draw(st.permutations(range(coder.k + coder.m)))[:coder.k]
    return coder, data, coder.encode(data), sorted(keep)


@settings(max_examples=120, deadline=None)
@given(coded())
def test_any_k_parts_decode_to_the_data(case):
    coder, data, parts, keep = case
    assert len(parts) == coder.k + coder.m
    assert coder.decode({i: parts[i] for i in keep}) == data


@settings(max_examples=120, deadline=None)
@given(coded())
def test_lost_parts_are_rebuilt_exactly(case):
    coder, _, parts, keep = case
    lost = [i for i in range(coder.k + coder.m) if i not in keep]
    random.Random(len(lost)).shuffle(lost)             # asked for in any order
    rebuilt = coder.reconstruct({i: parts[i] for i in keep}, lost)
    assert rebuilt == {i: parts[i] for i in lost}


@settings(max_examples=150, deadline=None)
@given(coded(), st.data())
def test_a_damaged_part_is_set_aside_never_decoded(case, draw):
    coder, data, parts, _ = case
    victim = draw.draw(st.integers(0, coder.k + coder.m - 1))
    damaged = bytearray(parts[victim])
    position = draw.draw(st.one_of(st.integers(0, 79), st.integers(0, len(damaged) - 1)))
    damaged[position] ^= draw.draw(st.integers(1, 255))
    everything = dict(enumerate(parts)) | {victim: bytes(damaged)}
    assert coder.decode(everything) == data            # k intact parts remain
    others = [i for i in range(coder.k + coder.m) if i != victim][:coder.k - 1]
    just_k = {i: everything[i] for i in [victim, *others]}
    if position in UNCHECKED:                          # carries nothing: still decodes right
        assert coder.decode(just_k) == data
    else:
        with pytest.raises(ErasureError, match=f"part {victim}"):
            coder.decode(just_k)


def test_too_few_parts_mislabelled_parts_and_bad_shapes_are_refused():
    coder = CODERS[(3, 2)]
    parts = coder.encode(b"some data" * 1000)
    with pytest.raises(ErasureError, match="needs 3 intact parts, got 2"):
        coder.decode({0: parts[0], 4: parts[4]})
    with pytest.raises(ErasureError, match="it is part 1, not part 2"):
        coder.decode({0: parts[0], 2: parts[1], 3: parts[3]})
    with pytest.raises(ErasureError, match="has parts 0..4"):
        coder.reconstruct(dict(enumerate(parts)), [5])
    with pytest.raises(ErasureError, match="at least 1"):
        ErasureCoder(3, 0)


def test_parts_of_one_backend_are_not_decoded_by_another():
    backends = available_backends()
    assert backends, f"pyeclib offers none of {BACKENDS}"
    if len(backends) < 2:
        pytest.skip("only one erasure-code backend is installed")
    first, second = (ErasureCoder(3, 2, backend=b) for b in backends[:2])
    parts = first.encode(b"x" * 5000)
    with pytest.raises(ErasureError, match=f"made by backend {first.backend}"):
        second.decode(dict(enumerate(parts)))
