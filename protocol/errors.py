"""One error model for all of fleetlearn.

    FleetlearnError                 base of everything we raise on purpose
    ├── ProtocolError(reason)       untrusted bytes refused; `reason` can travel in an Ack
    │   └── SignatureError          a ModelOffer whose signature does not verify
    ├── RejectedUpdate(reason)      a well-formed update the server will not apply
    ├── ConfigError                 a config file or CLI argument is wrong (names the key)
    └── DataError                   a local data or artifact file is wrong (names the file)

Third-party exceptions are converted at the boundary and chained with `from`.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "ConfigError",
    "DataError",
    "FleetlearnError",
    "ProtocolError",
    "Reason",
    "RejectedUpdate",
    "SignatureError",
]


class Reason(StrEnum):
    """Why a message or update was refused. The value travels in `Ack.reason`."""

    OK = "ok"
    OVERSIZE = "oversize"  # payload larger than the configured maximum
    MALFORMED = "malformed"  # not msgpack, truncated, or the wrong structure
    SCHEMA = "schema"  # unknown schema version or message kind
    FIELD = "field"  # a field missing, of the wrong type, or out of range
    CODEC = "codec"  # codec spec unknown or its payload inconsistent
    SHAPE = "shape"  # tensor length or shape does not match the manifest
    DTYPE = "dtype"  # tensor dtype does not match the manifest
    NON_FINITE = "non_finite"  # NaN or infinity in a tensor or scale
    BAD_DEVICE_ID = "bad_device_id"  # device id fails validation
    DEVICE_MISMATCH = "device_mismatch"  # payload device id differs from the topic's
    BAD_SIGNATURE = "bad_signature"
    UNKNOWN_MODEL = "unknown_model"  # model id or manifest digest not served here
    SAMPLES = "samples"  # sample count <= 0 or above the cap
    NORM = "norm"  # update norm above the bound
    STALE = "stale"  # base version too old (staleness above the maximum or an old round)
    FUTURE = "future"  # base version newer than the server's
    REPLAY = "replay"  # sequence number already seen or out of order
    RATE_LIMITED = "rate_limited"  # this device sent faster than its limit; re-send later
    INTERNAL = "internal"  # the server failed; the device should retry later


class FleetlearnError(Exception):
    """Base class of every error fleetlearn raises on purpose."""


class ProtocolError(FleetlearnError):
    """Untrusted input was refused. `reason` says why in a form that can travel in an Ack."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


class SignatureError(ProtocolError):
    def __init__(self, detail: str) -> None:
        super().__init__(Reason.BAD_SIGNATURE, detail)


class RejectedUpdate(FleetlearnError):
    """A decoded update that admission control refused."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


class ConfigError(FleetlearnError):
    """A configuration value is wrong. The message names the key and the problem."""


class DataError(FleetlearnError):
    """A local file (data, artifacts, state) is wrong. The message names the file."""
