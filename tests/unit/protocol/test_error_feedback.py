"""Error feedback: the transmitted sum tracks the true sum; float32 leaves no residual."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from protocol.codecs import decode, parse_codec_arg
from protocol.error_feedback import compress_with_feedback
from protocol.errors import ProtocolError, Reason
from tests.unit.protocol.codec_cases import SHORTHANDS, SPECS

N, ROUNDS = 2000, 200


def deltas(seed: int) -> list[np.ndarray[Any, Any]]:
    rng = np.random.default_rng(seed)
    layer_scale = np.repeat(10.0 ** rng.uniform(-4, -2, size=4), N // 4)  # (N,)
    return [(rng.laplace(0, 1, N) * layer_scale).astype(np.float32) for _ in range(ROUNDS)]


@pytest.mark.parametrize("spec", SPECS, ids=SHORTHANDS)
def test_transmitted_sum_tracks_true_sum(spec: dict[str, Any]) -> None:
    true_sum = np.zeros(N)
    sent_sum = np.zeros(N)
    plain_sum = np.zeros(N)  # the same codec without feedback, for comparison
    residual = None
    peaks = []
    for d in deltas(0):
        payload, residual = compress_with_feedback(d, residual, spec)
        true_sum += d
        sent_sum += decode(payload, spec, N)
        plain_sum += decode(compress_with_feedback(d, None, spec)[0], spec, N)
        peaks.append(float(np.abs(residual).max()))
    assert residual is not None
    # telescoping: sum(sent) = sum(true) - residual_T, up to float32 rounding of each round
    assert np.allclose(sent_sum + residual, true_sum, rtol=0, atol=1e-5)
    # the residual stays bounded: no growth from the second quarter to the second half
    assert max(peaks[100:]) <= 1.5 * max(peaks[50:100]) + 1e-12
    largest = max(float(np.abs(d).max()) for d in deltas(0))
    assert max(peaks) <= largest / spec.get("fraction", 1.0)
    # feedback never makes the accumulated error worse, and keeps it small
    err = np.linalg.norm(sent_sum - true_sum) / np.linalg.norm(true_sum)
    plain = np.linalg.norm(plain_sum - true_sum) / np.linalg.norm(true_sum)
    assert err <= plain + 1e-9
    assert err < 0.25


@pytest.mark.parametrize("shorthand", ["float32", "float32+zlib", "topk:1.0+float32"])
def test_float32_residual_is_exactly_zero(shorthand: str) -> None:
    spec = parse_codec_arg(shorthand)
    residual = None
    for d in deltas(1)[:20]:
        payload, residual = compress_with_feedback(d, residual, spec)
        assert np.array_equal(decode(payload, spec, N), d)
        assert not residual.any()


def test_residual_is_added_before_encoding() -> None:
    spec = parse_codec_arg("topk:0.5+float32")  # k = 1 of 2
    payload, residual = compress_with_feedback(
        np.array([1.0, 0.5], dtype=np.float32), np.array([0.0, 0.75], dtype=np.float32), spec
    )
    # corrected = [1.0, 1.25]: the residual made element 1 the largest
    assert decode(payload, spec, 2).tolist() == [0.0, 1.25]
    assert residual.tolist() == [1.0, 0.0]


@pytest.mark.parametrize(
    ("delta", "residual", "reason"),
    [
        (np.zeros(4, np.float32), np.zeros(5, np.float32), Reason.SHAPE),
        (np.zeros(4, np.float32), np.zeros(4, np.float64), Reason.DTYPE),
        (np.zeros((2, 2), np.float32), None, Reason.SHAPE),
        (np.zeros(4, np.float64), None, Reason.DTYPE),
    ],
)
def test_mismatched_inputs_are_refused(
    delta: np.ndarray[Any, Any], residual: np.ndarray[Any, Any] | None, reason: Reason
) -> None:
    with pytest.raises(ProtocolError) as info:
        compress_with_feedback(delta, residual, {"name": "int8"})
    assert info.value.reason is reason


def test_overflowing_correction_is_refused_as_non_finite() -> None:
    big = np.full(3, np.finfo(np.float32).max, dtype=np.float32)
    with pytest.raises(ProtocolError) as info:
        compress_with_feedback(big, big, {"name": "int8"})
    assert info.value.reason is Reason.NON_FINITE
