"""The rows of one open buffer, for the coordinate-wise aggregators (server/robust/defence.py).

    dense rows    one (capacity, n) float32 matrix, reused across buffers; an update is written
                  into its slot in place (FedBuff adds a codec-form delta straight from its codes)
    sparse rows   a top-k update stays (positions, weighted values) until the buffer is reduced

`compact()` hands the aggregators what they need: when every row is sparse and their union
support U covers at most a quarter of the coordinates, the (k, |U|) matrix of those columns (every
other coordinate is zero in every row, so its median, trimmed mean and cosine weight are zero
too, and the result on U is the dense one value for value); otherwise the dense (k, n) rows, with
sparse rows expanded into their slots. For ten top-1% rows of a 1M model that is 96k columns
instead of 1M: no 4 MB row to zero per update, a tenth of the sorting per flush.
"""

from __future__ import annotations

import numpy as np

__all__ = ["RowBuffer"]

_COMPACT_SHARE = 4  # compact while |U| <= n / 4: past that, gathering costs what it saves


class RowBuffer:
    def __init__(self) -> None:
        self._n = 0  # row length of the open buffer
        self._count = 0
        # (capacity, n) float32, made on the first dense row and kept; a sparse row's slot in
        # it is written only when the buffer is expanded
        self._matrix: np.ndarray | None = None
        self._sparse: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # slot -> (index, values)
        self._mark: np.ndarray | None = None  # (n,) bool, all False between buffers
        self._where: np.ndarray | None = None  # (n,) int64: column of a support position
        self._weights: list[float] = []  # the weight each row already carries (FedBuff: s(tau))

    @property
    def count(self) -> int:
        return self._count

    @property
    def width(self) -> int:
        return self._n

    @property
    def weights(self) -> np.ndarray:
        """(k,) float64: the weight each row was added with."""
        return np.asarray(self._weights, np.float64)

    def new_row(self, n: int, weight: float = 1.0) -> np.ndarray:
        """The next row, (n,) float32 zeros, for the caller to write its delta times `weight`
        into."""
        self._next_slot(n, weight)
        row: np.ndarray = self._dense_matrix()[self._count - 1]
        row.fill(0.0)
        return row

    def add_sparse(
        self, n: int, index: np.ndarray, values: np.ndarray, weight: float = 1.0
    ) -> None:
        """The next row: `values` (k,) float32 (already times `weight`) at `index` (k,) strictly
        increasing positions."""
        if index.shape != values.shape or (index.size and not 0 <= index[0] <= index[-1] < n):
            raise ValueError("robust rows: sparse row positions do not fit the model")
        self._next_slot(n, weight)
        self._sparse[self._count - 1] = (index, values.astype(np.float32, copy=False))

    def dense(self) -> np.ndarray:
        """(k, n) float32 rows, sparse ones expanded (a view: valid until the next row)."""
        if not self._count:
            return np.empty((0, self._n), np.float32)
        m = self._dense_matrix()
        for slot, (index, values) in self._sparse.items():
            m[slot].fill(0.0)
            m[slot, index] = values
        self._sparse.clear()
        return m[: self._count]

    def flat_copy(self) -> np.ndarray:
        """(k * n,) float32: every row dense, in order (for a checkpoint); the buffer itself,
        sparse rows included, is left as it is."""
        out = np.zeros((self._count, self._n), np.float32)  # (k, n)
        if self._matrix is not None:
            dense = [s for s in range(self._count) if s not in self._sparse]
            out[dense] = self._matrix[dense]
        for slot, (index, values) in self._sparse.items():
            out[slot, index] = values
        return out.reshape(-1)

    def compact(self) -> tuple[np.ndarray | None, np.ndarray]:
        """(support, (k, |support|) rows) when every row is sparse on a small union support,
        else (None, the dense (k, n) rows)."""
        n = self._n
        if not self._count or len(self._sparse) != self._count:
            return None, self.dense()
        if self._mark is None or self._mark.shape != (n,):
            self._mark, self._where = np.zeros(n, np.bool_), np.empty(n, np.int64)
        assert self._where is not None
        slots = list(self._sparse)
        index = np.concatenate([self._sparse[s][0] for s in slots])  # (total,) every row's
        self._mark[index] = True
        support = np.flatnonzero(self._mark)  # (u,) sorted union
        self._mark[support] = False
        if support.size * _COMPACT_SHARE > n:
            return None, self.dense()
        self._where[support] = np.arange(support.size)
        sizes = [self._sparse[s][0].size for s in slots]
        at = np.repeat(np.array(slots, np.int64) * support.size, sizes) + self._where[index]
        rows = np.zeros((self._count, support.size), np.float32)  # (k, u)
        rows.reshape(-1)[at] = np.concatenate([self._sparse[s][1] for s in slots])
        return support, rows

    def clear(self) -> None:
        self._count = 0
        self._sparse.clear()
        self._weights.clear()

    def _next_slot(self, n: int, weight: float) -> None:
        if self._count and n != self._n:
            raise ValueError(f"robust rows: a row of {n} values in a buffer of {self._n}")
        self._n = n
        self._count += 1
        self._weights.append(weight)

    def _dense_matrix(self) -> np.ndarray:
        """The matrix, with room for `count` rows of the buffer's length."""
        m = self._matrix
        if m is None or m.shape[1] != self._n:
            m = self._matrix = np.empty((max(4, self._count), self._n), np.float32)
        elif m.shape[0] < self._count:  # grow by doubling; a steady K fits after the first
            grown = np.empty((max(2 * m.shape[0], self._count), self._n), np.float32)
            grown[: m.shape[0]] = m  # sparse rows' slots hold nothing yet: copied unread
            m = self._matrix = grown
        return m
