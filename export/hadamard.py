"""Orthogonal Hadamard rotations for the out_proj input (Quamba2 rotates it to spread outliers).

Sizes: ``2^k``, ``12 * 2^k``, ``40 * 2^k`` (and 20), the sizes Quamba2's kernels (Dao-AILab's
fast-hadamard-transform) handle. The matrices are built here from their textbook definitions, in
the conventions those kernels use, so that released Quamba2 checkpoints (whose out_proj weights
have the rotation folded in) compute correctly:

- order 12: Paley construction II with q = 5: ``kron(C, [[1, 1], [1, -1]]) + kron(I, [[1, -1], [-1, -1]])``
  with ``C = [[0, 1^T], [1, Q]]``, ``Q[i, j] = chi(j - i)`` (the Jacobsthal matrix);
- order 20: Paley construction I with q = 19, as ``I + [[0, -1^T], [1, Q^T]]``;
- order 40: ``kron([[1, 1], [1, -1]], H_20)``;
- size ``b * 2^k``: ``kron(H_b, S_k)`` with ``S_k`` Sylvester's matrix of order 2^k (natural order,
  ``scipy.linalg.hadamard``), i.e. a flat index is ``i_b * 2^k + i_s``.

``hadamard_matrix(n)`` is the matrix H those kernels multiply a vector by (``out = H x``). The
rotation of the model is ``R = H.T / sqrt(n)`` (orthogonal), applied to row vectors: the rotated
activation is ``y @ R`` (== ``H y / sqrt(n)``) and the folded out_proj weight is ``W @ R``, so that
``(y @ R) @ (W @ R).T == y @ W.T``.

R is a Kronecker product, ``R = kron(F_1, ..., F_k)`` (``rotation_factors``): the activation is rotated
one factor at a time (``rotate``), ``n * (f_1 + ... + f_k)`` multiply-adds a row instead of ``n^2``
(mamba2-2.7b: 5120 x (40 + 128) instead of 5120 x 5120), and the graphs hold the small factors, not an
``n x n`` matrix (105 MB in fp32 at 2.7b, read again by every layer of every decode step).
"""
from __future__ import annotations

import functools
import math

import torch

_TWO = torch.tensor([[1.0, 1.0], [1.0, -1.0]], dtype=torch.float64)


