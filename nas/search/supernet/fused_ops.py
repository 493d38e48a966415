"""One candidate op applied to one input for several edges at once (the fused supernet).

Every state of a supernet cell feeds several edges, and each edge holds its own copy of
every candidate op. For a group of ``E`` edges leaving one state, :func:`batched_op` runs
the ``E`` copies of one op as a single chain of calls: the per-edge weights are gathered
with ``torch.cat`` on every call (differentiable, and it reads the modules' current
parameters, so ``functional_call`` substitutions and in-place updates are seen), and one
convolution with ``E`` times the groups does the work of ``E`` convolutions.

Activations flow as a :class:`Stream`: either *shared*, one ``(N, C, H, W)`` tensor that is
the same for every edge (the state itself, its ReLU, a pooling of it), or *batched*, an
``(N, E·C, H, W)`` tensor holding the edges' channels edge-major (edge ``e`` owns channels
``e·C … e·C + C − 1``). Work on a shared stream runs once for all edges.

The parameters and BN buffers stay in the original modules: the running statistics of each
BatchNorm are updated in place exactly as its own forward would update them. A layer type
without a batched rule runs module by module (:func:`_per_edge`), so every op of the
registry works; the rules only make the common ones fast.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nas.ops.bdsc import BDSCConv2d, binarize_ste
from nas.ops.c2sp import C2spConv2d, C2spReLUConvBN
from nas.ops.doconv import DOConv2d
from nas.ops.osep import OSepConv2d, OSepSepConv
from nas.ops.primitives import DilConv, FactorizedReduce, Identity, ReLUConvBN, SepConv, Zero
from nas.ops.ssl import QuantizedShift, SparseShift2d
from nas.search.supernet.fused_conv import depthwise_conv2d, pointwise_conv2d

__all__ = ["Stream", "StateCache", "batched_op", "is_batchable"]

#: Modules whose forward is exactly ``self.op(x)`` (a Sequential): fused through ``.op``.
_WRAPPERS: tuple[type, ...] = (ReLUConvBN, SepConv, DilConv, C2spReLUConvBN, OSepSepConv)


@dataclasses.dataclass(frozen=True)
class Stream:
    """An activation of ``edges`` edges: one shared tensor, or the edges' channels batched."""

    x: Tensor
    shared: bool
    edges: int

    def batched(self, cache: StateCache) -> Tensor:
        """The edge-major ``(N, E·C, H, W)`` form (a shared tensor is repeated once, cached)."""
        return cache.repeat(self.x, self.edges) if self.shared else self.x

    def per_edge(self) -> list[Tensor]:
        """One ``(N, C, H, W)`` tensor per edge."""
        return [self.x] * self.edges if self.shared else list(self.x.chunk(self.edges, dim=1))


class StateCache:
    """Work on one state's input that several ops share: its ReLU and its E-fold repeat.

    Keyed by tensor identity; each entry also holds its key tensor, so no key can be freed
    (and its id reused by a new tensor, as happens under ``no_grad``) while the cache lives.
    """

    def __init__(self) -> None:
        self._relu: dict[int, tuple[Tensor, Tensor]] = {}
        self._repeat: dict[tuple[int, int], tuple[Tensor, Tensor]] = {}

    def relu(self, x: Tensor) -> Tensor:
        if id(x) not in self._relu:
            out = F.relu(x)
            self._relu[id(x)] = (x, out)
            self._relu[id(out)] = (out, out)  # relu(relu(x)) = relu(x)
        return self._relu[id(x)][1]

    def repeat(self, x: Tensor, edges: int) -> Tensor:
        key = (id(x), edges)
        if key not in self._repeat:
            self._repeat[key] = (x, x if edges == 1 else x.repeat(1, edges, 1, 1))
        return self._repeat[key][1]


def _cat(tensors: Sequence[Tensor]) -> Tensor:
    return tensors[0] if len(tensors) == 1 else torch.cat(list(tensors))


def _cat_optional(tensors: Sequence[Tensor | None]) -> Tensor | None:
    return None if tensors[0] is None else _cat(tensors)  # type: ignore[arg-type]


def _batched(x: Tensor, edges: int) -> Stream:
    return Stream(x, shared=False, edges=edges)


# --- layer rules ------------------------------------------------------------------------------

LayerRule = Callable[[Sequence[nn.Module], Stream, StateCache], Stream]


def _per_edge(mods: Sequence[nn.Module], s: Stream, cache: StateCache) -> Stream:
    """Fallback: each edge's own module on its own input, outputs concatenated."""
    outs = [m(x) for m, x in zip(mods, s.per_edge())]
    return _batched(_cat_along_channels(outs), s.edges)


def _cat_along_channels(outs: Sequence[Tensor]) -> Tensor:
    return outs[0] if len(outs) == 1 else torch.cat(list(outs), dim=1)


def _relu(mods: Sequence[nn.Module], s: Stream, cache: StateCache) -> Stream:
    if s.shared:
        return dataclasses.replace(s, x=cache.relu(s.x))
    return dataclasses.replace(s, x=F.relu(s.x))


