"""The logistic-regression baseline: does the health score beat a simple model of event counts?

Features of an account as of a cut (`features`): log1p of its event counts in the 28 days before the cut,
one per event type (`usage`, `ticket`, `sentiment`, `account`, `contact`) and one per usage feature name
(`data.feature`) among the `TOP_FEATURES` most frequent over every counted window (ties by name), the
other feature names pooled into `usage:other`. Each column is standardized over the ranked accounts (mean
0, standard deviation 1: the features alone, no outcome is looked at); a column that does not vary is
left out.

The model: L2-regularized logistic regression, the penalty `L2 / 2 x |coefficients|^2` on the standardized
coefficients (the intercept is not penalized), fitted by BFGS with a backtracking line search, its
first metric the inverse Hessian at the starting point (estimated on an even sample of at most
`GRAM_SAMPLE` rows: it only sets the path, the fit converges to the same optimum). Pure Python: a few
thousand rows by about 60 columns fit in well under a second.

Cross-validation (`cross_validated`): every account is assigned one of `FOLDS` folds by a hash of its id
(the same fold in every run and on every machine); each fold's accounts are predicted by the model fitted
on the other folds. The baseline's figures are those of these out-of-fold churn probabilities.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from operator import mul

from shared.events import EventType

from .history import TYPE_KEYS, WindowCounts

FOLDS = 5
L2 = 1.0
TOP_FEATURES = 50
GRAM_SAMPLE = 2_000
MAX_ITERATIONS = 200
TOLERANCE = 1e-6            # stop when every gradient component is below this x the rows
OTHER = "usage:other"

TYPE_NAMES = [EventType.USAGE.value, *(kind.value for kind in TYPE_KEYS)]


def fold_of(account_id: str, folds: int = FOLDS) -> int:
    """The account's fold: a stable hash of its id (not Python's `hash`, which varies per process)."""
    digest = hashlib.blake2b(account_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % folds


def vocabulary(counts: Sequence[Mapping[str | int, int]], top: int = TOP_FEATURES) -> list[str]:
    """The `top` most frequent usage feature names over `counts` (events, ties by name)."""
    totals: dict[str, int] = {}
    for window in counts:
        for key, n in window.items():
            if type(key) is str:
                totals[key] = totals.get(key, 0) + n
    return sorted(totals, key=lambda name: (-totals[name], name))[:top]


def feature_names(kept: Sequence[str]) -> list[str]:
    return [*TYPE_NAMES, *(f"usage:{name}" for name in kept), OTHER]


def features(counts: Mapping[str | int, int], kept: Sequence[str]) -> list[float]:
    """One account's row (in `feature_names` order): log1p of each count."""
    usage = sum(n for key, n in counts.items() if type(key) is str)
    row = [usage, *(counts.get(key, 0) for key in TYPE_KEYS.values())]
    kept_total = 0
    for name in kept:
        n = counts.get(name, 0)
        kept_total += n
        row.append(n)
    row.append(usage - kept_total)
    return [math.log1p(n) for n in row]


def standardized(rows: Sequence[Sequence[float]]) -> tuple[list[list[float]], list[int]]:
    """The rows with each column scaled to mean 0 and standard deviation 1, and the columns kept (those
    that vary)."""
    if not rows:
        return [], []
    n = len(rows)
    width = len(rows[0])
    columns = list(zip(*rows, strict=True)) if width else []
    kept: list[int] = []
    scaled: list[list[float]] = []
    for j, column in enumerate(columns):
        mean = math.fsum(column) / n
        var = math.fsum((x - mean) ** 2 for x in column) / n
        if var > 1e-12 * max(1.0, mean * mean):
            sd = math.sqrt(var)
            kept.append(j)
            scaled.append([(x - mean) / sd for x in column])
    return [list(r) for r in zip(*scaled, strict=True)] if scaled else [[] for _ in range(n)], kept


# -- the fit -----------------------------------------------------------------------------------------------

