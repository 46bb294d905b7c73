"""msgpack decoding whose memory and time are bounded by the payload, for untrusted bytes.

msgpack's own limits (`max_array_len`, `max_map_len`, ...) bound one container's length, not how
many containers there are: 8 MB of `[{}, {}, ...]` arrays is 7.8 million dicts (about 64 bytes
of Python each for 1 byte on the wire; +509 MiB and 1.4 s in the probe, issue 15). Every array
and map decoded here passes a hook that counts it and aborts the decode once `max_containers`
is exceeded, so the work done before refusing is bounded too.
"""

from __future__ import annotations

from typing import Any

import msgpack

from protocol.errors import ProtocolError, Reason

__all__ = ["ContainerBudget", "unpack_bounded"]


class ContainerBudget:
    """Counts decoded arrays and maps; raises ProtocolError(MALFORMED) past the limit."""

    def __init__(self, limit: int, what: str) -> None:
        self.left = limit
        self.limit = limit
        self.what = what

    def _spend(self) -> None:
        self.left -= 1
        if self.left < 0:
            raise ProtocolError(
                Reason.MALFORMED, f"{self.what}: more than {self.limit} nested arrays/maps"
            )

    def array(self, value: list[Any]) -> list[Any]:
        self._spend()
        return value

    def map(self, value: dict[Any, Any]) -> dict[Any, Any]:
        self._spend()
        return value


def unpack_bounded(
    data: bytes | bytearray | memoryview,
    what: str,
    *,
    max_containers: int,
    max_array_len: int,
    max_map_len: int,
    max_bytes: int,
) -> Any:
    """Decode one msgpack object; at most `max_containers` arrays+maps, no ext types.

    Raises ProtocolError(MALFORMED) for anything msgpack refuses or that exceeds a limit.
    """
    budget = ContainerBudget(max_containers, what)
    try:
        return msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            object_hook=budget.map,
            list_hook=budget.array,
            max_bin_len=max_bytes,
            max_str_len=max_bytes,
            max_array_len=max_array_len,
            max_map_len=max_map_len,
            max_ext_len=0,
        )
    except ProtocolError:
        raise
    except (ValueError, TypeError, msgpack.UnpackException, msgpack.ExtraData) as exc:
        raise ProtocolError(Reason.MALFORMED, f"{what}: not a msgpack message ({exc})") from exc