def _unchanged(mods: Sequence[nn.Module], s: Stream, cache: StateCache) -> Stream:
    return s


def _stateless(mods: Sequence[nn.Module], s: Stream, cache: StateCache) -> Stream:
    """Per-channel layers without parameters (pooling): one call, shared stays shared."""
    return dataclasses.replace(s, x=mods[0](s.x))


def _grouped_conv(
    s: Stream, cache: StateCache, weight: Tensor, bias: Tensor | None, conv: nn.Module
) -> Stream:
    """One convolution for all edges; ``weight`` is the edges' kernels concatenated.

    A dense convolution (``groups == 1``) on a shared input needs no copy of the input: its
    ``E·C_out`` output channels are already edge-major. Otherwise the input is batched and
    the groups multiplied by ``E``.
    """
    if s.shared and conv.groups == 1:
        x, groups = s.x, 1
    else:
        x, groups = s.batched(cache), conv.groups * s.edges
    if bias is None and groups == x.shape[1] == weight.shape[0]:
        out = depthwise_conv2d(x, weight, conv.stride, conv.padding, conv.dilation)
    elif bias is None and _is_pointwise(conv):
        out = pointwise_conv2d(x, weight, groups)
    else:
        out = F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, groups)
    return _batched(out, s.edges)


def _is_pointwise(conv: nn.Module) -> bool:
    return (
        tuple(conv.kernel_size) == (1, 1)
        and tuple(conv.stride) == (1, 1)
        and tuple(conv.padding) == (0, 0)
    )


def _conv(mods: Sequence[nn.Module], s: Stream, cache: StateCache) -> Stream:
    if mods[0].padding_mode != "zeros":
        return _per_edge(mods, s, cache)
    weight = _cat([m.weight for m in mods])
    return _grouped_conv(s, cache, weight, _cat_optional([m.bias for m in mods]), mods[0])


def _c2sp(mods: Sequence[nn.Module], s: Stream, cache: StateCache) -> Stream:
    """Shift-pad the shared input once (the padding has no parameters), one dense conv."""
    if not s.shared:
        return _per_edge(mods, s, cache)
    padded = dataclasses.replace(s, x=mods[0].shift_pad_concat(s.x))
    return _conv(mods, padded, cache)