@dataclass
class Fit:
    intercept: float
    coefficients: list[float]
    iterations: int
    converged: bool

    def probabilities(self, rows: Sequence[Sequence[float]]) -> list[float]:
        beta, b0 = self.coefficients, self.intercept
        return [_sigmoid(b0 + sum(map(mul, row, beta))) for row in rows]


def _sigmoid(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


def _softplus(z: float) -> float:
    """log(1 + e^z), without overflow."""
    return z + math.log1p(math.exp(-z)) if z > 0 else math.log1p(math.exp(z))


def _inverse(matrix: list[list[float]]) -> list[list[float]]:
    """The inverse of a symmetric positive definite matrix (Gauss-Jordan with partial pivoting)."""
    n = len(matrix)
    a = [[*row, *(1.0 if i == j else 0.0 for j in range(n))] for i, row in enumerate(matrix)]
    for col in range(n):
        pivot = max(range(col, n), key=lambda r: abs(a[r][col]))
        a[col], a[pivot] = a[pivot], a[col]
        head = a[col]
        scale = 1.0 / head[col]
        head = a[col] = [x * scale for x in head]
        for r in range(n):
            if r != col:
                factor = a[r][col]
                if factor:
                    a[r] = [x - factor * h for x, h in zip(a[r], head, strict=True)]
    return [row[n:] for row in a]


def hessian(rows: Sequence[Sequence[float]], beta: Sequence[float], l2: float) -> list[list[float]]:
    """The objective's Hessian at `beta` (intercept first): X' W X with W = p (1 - p) per row, plus the
    penalty on the diagonal (not on the intercept). Computed on an even sample of at most
    `GRAM_SAMPLE` rows, scaled up to all of them: it is only the search's metric."""
    n = len(rows)
    sample = rows if n <= GRAM_SAMPLE else [rows[i] for i in range(0, n, math.ceil(n / GRAM_SAMPLE))]
    b0, coef = beta[0], beta[1:]
    roots = []
    for row in sample:
        p = _sigmoid(b0 + sum(map(mul, row, coef)))
        roots.append(math.sqrt(max(p * (1 - p), 1e-6)))
    scale = n / len(sample)
    columns = [roots, *([r * x for r, x in zip(roots, column, strict=True)]
                        for column in zip(*sample, strict=True))]
    width = len(columns)
    matrix = [[0.0] * width for _ in range(width)]
    for j in range(width):
        cj = columns[j]
        for k in range(j, width):
            matrix[j][k] = matrix[k][j] = scale * sum(map(mul, cj, columns[k]))
    for j in range(1, width):
        matrix[j][j] += l2
    return matrix


def fit(rows: Sequence[Sequence[float]], labels: Sequence[bool], *, l2: float = L2,
        start: Sequence[float] | None = None) -> Fit:
    """Minimize sum(log(1 + e^z) - y z) + l2 / 2 |beta|^2 over z = b0 + x . beta (BFGS, its first metric
    the inverse `hessian` at the start). `start` (intercept first) warm-starts the search."""
    n = len(rows)
    width = len(rows[0]) if rows else 0
    ys = [1.0 if y else 0.0 for y in labels]
    positives = sum(ys)
    if n == 0 or positives in (0, n):
        # one class only: the intercept alone would run off to infinity; every account gets the rate
        rate = min(max(positives / n if n else 0.5, 1e-12), 1 - 1e-12)
        return Fit(math.log(rate / (1 - rate)), [0.0] * width, 0, True)
    columns = [list(c) for c in zip(*rows, strict=True)] if width else []
    if start is None:
        rate = positives / n
        beta = [math.log(rate / (1 - rate))] + [0.0] * width
    else:
        beta = list(start)
    inverse_hessian = _inverse(hessian(rows, beta, l2))
    h = [list(r) for r in inverse_hessian]

    exp, log1p, fsum = math.exp, math.log1p, math.fsum

    def value_and_gradient(b: list[float]) -> tuple[float, list[float]]:
        b0, coef = b[0], b[1:]
        losses = []
        residual = []
        for row, y in zip(rows, ys, strict=True):
            z = b0 + sum(map(mul, row, coef))
            if z > 0:
                e = exp(-z)
                losses.append(z + log1p(e) - y * z)
                residual.append(1.0 / (1.0 + e) - y)
            else:
                e = exp(z)
                losses.append(log1p(e) - y * z)
                residual.append(e / (1.0 + e) - y)
        loss = fsum(losses) + 0.5 * l2 * sum(map(mul, coef, coef))
        grad = [fsum(residual)] + [sum(map(mul, col, residual)) + l2 * c
                                   for col, c in zip(columns, coef, strict=True)]
        return loss, grad

    f, g = value_and_gradient(beta)
    limit = TOLERANCE * n
    iterations = 0
    converged = max(map(abs, g)) <= limit
    while not converged and iterations < MAX_ITERATIONS:
        iterations += 1
        direction = [-sum(map(mul, row, g)) for row in h]
        slope = sum(map(mul, g, direction))
        if slope >= 0:          # (not a descent direction: start the metric again)
            h = [list(r) for r in inverse_hessian]
            direction = [-sum(map(mul, row, g)) for row in h]
            slope = sum(map(mul, g, direction))
        step = 1.0
        while True:
            trial = [b + step * d for b, d in zip(beta, direction, strict=True)]
            f_new, g_new = value_and_gradient(trial)
            if f_new <= f + 1e-4 * step * slope or step < 1e-10:
                break
            step *= 0.5
        if f_new > f:
            break               # no progress possible (at the optimum to rounding)
        s = [t - b for t, b in zip(trial, beta, strict=True)]
        yv = [a - b for a, b in zip(g_new, g, strict=True)]
        sy = sum(map(mul, s, yv))
        if sy > 1e-12:
            hy = [sum(map(mul, row, yv)) for row in h]
            rho = 1.0 / sy
            factor = (sy + sum(map(mul, yv, hy))) * rho * rho
            h = [[hij + factor * si * sj - rho * (hyi * sj + si * hyj)
                  for hij, sj, hyj in zip(row, s, hy, strict=True)]
                 for row, si, hyi in zip(h, s, hy, strict=True)]
        beta, f, g = trial, f_new, g_new
        converged = max(map(abs, g)) <= limit
    return Fit(beta[0], beta[1:], iterations, converged)


def cross_validated(rows: Sequence[Sequence[float]], labels: Sequence[bool], folds: Sequence[int], *,
                    l2: float = L2) -> list[float]:
    """Each row's churn probability from the model fitted on the rows of the other folds."""
    n = len(rows)
    out = [0.0] * n
    if n == 0:
        return out
    fold_ids = sorted(set(folds))
    # Each fold's search starts where the previous one ended: the folds share most of their rows, so it is
    # short. Only the path depends on it, not the optimum.
    rate = sum(1 for y in labels if y) / n
    start: list[float] | None = None
    if n > GRAM_SAMPLE:         # (the first start: the fit on an even sample, much cheaper and near)
        every = math.ceil(n / GRAM_SAMPLE)
        first = fit(rows[::every], labels[::every], l2=l2 * len(rows[::every]) / n)
        start = [first.intercept, *first.coefficients]
    for k in fold_ids:
        train = [i for i in range(n) if folds[i] != k]
        test = [i for i in range(n) if folds[i] == k]
        if not train:
            for i in test:
                out[i] = rate
            continue
        model = fit([rows[i] for i in train], [labels[i] for i in train], l2=l2, start=start)
        if model.iterations:
            start = [model.intercept, *model.coefficients]
        for i, p in zip(test, model.probabilities([rows[i] for i in test]), strict=True):
            out[i] = p
    return out


def baseline_rows(counts: Sequence[WindowCounts], kept: Sequence[str]) -> tuple[list[list[float]], list[str]]:
    """The standardized feature rows of accounts with these window counts, and the names of the columns
    kept."""
    names = feature_names(kept)
    rows, columns = standardized([features(c, kept) for c in counts])
    return rows, [names[j] for j in columns]
