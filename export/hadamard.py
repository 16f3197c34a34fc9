"""Orthogonal Hadamard rotations for the out_proj input (Quamba2 rotates it to spread outliers).

Sizes: ``2^k``, ``12 * 2^k`` and ``20 * 2^k`` (which covers Quamba2's ``40 * 2^k``). Orders 12 and 20
come from Paley's first construction (q = 11 and q = 19, both prime and = 3 mod 4); larger orders
are Kronecker products with Sylvester's ``[[1, 1], [1, -1]]`` doubling. ``scipy.linalg.hadamard``
only builds powers of two, hence this module.

The rotation used by the model is ``R = H / sqrt(n)`` (orthogonal): the rotated activation is
``y @ R`` and the folded out_proj weight is ``W @ R``, so that ``(y @ R) @ (W @ R).T == y @ W.T``.
"""
from __future__ import annotations

import functools

import torch

_PALEY_PRIMES = {12: 11, 20: 19}


def _legendre(a: int, q: int) -> int:
    """Legendre symbol (a / q) for a prime q: 0, 1 or -1."""
    a %= q
    if a == 0:
        return 0
    return 1 if pow(a, (q - 1) // 2, q) == 1 else -1


def paley_hadamard(order: int) -> torch.Tensor:
    """Hadamard matrix of order 12 or 20 (Paley I: ``I + [[0, 1^T], [-1, Q]]``, Q the Jacobsthal matrix)."""
    if order not in _PALEY_PRIMES:
        raise ValueError(f"hadamard: Paley orders built here are 12 and 20, got {order}")
    q = _PALEY_PRIMES[order]
    Q = torch.tensor([[_legendre(j - i, q) for j in range(q)] for i in range(q)], dtype=torch.float64)
    S = torch.zeros(q + 1, q + 1, dtype=torch.float64)
    S[0, 1:] = 1.0
    S[1:, 0] = -1.0
    S[1:, 1:] = Q
    return torch.eye(q + 1, dtype=torch.float64) + S


def hadamard_base(n: int) -> tuple[int, int]:
    """(base order 1, 12 or 20, power of two k) with n = base * 2^k; ValueError for other sizes."""
    for base in (1, 12, 20):
        if n >= base and n % base == 0:
            m = n // base
            if m & (m - 1) == 0:
                return base, m.bit_length() - 1
    raise ValueError(f"hadamard: size {n} is not 2^k, 12*2^k, 20*2^k or 40*2^k")


def is_supported_size(n: int) -> bool:
    try:
        hadamard_base(n)
        return True
    except ValueError:
        return False


@functools.lru_cache(maxsize=16)
def _hadamard(n: int) -> torch.Tensor:
    base, k = hadamard_base(n)
    H = paley_hadamard(base) if base > 1 else torch.ones(1, 1, dtype=torch.float64)
    two = torch.tensor([[1.0, 1.0], [1.0, -1.0]], dtype=torch.float64)
    for _ in range(k):
        H = torch.kron(two, H)
    return H


def hadamard_matrix(n: int) -> torch.Tensor:
    """The unnormalized +-1 Hadamard matrix of order n (float64, H @ H.T == n * I)."""
    return _hadamard(n).clone()


def rotation_matrix(n: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """R = H / sqrt(n), orthogonal: the rotation applied to the out_proj input (``y @ R``)."""
    return (_hadamard(n) / n ** 0.5).to(dtype)