def _shuffle_per_edge(x: Tensor, edges: int, groups: int) -> Tensor:
    """:func:`nas.ops.osep.channel_shuffle` applied to each edge's channels."""
    n, c, h, w = x.shape
    per_edge = c // edges
    if groups <= 1 or groups == per_edge:  # the identity permutation
        return x
    x = x.reshape(n, edges, groups, per_edge // groups, h, w).transpose(2, 3)
    return x.reshape(n, c, h, w)


def _osep(mods: Sequence[nn.Module], s: Stream, cache: StateCache) -> Stream:
    s = _conv([m.conv1 for m in mods], s, cache)
    s = dataclasses.replace(s, x=_shuffle_per_edge(s.x, s.edges, mods[0].g1))
    return _conv([m.conv2 for m in mods], s, cache)


def _bdsc(mods: Sequence[nn.Module], s: Stream, cache: StateCache) -> Stream:
    """Pointwise conv, then one binary conv; the XNOR scale is per output channel, so
    binarizing the concatenated latent kernels equals concatenating the binary ones."""
    s = _conv([m.pointwise for m in mods], s, cache)
    weight = binarize_ste(_cat([m.Q for m in mods]))
    m0 = mods[0]
    bias = _cat_optional([m.bias for m in mods])
    out = F.conv2d(s.x, weight, bias, m0.stride, m0.padding, 1, s.edges)
    return _batched(out, s.edges)


def _shift(mods: Sequence[nn.Module], s: Stream, cache: StateCache) -> Stream:
    """The per-channel shifts of all edges as one shift over the batched channels."""
    disp = _cat([m.displacement.detach() if m.frozen else m.displacement for m in mods])
    return _batched(QuantizedShift.apply(s.batched(cache), disp), s.edges)


def _doconv(mods: Sequence[nn.Module], s: Stream, cache: StateCache) -> Stream:
    weight = _cat([m.composed_weight() for m in mods]).to(s.x.dtype)
    bias = _cat_optional([m.bias for m in mods])
    if bias is not None:
        bias = bias.to(s.x.dtype)
    return _grouped_conv(s, cache, weight, bias, mods[0])


def _batch_norm(mods: Sequence[nn.Module], s: Stream, cache: StateCache) -> Stream:
    """One ``batch_norm`` over the edges' channels; each module's running statistics are
    updated exactly as its own forward would (statistics are per channel, so concatenating
    channels changes nothing)."""
    bn = mods[0]
    if bn.momentum is None or not bn.track_running_stats:
        return _per_edge(mods, s, cache)  # cumulative averages: rare, keep the module's code
    if s.shared and bn.training and not bn.affine:
        return _shared_batch_norm(mods, s)
    # both statistics in one buffer (one cat), updated in place through its two halves; one
    # edge updates its module's own buffers
    stats = None
    if len(mods) == 1:
        running_mean, running_var = bn.running_mean, bn.running_var
    else:
        stats = torch.cat([m.running_mean for m in mods] + [m.running_var for m in mods])
        running_mean, running_var = stats.chunk(2)
    weight = _cat_optional([m.weight for m in mods])
    bias = _cat_optional([m.bias for m in mods])
    out = F.batch_norm(
        s.batched(cache), running_mean, running_var, weight, bias, bn.training,
        bn.momentum if bn.training else 0.0, bn.eps,
    )  # fmt: skip
    if bn.training:
        _write_back(mods, stats)
    return _batched(out, s.edges)


@torch.no_grad()
def _write_back(mods: Sequence[nn.Module], stats: Tensor | None) -> None:
    """Copy the updated concatenated statistics (means, then variances; None: updated in
    place already) into each module; count the batch."""
    if stats is not None:
        torch._foreach_copy_(
            [m.running_mean for m in mods] + [m.running_var for m in mods],
            list(stats.split(mods[0].num_features)),
        )
    torch._foreach_add_([m.num_batches_tracked for m in mods], 1)


def _shared_batch_norm(mods: Sequence[nn.Module], s: Stream) -> Stream:
    """Training-mode BN without affine on an input all edges share (pooling's BN): the output
    is the same for every edge, so it is computed once. The batch statistics (unbiased
    variance, as BatchNorm keeps) come from one ``var_mean``, and one multi-tensor ``lerp``
    moves every module's running statistics towards them."""
    bn = mods[0]
    out = F.batch_norm(s.x, None, None, None, None, True, 0.0, bn.eps)
    with torch.no_grad():
        stats = [m.running_mean for m in mods] + [m.running_var for m in mods]
        var, mean = torch.var_mean(s.x.to(stats[0].dtype), dim=(0, 2, 3), correction=1)
        batch = [mean] * len(mods) + [var] * len(mods)
        torch._foreach_lerp_(stats, batch, bn.momentum)
        torch._foreach_add_([m.num_batches_tracked for m in mods], 1)
    return dataclasses.replace(s, x=out)


_LAYER_RULES: dict[type, LayerRule] = {
    nn.ReLU: _relu,
    nn.Identity: _unchanged,
    Identity: _unchanged,
    nn.Conv2d: _conv,
    nn.BatchNorm2d: _batch_norm,
    nn.MaxPool2d: _stateless,
    nn.AvgPool2d: _stateless,
    C2spConv2d: _c2sp,
    OSepConv2d: _osep,
    BDSCConv2d: _bdsc,
    SparseShift2d: _shift,
    DOConv2d: _doconv,
}


def _unwrap(mods: Sequence[nn.Module]) -> Sequence[nn.Module]:
    while type(mods[0]) in _WRAPPERS:
        mods = [m.op for m in mods]
    return mods


def _factorized_reduce(mods: Sequence[nn.Module], s: Stream, cache: StateCache) -> Stream:
    """``skip_connect`` at stride 2: two strided 1x1 convs per edge become two in all."""
    x = cache.relu(s.x)
    h, w = x.shape[-2:]
    shifted = x[:, :, 1:, 1:]
    if h % 2 or w % 2:
        shifted = F.pad(shifted, (0, w % 2, 0, h % 2))
    a = _conv([m.conv_1 for m in mods], dataclasses.replace(s, x=x), cache).x
    b = _conv([m.conv_2 for m in mods], dataclasses.replace(s, x=shifted), cache).x
    e = s.edges
    # per edge [conv_1 channels, conv_2 channels], as each module's torch.cat does
    both = torch.cat([a.unflatten(1, (e, -1)), b.unflatten(1, (e, -1))], dim=2).flatten(1, 2)
    return _batch_norm([m.bn for m in mods], _batched(both, e), cache)


def is_batchable(mods: Sequence[nn.Module]) -> bool:
    """Whether the ``E`` copies of an op have the same structure (same types and settings)."""
    first = repr(mods[0])
    return all(type(m) is type(mods[0]) and repr(m) == first for m in mods[1:])


def _run(mods: Sequence[nn.Module], s: Stream, cache: StateCache) -> Stream:
    """Sequentials layer by layer; a layer type without a rule runs per edge."""
    mods = _unwrap(mods)
    kind = type(mods[0])
    if kind is nn.Sequential:
        for layers in zip(*mods):
            s = _run(layers, s, cache)
        return s
    if kind is FactorizedReduce:
        return _factorized_reduce(mods, s, cache)
    return _LAYER_RULES.get(kind, _per_edge)(mods, s, cache)


def batched_op(mods: Sequence[nn.Module], s: Stream, cache: StateCache) -> Stream | None:
    """The ``E`` copies ``mods`` of one candidate op on stream ``s``; None for ``none``
    (zeros: the op costs nothing, its α only enters the softmax)."""
    if type(mods[0]) is Zero:
        return None
    return _run(mods, s, cache)
