"""Round result -> ClientUpdate with error feedback, checked with hand-computed numbers."""

from __future__ import annotations

import numpy as np

from agent.trainer import TrainResult
from agent.update import build_update
from protocol.codecs import parse_codec_arg
from protocol.messages import decode_vector
from tests.unit.agent.fakes import MANIFEST, make_offer

N = MANIFEST.num_params  # 15


def result(weights: np.ndarray, samples: int = 80, stopped: bool = False) -> TrainResult:
    return TrainResult(weights, 10, samples, 0.5, stopped, 0.01)


def test_float16_residual_is_what_the_codec_dropped() -> None:
    base = np.full(N, 1.0, np.float32)
    trained = np.full(N, 1.1, np.float32)  # delta = float32(1.1) - 1 = 0.10000002384185791
    update, residual = build_update(
        offer=make_offer(7), base=base, result=result(trained), residual=np.zeros(N, np.float32),
        codec=parse_codec_arg("float16"), device_id="dev-1", seq=3, num_local=40,
    )  # fmt: skip
    sent = decode_vector(update.delta, MANIFEST)
    # float16 nearest to 0.10000002: 0.0999755859375 (= 1638 / 2**14); the rest is the residual.
    np.testing.assert_array_equal(sent, np.float32(0.0999755859375))
    np.testing.assert_allclose(residual, 0.10000002384185791 - 0.0999755859375, rtol=1e-4)
    assert (update.seq, update.base_version, update.device_id) == (3, 7, "dev-1")
    assert update.num_samples == 40  # 80 samples seen over repeated passes of 40 local examples
    assert update.metrics == {"loss": 0.5, "train_s": 0.01, "partial": 0.0}


def test_residual_is_added_to_the_next_delta() -> None:
    residual = np.zeros(N, np.float32)
    residual[0] = 0.25  # owed from an earlier round
    update, after = build_update(
        offer=make_offer(1), base=np.zeros(N, np.float32),
        result=result(np.zeros(N, np.float32), samples=8, stopped=True), residual=residual,
        codec=parse_codec_arg("float32"), device_id="dev-1", seq=1, num_local=40,
    )  # fmt: skip
    sent = decode_vector(update.delta, MANIFEST)
    assert sent[0] == 0.25 and not sent[1:].any()  # zero delta + residual: the debt is paid
    assert not after.any()  # float32 is exact: nothing owed any more
    assert update.num_samples == 8 and update.metrics["partial"] == 1.0


def test_a_dp_offer_makes_the_device_clip_and_the_clipped_mass_is_not_owed() -> None:
    import dataclasses

    from protocol.clipping import l2_norm

    offer = dataclasses.replace(make_offer(2), privacy={"epsilon": 1.0, "clip_norm": 0.5})
    trained = np.full(N, 1.0, np.float32)  # delta norm sqrt(15) ~ 3.9, far above C = 0.5
    residual = np.full(N, 0.2, np.float32)  # owed from before: would push the message further
    update, after = build_update(
        offer=offer, base=np.zeros(N, np.float32), result=result(trained), residual=residual,
        codec=parse_codec_arg("int8"), device_id="dev-1", seq=1, num_local=40,
    )  # fmt: skip
    sent = decode_vector(update.delta, MANIFEST)
    assert l2_norm(sent) <= 0.5  # after dequantisation too
    assert l2_norm(sent) > 0.49  # clipped, not zeroed
    assert l2_norm(after) < 0.01  # only int8's rounding is owed, not what clipping cut
