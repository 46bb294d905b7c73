"""The fused ingest path against the path it replaced: bit-identical buffers and models.

Reference (the pre-fusion code, written out here): decode to a dense float32 vector, multiply by
the clip factor when it is not 1, then `buffer += delta * float32(weight)`. The fused path adds
straight from codes and scales (server/kernels/). Compared bit for bit (uint32 views).
The norm is computed differently (float64 from exact integer code sums instead of a float32 BLAS
dot), so it agrees to a stated tolerance: 1e-5 relative (float32 dot rounding on <= 4k values).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import codecs
from protocol.errors import ProtocolError, Reason
from server.admission import Admission, AdmissionLimits
from server.admitted import FusedDelta
from server.core import ServerCore
from server.ingest import payload_digest, same_payload
from server.kernels import fused
from server.kernels.fused import scale_delta, sq_norm
from server.optimizers import ServerOptimizer, make_optimizer
from server.staleness import make_staleness
from server.strategies import FedBuff
from tests.unit.protocol.codec_cases import SPECS
from tests.unit.server.factory import make_manifest, update_bytes


@contextmanager
def _path(kernel: bool) -> Iterator[None]:
    """Force the compiled kernels (True) or their numpy form (False) whatever the size."""
    saved = fused.KERNEL_MIN_VALUES
    fused.KERNEL_MIN_VALUES = 0 if kernel else 1 << 62
    try:
        yield
    finally:
        fused.KERNEL_MIN_VALUES = saved


def _bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, np.float32).view(np.uint32)


def _reference_add(buf: np.ndarray, payload: bytes, spec: dict[str, Any], n: int, clip: float,
                   weight: float) -> None:  # fmt: skip
    delta = scale_delta(codecs.decode(payload, spec, n), clip)
    buf += delta * np.float32(weight)


@settings(max_examples=150, deadline=None)
@given(
    spec=st.sampled_from(SPECS),
    n=st.integers(1, 700),
    seed=st.integers(0, 2**32 - 1),
    clip=st.sampled_from([1.0, 0.5, 0.123456789, 1e-3]),
    weight=st.floats(1e-3, 1e3),
    spread=st.sampled_from([1e-6, 1e-2, 1.0, 1e3]),
    kernel=st.booleans(),
)
def test_fused_add_is_bit_identical_to_decode_then_add(
    spec: dict[str, Any], n: int, seed: int, clip: float, weight: float, spread: float, kernel: bool
) -> None:
    rng = np.random.default_rng(seed)
    x = (rng.standard_t(3, n) * spread).astype(np.float32)  # (n,) heavy tails, mixed signs
    if spec["name"] == "float16" or spec.get("values", {}).get("name") == "float16":
        x = np.clip(x, -6e4, 6e4)
    payload = codecs.encode(x, spec)
    start = (rng.standard_normal(n) * spread).astype(np.float32)  # a buffer already in use
    ref, fused = start.copy(), start.copy()
    _reference_add(ref, payload, spec, n, clip, weight)
    with _path(kernel):
        FusedDelta(codecs.decode_parts(payload, spec, n), clip).add_into(fused, np.float32(weight))
    np.testing.assert_array_equal(_bits(fused), _bits(ref))


@settings(max_examples=100, deadline=None)
@given(
    spec=st.sampled_from(SPECS),
    n=st.integers(1, 4000),
    seed=st.integers(0, 2**32 - 1),
    kernel=st.booleans(),
)
def test_norm_from_codes_matches_dense_norm(
    spec: dict[str, Any], n: int, seed: int, kernel: bool
) -> None:
    x = np.random.default_rng(seed).standard_normal(n).astype(np.float32)
    payload = codecs.encode(x, spec)
    dense = codecs.decode(payload, spec, n)
    with _path(kernel):
        fused = np.sqrt(sq_norm(codecs.decode_parts(payload, spec, n)))
    exact = np.sqrt(np.sum(dense.astype(np.float64) ** 2))
    # float64 from exact code sums vs float32-rounded products q * s: rel 2**-24 per product
    assert fused == pytest.approx(exact, rel=1e-7, abs=1e-30)
    assert fused == pytest.approx(float(np.linalg.norm(dense)), rel=1e-5, abs=1e-30)


@pytest.mark.parametrize("kernel", [True, False])
def test_norm_of_int8_by_hand(kernel: bool) -> None:
    spec = codecs.parse_codec_arg("int8:2")
    x = np.array([127.0, -127.0, 0.0, 63.5], np.float32)  # scales 1.0 and 0.5 exactly
    parts = codecs.decode_parts(codecs.encode(x, spec), spec, 4)
    assert parts.codes is not None and parts.scales is not None
    assert parts.scales.tolist() == [1.0, 0.5]
    assert parts.codes.tolist() == [127, -127, 0, 127]
    with _path(kernel):
        assert sq_norm(parts) == 127.0**2 * 2 + 63.5**2


def test_add_into_refuses_a_wrong_buffer() -> None:
    spec = codecs.parse_codec_arg("int8")
    parts = codecs.decode_parts(codecs.encode(np.ones(8, np.float32), spec), spec, 8)
    with pytest.raises(ValueError, match="contiguous"):
        FusedDelta(parts).add_into(np.zeros(8, np.float64), np.float32(1))
    with pytest.raises(ValueError, match="contiguous"):
        FusedDelta(parts).add_into(np.zeros(16, np.float32)[::2], np.float32(1))


@pytest.mark.parametrize(
    "codec", ["int8", "topk:0.2+int8", "float16", "topk:0.3+float32+zlib", "topk:0.05+int8"]
)
@pytest.mark.parametrize("max_norm", [None, 0.05])
@pytest.mark.parametrize("kernel", [True, False])
@pytest.mark.parametrize(("momentum", "lr"), [(0.5, 1.0), (0.0, 1.0), (0.0, 0.7)])
def test_fedbuff_model_is_bit_identical_fused_or_dense(
    codec: str, max_norm: float | None, kernel: bool, momentum: float, lr: float
) -> None:
    """Same updates through admission, then FedBuff with the fused contribution or the dense
    AdmittedUpdate: identical model bits after several flushes (K=3), clipped or not, for sgd
    (server lr 1 skips its multiply) and momentum."""
    m = make_manifest(300)
    spec = codecs.parse_codec_arg(codec)
    rng = np.random.default_rng(7)
    admission = Admission(m, AdmissionLimits(max_norm=max_norm, max_staleness=None))
    runs = {}
    for mode in ("fused", "dense"):
        strat = FedBuff(
            buffer_size=3,
            server_lr=lr,
            momentum=momentum,
            staleness=make_staleness("polynomial", {"a": 0.5}),
        )
        model, version = np.zeros(300, np.float32), 0
        rng = np.random.default_rng(7)
        seqs: dict[str, tuple[int, str]] = {}
        for i in range(10):
            delta = (rng.standard_normal(300) * 0.01).astype(np.float32)
            payload = update_bytes(m, delta, seq=i + 1, base=max(0, version - i % 2), codec=spec)
            a = admission.admit("dev-1", payload, version=version, sequences=seqs, strategy=strat)
            seqs["dev-1"] = (a.fused.seq, a.digest)
            if mode == "fused":
                with _path(kernel):
                    r = strat.apply_contribution(model, version, a.fused)
            else:
                r = strat.apply(model, version, a.update)
            model, version = r.model, r.version
        runs[mode] = (model, version)
    assert runs["fused"][1] == runs["dense"][1] == 3
    np.testing.assert_array_equal(_bits(runs["fused"][0]), _bits(runs["dense"][0]))
    assert np.abs(runs["fused"][0]).max() > 0


def test_replay_after_restart_reproduces_the_fused_model(tmp_path: Path) -> None:
    """Live (fused, clipped) and recovered-from-log models agree bit for bit."""
    m = make_manifest(200)
    rng = np.random.default_rng(3)
    limits = AdmissionLimits(max_norm=0.01, max_staleness=None)

    def fedbuff() -> FedBuff:
        return FedBuff(buffer_size=4, staleness=make_staleness("polynomial", {"a": 0.5}))

    core = ServerCore(m, np.zeros(200, np.float32), fedbuff(), tmp_path, limits)
    core.recover()
    for i in range(11):
        delta = (rng.standard_normal(200) * 0.01).astype(np.float32)
        payload = update_bytes(m, delta, seq=i + 1, codec=codecs.parse_codec_arg("topk:0.1+int8"))
        assert core.handle("dev-1", payload).ack.accepted
    live, version = core.model.copy(), core.version
    core.close()
    again = ServerCore(m, np.zeros(200, np.float32), fedbuff(), tmp_path, limits)
    again.recover()
    assert again.version == version == 2
    np.testing.assert_array_equal(_bits(again.model), _bits(live))
    again.close()


def test_payload_digest_tells_redelivery_from_a_different_update() -> None:
    m = make_manifest(20_000)
    x = np.random.default_rng(1).standard_normal(20_000).astype(np.float32)
    first = update_bytes(m, x, codec=codecs.parse_codec_arg("int8"))
    y = x.copy()
    y[0] += 1.0  # changes the first chunk's scale: inside the first 4 KiB
    other = update_bytes(m, y, codec=codecs.parse_codec_arg("int8"))
    z = x.copy()
    z[-1] = 50.0  # changes the last chunk's scale and code: inside the last 4 KiB
    last = update_bytes(m, z, codec=codecs.parse_codec_arg("int8"))
    assert len(first) == len(other) == len(last) > 2 * 4096
    digest = payload_digest(first)
    assert digest.startswith("h") and same_payload(bytes(first), digest)
    assert not same_payload(other, digest) and not same_payload(last, digest)


def test_same_payload_reads_digests_logged_before_the_cheap_identity() -> None:
    import zlib

    payload = b"\x01" * 10_000
    legacy = f"{len(payload):x}-{zlib.crc32(payload):08x}"
    assert same_payload(payload, legacy)
    assert not same_payload(b"\x02" * 10_000, legacy)


def test_core_takes_schema_2_and_refuses_its_hostile_payloads_with_reasons(tmp_path: Path) -> None:
    from protocol.errors import Reason
    from protocol.messages import ClientUpdate, EncodedVector
    from protocol.update_header import encode_update_compact

    m = make_manifest(200)
    core = ServerCore(m, np.zeros(200, np.float32), FedBuff(buffer_size=1), tmp_path)
    core.recover()
    spec = codecs.parse_codec_arg("topk:0.1+int8")
    x = np.random.default_rng(0).standard_normal(200).astype(np.float32)

    def message(seq: int, payload: bytes, length: int = 200) -> bytes:
        vec = EncodedVector(spec, payload, length)
        return encode_update_compact(ClientUpdate(m.model_id, 0, "dev-1", seq, 5, 1, vec, {}))

    good = codecs.encode(x, spec)
    ok = core.handle("dev-1", message(1, good))
    assert ok.ack.accepted and core.version == 1
    expected = codecs.decode(good, spec, 200)
    np.testing.assert_array_equal(core.model, expected)  # K=1, lr 1: model = the delta
    cases = {
        Reason.CODEC: message(2, good[:-1]),  # payload one byte short for its spec and length
        Reason.SHAPE: message(2, good, length=199),  # length disagrees with the manifest
        Reason.NON_FINITE: message(
            2, good[: len(good) - 20 - 4] + np.float32("inf").tobytes() + good[-20:]
        ),  # the value section's scale (4 bytes before the 20 int8 codes) set to infinity
        Reason.REPLAY: message(1, codecs.encode(x * 2, spec)),  # seq 1 again, different update
    }
    for reason, data in cases.items():
        out = core.handle("dev-1", data)
        assert not out.ack.accepted and out.ack.reason is reason, (reason, out.ack.detail)
    redelivered = core.handle("dev-1", message(1, good))  # QoS 1 redelivery: acked, not reapplied
    assert redelivered.ack.accepted and core.version == 1
    np.testing.assert_array_equal(core.model, expected)
    core.close()


def test_small_updates_do_not_import_numba() -> None:
    """The demo, the simulator and small fleets never pay numba's start-up (seconds)."""
    import subprocess
    import sys

    code = (
        "import sys, numpy as np\n"
        "from protocol import codecs\n"
        "from server.admitted import FusedDelta\nfrom server.kernels.fused import sq_norm\n"
        "spec = codecs.parse_codec_arg('topk:0.1+int8')\n"
        "x = np.ones(9610, np.float32)\n"
        "p = codecs.decode_parts(codecs.encode(x, spec), spec, 9610)\n"
        "sq_norm(p); FusedDelta(p, 0.5).add_into(np.zeros(9610, np.float32), np.float32(1))\n"
        "print('numba' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_warm_up_leaves_numba_unloaded_for_a_model_the_kernels_never_see() -> None:
    import subprocess
    import sys

    code = (
        "import sys; from server.kernels.fused import KERNEL_MIN_VALUES, warm_up; "
        "warm_up(KERNEL_MIN_VALUES - 1); print('numba' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert done.stdout.strip() == "False"


def _index_outcome(payload: bytes, spec: dict[str, Any], n: int, kernel: bool) -> Any:
    """The decoded topk positions, or the refusal's reason, through either index decoder."""
    with _path(kernel):
        decoder = fused.index_decoder(n)
    assert (decoder is not None) == kernel
    try:
        parts = codecs.decode_parts(payload, spec, n, index_decoder=decoder)
    except ProtocolError as exc:
        return exc.reason
    assert parts.index is not None
    return parts.index.tolist()


@settings(max_examples=400, deadline=None)
@given(
    n=st.integers(1, 3000),
    fraction=st.sampled_from([0.001, 0.01, 0.1, 0.5, 1.0]),
    seed=st.integers(0, 2**32 - 1),
    edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=4),
)
def test_compiled_index_decoder_accepts_and_refuses_exactly_what_numpy_does(
    n: int, fraction: float, seed: int, edits: list[tuple[int, int]]
) -> None:
    """Valid top-k payloads and hostile edits of their varint section (truncated, over-long,
    6-byte, zero gaps, gaps past the end): the same positions or the same refusal."""
    spec = codecs.parse_codec_arg(f"topk:{fraction}+float16")
    x = np.random.default_rng(seed).standard_normal(n).astype(np.float32)  # (n,)
    payload = bytearray(codecs.encode(x, spec))
    k = codecs.topk_count(fraction, n)
    index_bytes = len(payload) - 2 * k  # float16 values follow the varints
    for at, value in edits:
        payload[at % index_bytes] = value
    numpy_way = _index_outcome(bytes(payload), spec, n, kernel=False)
    assert _index_outcome(bytes(payload), spec, n, kernel=True) == numpy_way


@pytest.mark.parametrize(
    ("varints", "why"),
    [
        (b"\x01\x82", "truncated"),  # ends on a continuation byte
        (b"\x01\x01\x01", "number"),  # three varints where k = 2
        (b"\x81\x80\x80\x80\x80\x00", "longer"),  # six bytes
        (b"\x01\x80\x00", "over-long"),  # a multi-byte varint ending in a zero group
        (b"\x01\x00", "duplicate"),  # a zero gap after the first
        (b"\x0a\x01", "gap"),  # the first gap is already past n = 10
        (b"\x05\x05", "out of range"),  # 5 + 5 = 10 = n
    ],
)
def test_compiled_index_decoder_names_each_refusal(varints: bytes, why: str) -> None:
    with _path(True):
        decoder = fused.index_decoder(10)
    assert decoder is not None
    with pytest.raises(ProtocolError, match=why) as refused:
        decoder(memoryview(varints), 2, 10)
    assert refused.value.reason is Reason.CODEC
    assert decoder(memoryview(b"\x03\x06"), 2, 10).tolist() == [3, 9]  # by hand: 3, 3 + 6


def test_a_defence_without_rows_keeps_the_fused_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """A robust defence that aggregates by the mean (norm bound, one update per device) needs
    only each update's norm: FedBuff must not expand the delta, and the bound must see the norm
    the dense vector has."""
    from server.robust import Aggregator, RobustConfig

    m = make_manifest(300)
    spec = codecs.parse_codec_arg("topk:0.2+int8")
    robust = RobustConfig(aggregator=Aggregator.MEAN, norm_warmup=1)
    strat = FedBuff(buffer_size=4, robust=robust)
    admission = Admission(m, AdmissionLimits(max_norm=None, max_staleness=None))

    def no_expansion(self: FusedDelta) -> np.ndarray:
        raise AssertionError("the delta was expanded to a dense vector")

    monkeypatch.setattr(FusedDelta, "dense", no_expansion)
    model, version = np.zeros(300, np.float32), 0
    rng = np.random.default_rng(3)
    seqs: dict[str, tuple[int, str]] = {}
    dense_norms = []
    for i in range(4):
        delta = (rng.standard_normal(300) * 0.01).astype(np.float32)
        device = f"dev-{i}"
        payload = update_bytes(m, delta, device=device, codec=spec)
        a = admission.admit(device, payload, version=version, sequences=seqs, strategy=strat)
        dense_norms.append(float(np.linalg.norm(codecs.decode(payload_delta(payload), spec, 300))))
        result = strat.apply_contribution(model, version, a.fused)
        model, version = result.model, result.version
    assert version == 1 and np.abs(model).max() > 0
    bound = strat.defence.norm_bound if strat.defence else None
    assert bound is not None
    np.testing.assert_allclose(sorted(bound.state_dict()), sorted(dense_norms), rtol=1e-6)


def payload_delta(payload: bytes) -> bytes:
    from protocol.update_header import decode_any_update

    return bytes(decode_any_update(payload).delta.data)


@pytest.mark.parametrize("codec", ["int8", "topk:0.01+int8"])
@pytest.mark.parametrize("lr", [1.0, 0.7])
def test_one_pass_sgd_flush_is_bit_identical_to_divide_step_refill(
    codec: str, lr: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FedBuff's flush through the optimiser's fused step (x + lr * S / W, S zeroed in the same
    compiled pass) on a kernel-sized model: the same model bits, flush after flush, as the
    divide + optimizer step + refill written out here."""

    def divide_step_refill(
        self: ServerOptimizer, x: np.ndarray, total: np.ndarray, weight: float
    ) -> np.ndarray:
        g = np.divide(total, np.float32(weight), out=total)
        new = self.step(x, g)
        total.fill(0.0)
        return new

    m = make_manifest(fused.KERNEL_MIN_VALUES + 100)
    n, spec = m.num_params, codecs.parse_codec_arg(codec)
    admission = Admission(m, AdmissionLimits(max_staleness=None))
    payloads = [
        update_bytes(m, np.random.default_rng(i).standard_normal(n).astype(np.float32) * 0.01,
                     device=f"d{i % 4}", seq=i + 1, codec=spec)
        for i in range(9)
    ]  # fmt: skip
    runs = {}
    for mode in ("one-pass", "general"):
        if mode == "general":
            monkeypatch.setattr(ServerOptimizer, "step_from_sum", divide_step_refill)
        strat = FedBuff(buffer_size=4, server_lr=lr)
        model, version, seqs = np.zeros(n, np.float32), 0, {}
        for i, payload in enumerate(payloads):
            dev = f"d{i % 4}"
            a = admission.admit(dev, payload, version=version, sequences=seqs, strategy=strat)
            seqs[dev] = (a.fused.seq, a.digest)
            r = strat.apply_contribution(model, version, a.fused)
            model, version = r.model, r.version
        runs[mode] = (model, version, strat.server_optimizer.steps)
    assert runs["one-pass"][1:] == runs["general"][1:] == (2, 2)
    np.testing.assert_array_equal(_bits(runs["one-pass"][0]), _bits(runs["general"][0]))
    assert np.abs(runs["one-pass"][0]).max() > 0


@pytest.mark.parametrize("name", ["sgd", "avgm", "adam"])
@pytest.mark.parametrize("kernel", [True, False])
def test_the_optimisers_step_from_a_sum_is_its_step_on_the_mean_and_zeroes_the_sum(
    name: str, kernel: bool
) -> None:
    """`step_from_sum` (the fused step the optimiser owns) against dividing and calling `step`,
    bit for bit over three steps, compiled pass or numpy; the sum comes back zeroed."""
    n = 300
    rng = np.random.default_rng(7)
    fast, slow = (
        make_optimizer(name, lr=0.7),
        make_optimizer(name, lr=0.7),
    )
    x_fast = x_slow = rng.standard_normal(n).astype(np.float32)
    for _ in range(3):
        total = rng.standard_normal(n).astype(np.float32)
        expected_g = total / np.float32(3.0)
        with _path(kernel):
            x_fast = fast.step_from_sum(x_fast, total, 3.0)
        x_slow = slow.step(x_slow, expected_g)
        assert not total.any()
    assert fast.steps == slow.steps == 3
    np.testing.assert_array_equal(_bits(x_fast), _bits(x_slow))
