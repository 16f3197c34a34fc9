"""Head and dim grouping of the x channels (Quamba2), and the reordering that makes groups contiguous.

Inside each SSD group (heads never leave it, since B and C are shared by its heads):

- **Head groups**: every head is described by its *sorted* per-channel absmax profile (log scale,
  so that distance is about ratios, as quantization error is); KMeans (scikit-learn, fixed
  ``random_state``) clusters the heads into ``nhg`` groups. Groups are ordered by their mean head
  absmax and heads inside a group by their own absmax, so the layout is deterministic.
- **Dim groups**: each head's channels are sorted by absmax (a per-head permutation), so the head
  group's profile (the element-wise max over its heads) is non-decreasing; it is cut into ``ndg``
  contiguous ranges by dynamic programming that minimizes ``sum over ranges of len * max^2``, i.e.
  the total uniform rounding noise (variance ``s^2 / 12`` per element with ``s = max / 127``).
  This is exact for the quantity group scales exist to reduce, where 1-D KMeans on log absmax
  would only approximate it and an equal-count split would ignore the data.

``apply_layout`` then permutes the float model's weights so that each group is a contiguous range
(in_proj rows of z, x and dt; conv weight and bias of x; A_log, D, dt_bias; gated-norm weight;
out_proj columns). The permuted model computes the same function (test: same logits).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from .validate import QMambaInputError


@dataclass
class GroupLayout:
    """Grouping of one layer's x channels (in the reordered model's channel order)."""
    head_perm: torch.Tensor          # long [h]: new head i is old head head_perm[i]
    channel_perm: torch.Tensor       # long [h*p]: new channel c is old channel channel_perm[c]
    x_head_group_range: torch.Tensor  # int32 [g, nhg] cumulative ends
    x_dim_group_range: torch.Tensor   # int32 [g, nhg, ndg] cumulative ends

    @property
    def n_head_groups(self) -> int:
        return self.x_head_group_range.shape[1]

    @property
    def n_dim_groups(self) -> int:
        return self.x_dim_group_range.shape[2]

    def head_group_heads(self, sg: int, hg: int, hpg: int) -> range:
        """Global (reordered) head indices of head group ``hg`` of SSD group ``sg``."""
        ends = self.x_head_group_range[sg].tolist()
        lo = 0 if hg == 0 else ends[hg - 1]
        return range(sg * hpg + lo, sg * hpg + ends[hg])

    def dim_group_dims(self, sg: int, hg: int, dg: int) -> range:
        ends = self.x_dim_group_range[sg, hg].tolist()
        return range(0 if dg == 0 else ends[dg - 1], ends[dg])


def identity_layout(nheads: int, headdim: int, ngroups: int) -> GroupLayout:
    """One head group and one dim group per SSD group, no reordering (per-tensor baseline)."""
    return GroupLayout(torch.arange(nheads), torch.arange(nheads * headdim),
                       torch.full((ngroups, 1), nheads // ngroups, dtype=torch.int32),
                       torch.full((ngroups, 1, 1), headdim, dtype=torch.int32))


def split_sorted_profile(profile: torch.Tensor, ndg: int) -> list[int]:
    """Cumulative ends of ``ndg`` contiguous ranges of a non-decreasing profile minimizing
    ``sum len * max^2`` (exact dynamic programming, O(ndg * p^2))."""
    p = profile.numel()
    if not 1 <= ndg <= p:
        raise QMambaInputError(f"grouping: cannot cut {p} dims into {ndg} dim groups")
    sq = [float(v) ** 2 for v in profile]
    inf = float("inf")
    best = [[inf] * (p + 1) for _ in range(ndg + 1)]
    cut = [[0] * (p + 1) for _ in range(ndg + 1)]
    best[0][0] = 0.0
    for k in range(1, ndg + 1):
        for j in range(k, p - (ndg - k) + 1):
            for i in range(k - 1, j):
                c = best[k - 1][i] + (j - i) * sq[j - 1]
                if c < best[k][j]:
                    best[k][j], cut[k][j] = c, i
    ends, j = [], p
    for k in range(ndg, 0, -1):
        ends.append(j)
        j = cut[k][j]
    return ends[::-1]


def cluster_heads(profiles: torch.Tensor, nhg: int, seed: int = 0) -> list[list[int]]:
    """Local head indices per head group, groups ordered by mean absmax, heads by their absmax."""
    hpg = profiles.shape[0]
    if not 1 <= nhg <= hpg:
        raise QMambaInputError(f"grouping: cannot split {hpg} heads per SSD group into {nhg} head groups")
    head_max = profiles[:, -1]
    if nhg == 1:
        labels = [0] * hpg
    elif nhg == hpg:
        labels = list(range(hpg))
    else:
        from sklearn.cluster import KMeans

        feats = torch.log(profiles.clamp_min(1e-12)).double().numpy()
        labels = KMeans(n_clusters=nhg, random_state=seed, n_init=10).fit(feats).labels_.tolist()
        if len(set(labels)) < nhg:
            # Fewer distinct profiles than clusters: equal-count split of heads sorted by absmax.
            order = torch.argsort(head_max, stable=True).tolist()
            labels = [0] * hpg
            for rank, hd in enumerate(order):
                labels[hd] = rank * nhg // hpg
    groups = [[hd for hd in range(hpg) if labels[hd] == c] for c in range(nhg)]
    groups.sort(key=lambda hs: float(head_max[hs].mean()))
    return [sorted(hs, key=lambda hd: (float(head_max[hd]), hd)) for hs in groups]


def make_layout(x_absmax: torch.Tensor, nheads: int, headdim: int, ngroups: int, nhg: int,
                ndg: int, seed: int = 0) -> GroupLayout:
    """Grouping of one layer from the per-channel absmax ``[h*p]`` of its conv+SiLU x output."""
    h, p, g = nheads, headdim, ngroups
    hpg = h // g
    a = x_absmax.float().reshape(h, p)
    dim_order = torch.argsort(a, dim=1, stable=True)                # per head, ascending
    profiles = torch.gather(a, 1, dim_order)
    head_perm, head_ends, dim_ends = [], [], []
    for sg in range(g):
        groups = cluster_heads(profiles[sg * hpg:(sg + 1) * hpg], nhg, seed)
        ends, n_done, sg_dim_ends = [], 0, []
        for hs in groups:
            head_perm += [sg * hpg + hd for hd in hs]
            n_done += len(hs)
            ends.append(n_done)
            group_profile = profiles[[sg * hpg + hd for hd in hs]].amax(dim=0)
            sg_dim_ends.append(split_sorted_profile(group_profile, ndg))
        head_ends.append(ends)
        dim_ends.append(sg_dim_ends)
    head_perm_t = torch.tensor(head_perm, dtype=torch.long)
    channel_perm = (head_perm_t[:, None] * p + dim_order[head_perm_t]).reshape(-1)
    return GroupLayout(head_perm_t, channel_perm, torch.tensor(head_ends, dtype=torch.int32),
                       torch.tensor(dim_ends, dtype=torch.int32))


@torch.no_grad()
def apply_layout(float_model, layouts: list[GroupLayout]):
    """A copy of a transformers Mamba2ForCausalLM with every layer's x channels permuted."""
    model = copy.deepcopy(float_model)
    for layer, lay in zip(model.backbone.layers, layouts):
        m = layer.mixer
        d = m.num_heads * m.head_dim
        gn = m.n_groups * m.ssm_state_size
        dev = m.in_proj.weight.device                    # the indices go where the weights are
        cp, hp = lay.channel_perm.to(dev), lay.head_perm.to(dev)
        rows = torch.cat([cp, d + cp, torch.arange(2 * d, 2 * d + 2 * gn, device=dev),
                          2 * d + 2 * gn + hp])
        m.in_proj.weight.copy_(m.in_proj.weight[rows])
        conv_rows = torch.cat([cp, torch.arange(d, d + 2 * gn, device=dev)])
        m.conv1d.weight.copy_(m.conv1d.weight[conv_rows])
        if m.conv1d.bias is not None:
            m.conv1d.bias.copy_(m.conv1d.bias[conv_rows])
        for name in ("A_log", "D", "dt_bias"):
            getattr(m, name).copy_(getattr(m, name)[hp])
        m.norm.weight.copy_(m.norm.weight[cp])
        m.out_proj.weight.copy_(m.out_proj.weight[:, cp])
    return model