def _chi(a: int, q: int) -> int:
    """Quadratic character (Legendre symbol) of a mod the prime q: 0, 1 or -1."""
    a %= q
    if a == 0:
        return 0
    return 1 if pow(a, (q - 1) // 2, q) == 1 else -1


def _jacobsthal(q: int) -> torch.Tensor:
    return torch.tensor([[_chi(j - i, q) for j in range(q)] for i in range(q)], dtype=torch.float64)


def paley2_12() -> torch.Tensor:
    """Order 12 by Paley's construction II (q = 5)."""
    q = 5
    C = torch.zeros(q + 1, q + 1, dtype=torch.float64)
    C[0, 1:] = 1.0
    C[1:, 0] = 1.0
    C[1:, 1:] = _jacobsthal(q)
    A = torch.tensor([[1.0, -1.0], [-1.0, -1.0]], dtype=torch.float64)
    return torch.kron(C, _TWO) + torch.kron(torch.eye(q + 1, dtype=torch.float64), A)


def paley1_20() -> torch.Tensor:
    """Order 20 by Paley's construction I (q = 19), in the transposed form ``I + [[0, -1^T], [1, Q^T]]``."""
    q = 19
    S = torch.zeros(q + 1, q + 1, dtype=torch.float64)
    S[0, 1:] = -1.0
    S[1:, 0] = 1.0
    S[1:, 1:] = _jacobsthal(q).t()
    return torch.eye(q + 1, dtype=torch.float64) + S


def _base_matrix(base: int) -> torch.Tensor:
    if base == 12:
        return paley2_12()
    if base == 20:
        return paley1_20()
    if base == 40:
        return torch.kron(_TWO, paley1_20())
    return torch.ones(1, 1, dtype=torch.float64)


def hadamard_base(n: int) -> tuple[int, int]:
    """(base order 1, 12, 40 or 20, k) with n = base * 2^k, in Quamba2's order of preference."""
    for base in (12, 40, 1, 20):
        if n >= base and n % base == 0:
            m = n // base
            if m & (m - 1) == 0:
                return base, m.bit_length() - 1
    raise ValueError(f"hadamard: size {n} is not 2^k, 12*2^k, 40*2^k or 20")


def is_supported_size(n: int) -> bool:
    try:
        hadamard_base(n)
        return True
    except ValueError:
        return False


@functools.lru_cache(maxsize=16)
def _hadamard(n: int) -> torch.Tensor:
    base, k = hadamard_base(n)
    S = torch.ones(1, 1, dtype=torch.float64)
    for _ in range(k):
        S = torch.kron(_TWO, S)                     # Sylvester doubling, natural order
    return torch.kron(_base_matrix(base), S)


def hadamard_matrix(n: int) -> torch.Tensor:
    """The unnormalized +-1 Hadamard matrix of order n (float64, H @ H.T == n * I)."""
    return _hadamard(n).clone()


# Largest Sylvester factor split off the rotation: its MatMul sums 128 terms a row.
MAX_FACTOR = 128


def rotation_sizes(n: int) -> list[int]:
    """The orders ``[f_1, ..., f_k]`` of ``rotation_factors(n)`` (product n): Sylvester factors of at most
    ``MAX_FACTOR`` split off the end, the base order with what is left of the power of two in front.
    2.7b's 5120 -> [40, 128]; 8b's 8192 -> [64, 128]; 130m's 1536 -> [12, 128]."""
    base, k = hadamard_base(n)
    tail = []
    while k > 0 and base << k > MAX_FACTOR:
        t = min(k, MAX_FACTOR.bit_length() - 1)
        tail.insert(0, 1 << t)
        k -= t
    head = base << k
    return [head, *tail] if head > 1 or not tail else tail


def rotation_factors(n: int) -> list[torch.Tensor]:
    """Orthogonal float64 matrices ``F_i`` of the orders ``rotation_sizes(n)`` with
    ``kron(F_1, ..., F_k) == rotation_matrix(n)``: ``F_1 = kron(B, S).T / sqrt(f_1)`` for the base B and
    the Sylvester matrix S of what is left in front, the others Sylvester matrices / sqrt(f_i)
    (``S_(a+b) = kron(S_a, S_b)`` in natural order; S is symmetric)."""
    sizes = rotation_sizes(n)
    base, _ = hadamard_base(n)
    factors = []
    for i, f in enumerate(sizes):
        b = base if i == 0 else 1
        S = torch.ones(1, 1, dtype=torch.float64)
        for _ in range((f // b).bit_length() - 1):
            S = torch.kron(_TWO, S)
        factors.append(torch.kron(_base_matrix(b), S).t() / f ** 0.5)
    return factors


def rotate(g: torch.Tensor) -> torch.Tensor:
    """``g @ rotation_matrix(n)`` for ``g [..., n]``, one factor at a time in the graphs' order
    (``export/onnx_layers.hadamard``): the last factor along the last axis first, then each factor
    before it along its axis; fp32 in, fp32 out."""
    n, lead = g.shape[-1], g.shape[:-1]
    sizes, factors, x = rotation_sizes(n), rotation_factors_fp32(n, g.device), g
    for i in reversed(range(len(sizes))):
        pre, post = math.prod(sizes[:i]), math.prod(sizes[i + 1:])
        if post == 1:
            x = x.reshape(*lead, pre, sizes[i]) @ factors[i]
        else:
            x = factors[i].t() @ x.reshape(*lead, pre, sizes[i], post)
    return x.reshape(*lead, n)


def rotation_factors_fp32(n: int, device=None) -> tuple[torch.Tensor, ...]:
    """``rotation_factors(n)`` in fp32 on ``device`` (the values the graphs hold), made once per size and
    device: ``rotate`` runs in every layer's forward and every calibration batch. Shared: do not modify."""
    return _factors_fp32(n, str(torch.device(device or "cpu")))


@functools.lru_cache(maxsize=16)
def _factors_fp32(n: int, device: str) -> tuple[torch.Tensor, ...]:
    return tuple(f.to(device=device, dtype=torch.float32) for f in rotation_factors(n))


def rotation_matrix(n: int, dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
    """R = H.T / sqrt(n), orthogonal: the rotation applied to the out_proj input (``y @ R``),
    on ``device`` (the CPU if None; the values do not depend on it)."""
    return (_hadamard(n).t() / n ** 0.5).to(dtype=dtype, device=device)
