"""Where the server's compiled (numba) kernels take over from numpy: one rule for every caller.

Below this many values per update (ingest) or per row (robust aggregation) the numpy form of the
same float32 operations is used (same bits): it is cheap there, and a process that only sees small
models (demo, simulator, tests) never imports numba. Larger models use the kernels throughout.
"""

from __future__ import annotations

__all__ = ["KERNEL_MIN_VALUES"]

KERNEL_MIN_VALUES = 1 << 15
