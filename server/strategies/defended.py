"""What FedAsync, FedBuff and FedAvg share: the open buffer, the reducer and the defence hooks.

A strategy mixes this in before `Strategy` and calls `_set_up_reducer` in its `__post_init__`;
`buffered` says whether updates wait in a buffer (FedBuff, FedAvg) or apply on arrival
(FedAsync: no buffer, so no one-per-device rule and no DP). The reducer (server/reducer.py)
decides how the buffer closes and refuses settings that do not compose; the buffer
(server/buffer.py) owns everything between its first update and its flush.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from protocol.errors import Reason
from server.buffer import OpenBuffer
from server.optimizers import ServerOptimizer
from server.privacy import DpMechanism
from server.reducer import Reducer
from server.robust import Defence, RobustConfig, warm_up_kernels
from server.strategies.base import StateDict, load_privacy_state

__all__ = ["Defended"]


class Defended:
    _reducer: Reducer
    _buffer: OpenBuffer
    buffered: ClassVar[bool]  # Strategy's: False for FedAsync

    def _set_up_reducer(
        self,
        robust: RobustConfig | None,
        privacy: DpMechanism | None,
        *,
        sample_weighted: bool = False,
    ) -> None:
        self._reducer = Reducer(
            robust, privacy, buffered=self.buffered, sample_weighted=sample_weighted
        )
        self._buffer = self._reducer.open_buffer()

    @property
    def defence(self) -> Defence | None:
        return self._reducer.defence

    @property
    def buffer(self) -> OpenBuffer:
        return self._buffer

    @property
    def pending(self) -> int:
        return self._buffer.count

    def _buffered_state(self, opt: ServerOptimizer) -> StateDict:
        """The open buffer's, the optimiser's, the defence's and DP's state, in one dict."""
        state = self._buffer.state_dict()
        state.update(opt.state_dict())
        if self.defence is not None:
            state.update(self.defence.state_dict())
        if self._reducer.privacy is not None:
            state.update(self._reducer.privacy.state_dict())
        return state

    def _load_buffered_state(self, opt: ServerOptimizer, state: StateDict) -> None:
        self._buffer.load_state_dict(state)
        opt.load_state_dict(state)
        if self.defence is not None:
            self.defence.load_state_dict(state)
        load_privacy_state(self._reducer.privacy, state)

    def warm_up(self, num_params: int) -> None:
        """The robust aggregators' kernels, when the reducer aggregates rows."""
        if self._reducer.keeps_rows:
            warm_up_kernels(num_params)

    def start_from(self, model: np.ndarray) -> None:
        if self.defence is not None:
            self.defence.start_from(model)

    # The buffer's one-per-device rule is asked where each reason has always been given: DP's
    # before the delta is decoded, the robust option's after the fixed norm check.
    def check_device(self, device_id: str) -> None:
        if self._buffer.one_per_device is Reason.DP_BUFFER:
            self._buffer.check_device(device_id)

    def screen(self, device_id: str, norm: float) -> float:
        if self._buffer.one_per_device is Reason.DEVICE_LIMIT:
            self._buffer.check_device(device_id)
        return 1.0 if self.defence is None else self.defence.screen(norm)
