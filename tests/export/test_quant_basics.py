"""Hand-computed cases: rounding ties, saturation, the group lookup, Hadamard matrices, grouping."""
from __future__ import annotations

import pytest
import torch

from qmamba.export import hadamard as had
from qmamba.export import ops
from qmamba.export.grouping import cluster_heads, make_layout, split_sorted_profile
from qmamba.export.observers import ChannelObserver, percentile_of_abs
from qmamba.export.quant_modules import QuantLinear, quantize_rows


def test_rounding_ties_go_to_even():
    v = torch.tensor([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 0.49999997, 2.5000002])
    assert ops.quantize(v, 1.0).tolist() == [0, 2, 2, 0, -2, -2, 0, 3]
    # the tie is decided on v / s (true division, exactly -115.5 -> -116), never on v * (1 / s)
    # (-115.49999 -> -115)
    s = torch.tensor(0.07576315850019455)
    v = torch.tensor([-8.75064468383789])
    assert (v / s).item() == -115.5 and (v * (1 / s)).item() != -115.5
    assert ops.quantize(v, s).tolist() == [-116]


def test_saturation():
    v = torch.tensor([127.4, 127.5, 128.0, 1e9, -128.4, -128.5, -129.0, -1e9])
    assert ops.quantize(v, 1.0).tolist() == [127, 127, 127, 127, -128, -128, -128, -128]
    assert ops.quantize(v, 1.0).dtype == torch.int8


def test_group_lookup_by_hand():
    # g = 2 SSD groups, 4 heads each (h = 8), p = 4 dims; 2 head groups x 2 dim groups.
    hr = torch.tensor([[1, 4], [3, 4]], dtype=torch.int32)          # group ends (cumulative)
    dr = torch.tensor([[[3, 4], [1, 4]], [[2, 4], [2, 4]]], dtype=torch.int32)
    xs = torch.tensor([[[1.0, 2.0], [3.0, 4.0]], [[5.0, 6.0], [7.0, 8.0]]])
    s = ops.x_channel_scales(xs, hr, dr, nheads=8, headdim=4).reshape(8, 4)
    expected = torch.tensor([
        [1, 1, 1, 2],        # head 0: sg 0, h_loc 0 -> hg 0; dims 0-2 dg 0, dim 3 dg 1
        [3, 4, 4, 4],        # heads 1-3: hg 1; dim 0 dg 0, dims 1-3 dg 1
        [3, 4, 4, 4],
        [3, 4, 4, 4],
        [5, 5, 6, 6],        # heads 4-6: sg 1, hg 0
        [5, 5, 6, 6],
        [5, 5, 6, 6],
        [7, 7, 8, 8],        # head 7: sg 1, hg 1
    ], dtype=torch.float32)
    assert torch.equal(s, expected)
    st = ops.state_scales(xs[..., None].expand(2, 2, 2, 3).contiguous(), hr, dr, 8, 4)
    assert st.shape == (8, 4, 3) and torch.equal(st[..., 1], expected)


def test_quantize_rows_and_linear_exact():
    w = torch.tensor([[0.5, -1.0, 0.25], [0.0, 0.0, 0.0], [3.0, 1.5, -0.75]])
    q, s = quantize_rows(w)
    assert s.tolist() == pytest.approx([1 / 127, 1 / 127, 3 / 127])
    assert q[0].tolist() == [64, -127, 32] and q[1].tolist() == [0, 0, 0] and q[2].tolist() == [127, 64, -32]
    lin = QuantLinear.from_float(w, input_scale=0.5)
    x = torch.tensor([[2, -3, 127]], dtype=torch.int8)
    acc = (x.long() @ q.long().t())                              # exact integers
    assert torch.equal(lin(x), acc.float() * (torch.tensor(0.5) * s))


def test_hadamard_matrices():
    from scipy.linalg import hadamard

    for n in (1, 2, 12, 20, 40, 48, 64, 80, 96, 160, 1536):
        H = had.hadamard_matrix(n)
        assert set(H.unique().tolist()) <= {-1.0, 1.0}
        assert torch.equal(H @ H.t(), n * torch.eye(n, dtype=torch.float64)), n
        R = had.rotation_matrix(n, torch.float64)
        assert torch.allclose(R @ R.t(), torch.eye(n, dtype=torch.float64), atol=1e-12)
    assert torch.equal(had.hadamard_matrix(64), torch.tensor(hadamard(64), dtype=torch.float64))
    # kernel layout: flat index = i_base * 2^k + i_sylvester
    assert torch.equal(had.hadamard_matrix(48), torch.kron(had.hadamard_matrix(12), had.hadamard_matrix(4)))
    assert torch.equal(had.hadamard_matrix(40), torch.kron(had.hadamard_matrix(2), had.hadamard_matrix(20)))
    for bad in (3, 24 * 3, 100):
        with pytest.raises(ValueError, match="hadamard: size"):
            had.hadamard_matrix(bad)


