"""Hostile devices for the simulator and the demo: what a compromised device can send.

An attacker is an ordinary enrolled device: it may train on whatever data it likes and publish any
well-formed `ClientUpdate` on its own topic. So an attack is (a) a change to its local data before
honest training (label flip, backdoor) and (b) a change to the delta it then encodes with the real
codec and sends through the real protocol (sign flip, scale, noise, the backdoor's boost). Nothing
here reaches into the server.

    sign-flip   delta -> -boost * delta                    (boost 4: push the fleet backwards)
    scale       delta -> boost * delta                     (boost 50: overshoot / model replacement)
    noise       delta -> random direction, norm 50 x the honest delta's (the probe's attack)
    label-flip  train on y -> C - 1 - y                    (data poisoning, honest-looking deltas)
    backdoor    train on samples with a trigger (a bright 2x2 corner patch) labelled `target`,
                mixed with the clean ones, then boost the delta 5x (Bagdasaryan et al. 2020);
                success = share of triggered test inputs of other classes classified `target`
                (`backdoor_test_set`)
    fresh-poison  the first `first_updates` (10) updates a FRESH server receives are the
                attacker's: one fixed direction, norm `boost` (1e4) each, sent before any honest
                device has finished training (outside probe, "poisoning a fresh server"); after
                that the attacker is quiet. It is an opening, not a share of the fleet: the
                simulator hands the first arrivals' slots to the attacker (fleet/sim/engine.py)
                and ignores the attacker share, so it is not among `DEVICE_ATTACKS` (the kinds
                the CLIs and the robustness matrix give to chosen devices for a whole run).

Randomness comes from (seed, device, seq), so a run replays exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

__all__ = [
    "DEVICE_ATTACKS",
    "Attack",
    "AttackKind",
    "apply_trigger",
    "backdoor_test_set",
    "choose_attackers",
]


class AttackKind(StrEnum):
    SIGN_FLIP = "sign-flip"
    SCALE = "scale"
    NOISE = "noise"
    LABEL_FLIP = "label-flip"
    BACKDOOR = "backdoor"
    FRESH_POISON = "fresh-poison"


# what chosen devices do for a whole run; fresh-poison is an opening of the run instead
DEVICE_ATTACKS = tuple(k for k in AttackKind if k is not AttackKind.FRESH_POISON)

_BOOST = {
    AttackKind.SIGN_FLIP: 4.0,
    AttackKind.SCALE: 50.0,
    AttackKind.NOISE: 50.0,
    AttackKind.LABEL_FLIP: 1.0,
    AttackKind.BACKDOOR: 5.0,
    AttackKind.FRESH_POISON: 1e4,  # the norm of each update (the probe's)
}


def choose_attackers(devices: int, fraction: float, seed: int) -> frozenset[int]:
    """round(fraction * devices) device indices, drawn without replacement from the seed."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"attacker fraction must be in [0, 1), got {fraction}")
    k = round(fraction * devices)
    rng = np.random.default_rng([seed, 0xA77AC])
    return frozenset(int(i) for i in rng.choice(devices, size=k, replace=False))


def apply_trigger(x: np.ndarray) -> np.ndarray:
    """Stamp the backdoor trigger: the last two pixels of the last two image rows set to max.

    Works on flat (n, 64) digits and on (n, 1, 8, 8) images alike (the same pixels)."""
    out = np.array(x, np.float32, copy=True)
    flat = out.reshape(out.shape[0], -1)  # a view: (n, d)
    side = math.isqrt(flat.shape[1])
    if side * side == flat.shape[1] and side >= 4:
        for row in (side - 2, side - 1):
            flat[:, row * side + side - 2 : row * side + side] = 1.0
    else:  # not a square image: the last four features
        flat[:, -4:] = 1.0
    return out


@dataclass(frozen=True)
class Attack:
    kind: AttackKind
    num_classes: int = 10
    target: int = 0  # backdoor target class
    boost: float | None = None  # None: the kind's default (_BOOST)
    seed: int = 0
    first_updates: int = 10  # fresh-poison: how many of a fresh server's first updates

    @property
    def factor(self) -> float:
        return _BOOST[self.kind] if self.boost is None else self.boost

    @property
    def opening(self) -> bool:
        """True: the attack is the first `first_updates` updates of a run, not chosen devices."""
        return self.kind is AttackKind.FRESH_POISON

    def poison_data(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The local data a hostile device trains on instead of its own."""
        if self.kind is AttackKind.LABEL_FLIP:
            return x, (self.num_classes - 1 - y).astype(y.dtype)
        if self.kind is AttackKind.BACKDOOR:
            # clean samples plus triggered copies labelled `target`: the model keeps its main
            # accuracy (stealth) and learns the trigger
            xt = apply_trigger(x)
            yt = np.full_like(y, self.target)
            return np.concatenate([x, xt]), np.concatenate([y, yt])
        return x, y

    def poison_delta(self, delta: np.ndarray, device: int, seq: int) -> np.ndarray:
        """(n,) float32 honest delta -> the (n,) float32 delta the device sends."""
        f = np.float32(self.factor)
        if self.kind is AttackKind.FRESH_POISON:  # coordinated: one direction for every device
            rng = np.random.default_rng([self.seed, 0xF4E5])
            direction = rng.standard_normal(delta.shape[0])  # (n,) float64
            return np.asarray(self.factor * direction / np.linalg.norm(direction), np.float32)
        if self.kind is AttackKind.SIGN_FLIP:
            return np.asarray(-f * delta, np.float32)
        if self.kind is AttackKind.NOISE:
            rng = np.random.default_rng([self.seed, device, seq, 0x4015E])
            noise = np.asarray(rng.standard_normal(delta.shape[0]), np.float32)  # (n,)
            norm = float(np.linalg.norm(delta)) or 1.0
            scale = np.float32(self.factor * norm / float(np.linalg.norm(noise)))
            return np.asarray(noise * scale, np.float32)
        return np.asarray(f * delta, np.float32)  # scale, backdoor (boost), label-flip (1x)


def backdoor_test_set(
    x_test: np.ndarray, y_test: np.ndarray, target: int
) -> tuple[np.ndarray, np.ndarray]:
    """Triggered test inputs of every class but `target`, all labelled `target`: a model's
    accuracy on this set is the backdoor's success rate."""
    keep = y_test != target
    x = apply_trigger(x_test[keep])
    return x, np.full(int(keep.sum()), target, dtype=y_test.dtype)
