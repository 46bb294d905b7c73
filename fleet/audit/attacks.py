"""What an observer of the published models computes about a direction u it cares about.

    changes      D_v = x_v - x_{v-1}                           one per release, (R, n)
    residuals    r_v = D_v - rho_v * roll(D_{v-1}, L_v)        L_v, rho_v: the lag (|L| <= max_lag)
                                                               and slope that best explain D_v by
                                                               the release before it
    cosines      cos(x_R - x_0, u), mean_v cos(D_v, u), weighted mean_v cos(r_v, u)

With independent noise per release, rho ~ 0 and r_v ~ D_v: the residual attack costs nothing. If a
release's noise repeats an earlier release's (a reused key or nonce, or a counter that runs into
the next release's stream, which shifts it by whole blocks), the regression finds it and r_v
keeps the contributions while the noise cancels. Residuals are weighted by 1 / ||r_v||, so the
first release (nothing to subtract) does not drown the cancelled ones.
"""

from __future__ import annotations

import numpy as np

__all__ = ["MAX_LAG", "changes", "cosines", "residuals", "signed_projection"]

MAX_LAG = 8  # coordinates either way: a CTR stream overlapping by a block shifts by 2 float64s


def changes(models: np.ndarray) -> np.ndarray:
    """(R+1, n) published models -> (R, n) float64 release changes."""
    return np.diff(np.asarray(models, np.float64), axis=0)


def _explain(current: np.ndarray, previous: np.ndarray, max_lag: int) -> np.ndarray:
    """current minus its least-squares fit by the best shifted copy of previous."""
    scale = float(np.dot(previous, previous))
    if scale == 0.0:
        return current
    best, best_corr = current, 0.0
    norm = float(np.linalg.norm(current)) * np.sqrt(scale)
    for lag in range(-max_lag, max_lag + 1):
        shifted = np.roll(previous, lag)
        dot = float(np.dot(current, shifted))
        if norm > 0 and abs(dot) / norm > best_corr:
            best_corr = abs(dot) / norm
            best = current - (dot / scale) * shifted
    return best


def residuals(deltas: np.ndarray, max_lag: int = MAX_LAG) -> np.ndarray:
    """(R, n) changes -> (R, n) residuals r_v (r_0 = D_0: nothing to explain it by)."""
    out = np.array(deltas, np.float64)
    for v in range(1, deltas.shape[0]):
        out[v] = _explain(deltas[v], deltas[v - 1], max_lag)
    return out


def _unit_rows(a: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(a, axis=-1, keepdims=True)
    out: np.ndarray = np.divide(a, norms, out=np.zeros_like(a), where=norms > 0)
    return out


def cosines(models: np.ndarray, directions: np.ndarray) -> dict[str, np.ndarray]:
    """Per direction (rows of (J, n) `directions`, unit length) the three cosine scores, (J,)."""
    d = changes(models)  # (R, n)
    r = residuals(d)  # (R, n)
    u = _unit_rows(np.asarray(directions, np.float64))  # (J, n)
    final = _unit_rows(d.sum(axis=0)) @ u.T  # (J,)
    per_release = _unit_rows(d) @ u.T  # (R, J)
    r_norms = np.linalg.norm(r, axis=1)  # (R,)
    weights = np.divide(1.0, r_norms, out=np.zeros_like(r_norms), where=r_norms > 0)
    weights /= max(float(weights.sum()), 1e-300)
    per_residual = _unit_rows(r) @ u.T  # (R, J)
    return {
        "final": final,
        "releases": per_release.mean(axis=0),
        "residuals": weights @ per_residual,
    }


def signed_projection(
    models: np.ndarray, direction: np.ndarray, signs: np.ndarray
) -> dict[str, float]:
    """Two-world scores for one target that sent signs[v] * c * u in release v:
    sum_v s_v <D_v, u> and the same over residuals weighted by 1 / ||r_v||^2 (their noise)."""
    d = changes(models)  # (R, n)
    r = residuals(d)  # (R, n)
    u = np.asarray(direction, np.float64)
    s = np.asarray(signs, np.float64)  # (R,)
    sq = np.einsum("ij,ij->i", r, r)  # (R,)
    weights = np.divide(1.0, sq, out=np.zeros_like(sq), where=sq > 0)
    return {
        "sum": float(s @ (d @ u)),
        "residuals": float((s * weights) @ (r @ u)) / max(float(weights.sum()), 1e-300),
    }
