"""Why a secure-aggregation step was refused or a cohort abandoned.

`SecAggError` is a `FleetlearnError` (protocol/errors.py); malformed bytes still raise
`ProtocolError` with the shared `Reason` codes, these codes cover the protocol's own rules.
"""

from __future__ import annotations

from enum import StrEnum

from protocol.errors import FleetlearnError

__all__ = ["SecAggError", "SecAggReason"]


class SecAggReason(StrEnum):
    OK = "ok"
    NOT_MEMBER = "not_member"  # a message from or about a device outside the cohort
    WRONG_PHASE = "wrong_phase"  # a message the cohort's current phase does not accept
    WRONG_COHORT = "wrong_cohort"  # cohort id differs from the session's
    BAD_PARAMS = "bad_params"  # announced parameters inconsistent (threshold, bits, sizes)
    BAD_KEY = "bad_key"  # a public key that is not 32 bytes or not a valid X25519 point
    BAD_SIGNATURE = "bad_signature"  # an identity, key advertisement or U3 signature fails
    BAD_SHARE = "bad_share"  # a share that fails decryption or its commitment
    BAD_VECTOR = "bad_vector"  # masked vector of the wrong length or width
    UNSAFE_REQUEST = "unsafe_request"  # an unmask request that would reveal an input
    BELOW_THRESHOLD = "below_threshold"  # fewer than t members left: fail closed
    RECONSTRUCTION = "reconstruction"  # a secret did not reconstruct to its commitment
    DUPLICATE = "duplicate"  # the same step sent twice
    MODEL_VERSION = "model_version"  # the device does not hold the cohort's model version
    SUM_BOUND = "sum_bound"  # the unmasked sum is larger than its clipped members can make


class SecAggError(FleetlearnError):
    def __init__(self, reason: SecAggReason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail
