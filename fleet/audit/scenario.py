"""What is audited: a server.toml-like configuration, built into a fresh server per trial.

The strategy comes from the server's own factory (`make_strategy`, as `ServerApp` calls it) and
runs inside a real `ServerCore` (admission, update log, strategy), so the audit measures the
pipeline a deployment runs. Only three things are the audit's own: the model is a synthetic flat
vector of `params` float32 (the guarantee does not depend on what the weights mean), the state
folder is scratch, and every trial gets its own noise key (`privacy.seed`), as every real server
draws its own.
"""

from __future__ import annotations

import dataclasses
import hashlib
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from protocol.errors import ConfigError
from protocol.manifest import Manifest, ParamSpec
from server.config import ServerConfig, parse_config
from server.core import ServerCore
from server.privacy import PrivacyConfig
from server.strategies import Strategy, make_strategy

__all__ = ["Scenario", "load_scenario", "scenario_from_text", "trial_seed"]

# server.toml requires these; the audit never reads them (no broker, no artifacts, no key)
_UNUSED_PATHS = {
    "fleet": "audit",
    "artifacts": "unused",
    "signing_key": "unused",
    "state_dir": "unused",
}
NO_NOISE_SIGMA = 1e-3  # "DP off" for the power check: everything else stays as configured


def trial_seed(*parts: object) -> int:
    """A 63-bit seed from labels (audit seed, config, world, trial): distinct keys per trial."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


@dataclass(frozen=True)
class Scenario:
    name: str
    config: ServerConfig
    params: int  # d: the synthetic model's size

    def __post_init__(self) -> None:
        if self.config.privacy is None:
            raise ConfigError(f"{self.name}: no [privacy] table: there is no epsilon to audit")
        if self.params < 16:
            raise ConfigError(f"{self.name}: params must be >= 16, got {self.params}")

    @property
    def privacy(self) -> PrivacyConfig:
        assert self.config.privacy is not None  # checked in __post_init__
        return self.config.privacy

    @property
    def secure(self) -> bool:
        return self.config.secure_aggregation.enabled

    @property
    def per_release(self) -> int:
        """Contributions that make one release: the cohort, FedBuff's K or FedAvg's round."""
        if self.secure:
            return self.config.secure_aggregation.cohort_size
        key = "buffer_size" if self.config.strategy == "fedbuff" else "round_size"
        value = self.config.strategy_params.get(key, 10)
        return int(value)

    @property
    def member_clip(self) -> float:
        """The largest update norm a device may send: secure aggregation's member clip (at most
        C under DP: members clip to it themselves), else the DP clip norm C (initial C when
        adaptive)."""
        if self.secure:
            return self.config.secure_aggregation.clip
        return self.privacy.clip_norm

    def manifest(self) -> Manifest:
        half = self.params // 2
        return Manifest(
            model_name=f"audit-{self.params}",
            params=(ParamSpec("w", (half,)), ParamSpec("b", (self.params - half,))),
            input_name="x",
            input_shape=(half,),
            num_classes=2,
        )

    def without_noise(self) -> Scenario:
        """The same configuration with (almost) no noise: the audit must then see the leak."""
        count_std = self.privacy.clipped_count_std
        quiet = dataclasses.replace(
            self.privacy,
            noise_multiplier=NO_NOISE_SIGMA,
            clipped_count_std=None if count_std is None else NO_NOISE_SIGMA,
            epsilon=1e300,
        )
        config = dataclasses.replace(self.config, privacy=quiet)
        return dataclasses.replace(self, name=f"{self.name} (no noise)", config=config)

    def strategy(self, seed: int) -> Strategy:
        c = self.config
        privacy = dataclasses.replace(self.privacy, seed=seed)
        return make_strategy(
            c.strategy, c.strategy_params, c.staleness or None, c.robust, privacy=privacy
        )

    def server(self, seed: int, state_dir: Path, manifest: Manifest) -> ServerCore:
        """A fresh, recovered ServerCore (empty state) whose noise key derives from `seed`."""
        c = self.config
        core = ServerCore(
            manifest,
            np.zeros(manifest.num_params, np.float32),
            self.strategy(seed),
            state_dir,
            c.admission,
            checkpoint_every=c.durability.checkpoint_every,
            checkpoint_log_ratio=c.durability.checkpoint_log_ratio,
        )
        core.recover()
        return core


def scenario_from_text(name: str, text: str, params: int, base: Path = Path(".")) -> Scenario:
    """A scenario from server.toml text; the file's paths and broker are never used."""
    try:
        doc: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{name}: not valid TOML: {exc}") from exc
    return Scenario(name, parse_config({**_UNUSED_PATHS, **doc}, base), params)


def load_scenario(path: Path, params: int) -> Scenario:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config: {exc}") from exc
    return scenario_from_text(path.name, text, params, path.parent)
