"""The server's numeric kernels: a leaf package that imports nothing of the server above it.

    ingest.py   compiled (numba) loops for the fused ingest path: norms and weighted adds
                straight from an update's codes, the one-pass sgd step from a buffer's sum
    robust.py   compiled loops for the coordinate-wise robust aggregators (sorting networks)
    fused.py    the numpy-or-compiled dispatch for ingest: every caller (admission, the
                admitted-update value types, the server optimiser) goes through it

Whoever owns a step calls these directly (the optimiser owns its fused step), so no kernel needs
to reach up into strategies or admission.

Where the compiled kernels take over from numpy is one rule for every caller: below
KERNEL_MIN_VALUES values per update (ingest) or per row (robust aggregation) the numpy form of the
same float32 operations is used (same bits): it is cheap there, and a process that only sees small
models (demo, simulator, tests) never imports numba. Larger models use the kernels throughout.
"""

from __future__ import annotations

__all__ = ["KERNEL_MIN_VALUES"]

KERNEL_MIN_VALUES = 1 << 15
