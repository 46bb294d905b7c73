"""User-level differential privacy for buffered aggregation: clip, noise, account, budget."""

from server.privacy.accountant import Method, calibrate_noise_multiplier, epsilon
from server.privacy.config import PrivacyConfig, parse_privacy
from server.privacy.mechanism import DpMechanism, PrivacyStatus

__all__ = [
    "DpMechanism",
    "Method",
    "PrivacyConfig",
    "PrivacyStatus",
    "calibrate_noise_multiplier",
    "epsilon",
    "parse_privacy",
]