def test_hadamard_fold_keeps_the_linear_map():
    torch.manual_seed(0)
    y, W = torch.randn(5, 48, dtype=torch.float64), torch.randn(7, 48, dtype=torch.float64)
    R = had.rotation_matrix(48, torch.float64)
    assert torch.allclose((y @ R) @ (W @ R).t(), y @ W.t(), atol=1e-10)
    # y @ R is what the kernels compute per row: H y / sqrt(n)
    assert torch.allclose(y @ R, (had.hadamard_matrix(48) @ y.t()).t() / 48 ** 0.5, atol=1e-12)


@pytest.mark.parametrize("n, sizes", [(12, [12]), (128, [128]), (256, [2, 128]), (160, [40, 4]),
                                      (1536, [12, 128]), (3072, [24, 128]), (5120, [40, 128]),
                                      (8192, [64, 128]), (1 << 16, [4, 128, 128])])
def test_hadamard_rotation_is_the_kronecker_product_of_its_factors(n, sizes):
    """The graphs and the reference rotate by small factors (mamba2-130m / 2.7b / 8b: 1536, 5120, 8192),
    never an n x n matrix; their Kronecker product is the rotation itself, and ``rotate`` is ``g @ R``
    up to fp32 rounding."""
    import functools

    assert had.rotation_sizes(n) == sizes
    factors = had.rotation_factors(n)
    assert [f.shape[0] for f in factors] == sizes
    for f in factors:
        assert torch.allclose(f @ f.t(), torch.eye(f.shape[0], dtype=torch.float64), atol=1e-12)
    if n > 8192:
        return
    R = had.rotation_matrix(n, torch.float64)
    assert torch.allclose(functools.reduce(torch.kron, factors), R, atol=1e-15, rtol=0)
    g = torch.randn(2, 3, n, generator=torch.Generator().manual_seed(n))
    want = g.double() @ R
    got = had.rotate(g)
    assert got.dtype == torch.float32 and got.shape == g.shape
    assert ((got.double() - want).norm() / want.norm()).item() < 1e-6


def test_dim_split_minimizes_rounding_noise():
    # one outlier: it gets a group of its own, the rest share the next largest value
    prof = torch.tensor([1.0, 1.0, 1.0, 1.0, 1.1, 1.2, 1.3, 10.0])
    assert split_sorted_profile(prof, 2) == [7, 8]
    # brute force over all cuts agrees
    prof = torch.tensor([0.1, 0.2, 0.25, 0.9, 1.0, 1.1, 4.0, 4.2, 9.0])
    best = min(((a, b, c) for a in range(1, 7) for b in range(a + 1, 8) for c in range(b + 1, 9)),
               key=lambda e: sum((j - i) * float(prof[j - 1]) ** 2
                                 for i, j in zip((0,) + e, e + (9,))))
    assert split_sorted_profile(prof, 4) == [*best, 9]
    with pytest.raises(ValueError, match="cannot cut 3 dims into 4"):
        split_sorted_profile(prof[:3], 4)


def test_head_clustering_and_layout():
    # 8 heads in one SSD group: 4 small heads (absmax ~1) and 4 large (~8), p = 4
    torch.manual_seed(0)
    small, large = [0, 2, 5, 7], [1, 3, 4, 6]
    a = torch.ones(8, 4)
    a[large] *= 8.0
    a = a * (1 + 0.05 * torch.rand(8, 4))
    groups = cluster_heads(torch.sort(a, dim=1).values, 2)
    assert sorted(groups[0]) == small and sorted(groups[1]) == large
    lay = make_layout(a.reshape(-1), nheads=8, headdim=4, ngroups=1, nhg=2, ndg=2)
    assert lay.x_head_group_range.tolist() == [[4, 8]]
    assert sorted(lay.head_perm[:4].tolist()) == small
    # every head's channels are sorted ascending after the permutation
    ap = a.reshape(-1)[lay.channel_perm].reshape(8, 4)
    assert (ap[:, 1:] >= ap[:, :-1]).all()
    with pytest.raises(ValueError, match="cannot split 8 heads per SSD group into 9"):
        make_layout(a.reshape(-1), 8, 4, 1, 9, 2)


def test_percentile_observer_ignores_the_top_of_each_group():
    obs = ChannelObserver("percentile", alpha=0.99)
    v = torch.zeros(1000, 2)
    v[:, 0] = torch.arange(1000) / 1000.0          # group A: uniform in [0, 1)
    v[:, 1] = 0.01
    v[0, 1] = 100.0                                  # group B: one outlier in 1000
    obs.update(v)
    assert obs.group_range(torch.tensor([0])) == pytest.approx(0.989, abs=1e-6)
    assert obs.group_range(torch.tensor([1])) == pytest.approx(0.01)
    mm = ChannelObserver("minmax")
    mm.update(v)
    assert mm.group_range(torch.tensor([1])) == 100.0
    assert percentile_of_abs(torch.arange(1.0, 11.0), 1.0) == 10.0
