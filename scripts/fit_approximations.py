#!/usr/bin/env python3
"""Fits the coefficients of tether's single-precision approximations and prints them.

- sin and cos on [-pi/4, pi/4] (firmware/src/trig.rs): minimax polynomials,
  sin r = r + r^3 (S1 + z S2 + z^2 S3) (relative error) and
  cos r = 1 - z/2 + z^2 (C1 + z C2 + z^2 C3) (absolute error), z = r^2;
- tanh on [0, 8] (shared/src/policy/forward.rs): the rational x P(x^2) / Q(x^2) with
  Q's constant term 1, minimising the absolute error.

Discrete minimax by Lawson's iteration (weighted least squares whose weights grow where the
error is largest), linearised for the rational (Loeb: divide by the last iteration's Q), on
Chebyshev-spaced points, in double precision; the coefficients are then rounded to f32.
Standard library only. The Rust tests check the rounded coefficients' real error; this
script only documents where the numbers came from.

    python3 scripts/fit_approximations.py
"""

import math
import struct


def f32(v):
    """v rounded to the nearest f32."""
    return struct.unpack("f", struct.pack("f", v))[0]


def least_squares(rows, rhs):
    """Solves min |A x - b| by Householder QR (A given as a list of rows)."""
    a = [row[:] for row in rows]
    b = rhs[:]
    m, n = len(a), len(a[0])
    for j in range(n):
        norm = math.sqrt(sum(a[i][j] ** 2 for i in range(j, m)))
        if norm == 0.0:
            continue
        sign = -1.0 if a[j][j] > 0 else 1.0
        v = [0.0] * m
        v[j] = a[j][j] - sign * norm
        for i in range(j + 1, m):
            v[i] = a[i][j]
        vv = sum(v[i] ** 2 for i in range(j, m))
        for k in range(j, n):
            d = 2.0 * sum(v[i] * a[i][k] for i in range(j, m)) / vv
            for i in range(j, m):
                a[i][k] -= d * v[i]
        d = 2.0 * sum(v[i] * b[i] for i in range(j, m)) / vv
        for i in range(j, m):
            b[i] -= d * v[i]
    x = [0.0] * n
    for j in reversed(range(n)):
        x[j] = (b[j] - sum(a[j][k] * x[k] for k in range(j + 1, n))) / a[j][j]
    return x


def chebyshev_points(lo, hi, n):
    return [lo + (hi - lo) * (0.5 - 0.5 * math.cos(math.pi * (i + 0.5) / n)) for i in range(n)]


def lawson(basis, target, weight, points, iterations=300):
    """Minimax fit of sum c_k basis_k(x) to target(x), error scaled by weight(x)."""
    w = [1.0] * len(points)
    best = None
    for _ in range(iterations):
        rows = [[wi * weight(x) * f(x) for f in basis] for x, wi in zip(points, w)]
        rhs = [wi * weight(x) * target(x) for x, wi in zip(points, w)]
        c = least_squares(rows, rhs)
        errs = [weight(x) * (sum(ck * f(x) for ck, f in zip(c, basis)) - target(x)) for x in points]
        worst = max(abs(e) for e in errs)
        if best is None or worst < best[0]:
            best = (worst, c)
        w = [wi * math.sqrt(abs(e) / worst) + 1e-300 for wi, e in zip(w, errs)]
        total = sum(w)
        w = [wi * len(w) / total for wi in w]
    return best


def fit_sin_cos():
    points = chebyshev_points(0.0, math.pi / 4, 2000)[1:]
    basis = [lambda r, k=k: r ** 3 * (r * r) ** k for k in range(3)]
    err_s, s = lawson(basis, lambda r: math.sin(r) - r, lambda r: 1 / math.sin(r), points)
    basis = [lambda r, k=k: (r * r) ** (2 + k) for k in range(3)]
    err_c, c = lawson(basis, lambda r: math.cos(r) - 1 + r * r / 2, lambda r: 1.0, points)
    return err_s, [f32(v) for v in s], err_c, [f32(v) for v in c]


def fit_tanh(p_terms, q_terms, clamp, iterations=200, n=3000):
    """x P(s)/Q(s), s = x^2, P with p_terms coefficients, Q with q_terms (the first 1)."""
    xs = chebyshev_points(0.0, clamp, n)
    scale = clamp * clamp  # fit in u = s / clamp^2 for conditioning
    w = [1.0] * n
    q_last = [1.0] * n
    best = None
    for _ in range(iterations):
        rows, rhs = [], []
        for x, wi, ql in zip(xs, w, q_last):
            u, t = x * x / scale, math.tanh(x)
            rows.append([wi * x * u ** k / ql for k in range(p_terms)]
                        + [-wi * t * u ** k / ql for k in range(1, q_terms)])
            rhs.append(wi * t / ql)
        sol = least_squares(rows, rhs)
        p, q = sol[:p_terms], [1.0] + sol[p_terms:]
        errs, q_last = [], []
        for x in xs:
            u = x * x / scale
            pv = sum(pk * u ** k for k, pk in enumerate(p))
            qv = sum(qk * u ** k for k, qk in enumerate(q))
            errs.append(x * pv / qv - math.tanh(x))
            q_last.append(qv)
        worst = max(abs(e) for e in errs)
        if best is None or worst < best[0]:
            best = (worst, p, q)
        w = [wi * math.sqrt(abs(e) / worst) + 1e-300 for wi, e in zip(w, errs)]
        total = sum(w)
        w = [wi * n / total for wi in w]
    worst, p, q = best
    p = [f32(pk / scale ** k) for k, pk in enumerate(p)]
    q = [f32(qk / scale ** k) for k, qk in enumerate(q)]
    return worst, p, q


def show(name, values):
    print(f"{name}: " + ", ".join(repr(v) for v in values))


if __name__ == "__main__":
    err_s, s, err_c, c = fit_sin_cos()
    print(f"sin on [0, pi/4]: relative error {err_s:.3e} before rounding")
    show("  S1..S3", s)
    print(f"cos on [0, pi/4]: absolute error {err_c:.3e} before rounding")
    show("  C1..C3", c)
    err_t, p, q = fit_tanh(4, 5, 8.0)
    print(f"tanh on [0, 8]: absolute error {err_t:.3e} before rounding")
    show("  P (s^0..s^3)", p)
    show("  Q (s^0..s^4)", q)
