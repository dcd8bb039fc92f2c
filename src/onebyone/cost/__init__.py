"""What a model costs, layer by layer: parameters, multiply-adds, bytes, intensity and time.

:func:`cost` runs one forward pass of any ``nn.Module`` on a random input of the given
size and writes down, for every layer call, what it is (a 1x1 convolution, a depthwise
one, a pool, a norm, ...), the shapes it saw, its parameters, the multiply-adds (MACs)
it performed, the bytes it read and wrote, its arithmetic intensity, and the least
time it can take on this machine by the roofline of :mod:`onebyone.machine`
(optionally, the time it did take: ``measure=True``).

Two sources feed the report (``tracer``):

* forward hooks on every module. A module of a known type (convolutions, ``Conv1x1``,
  linear, pools, norms, activations, dropout, flatten, identity) is one row, counted
  by its own rule; what runs inside it is not looked at again.
* a ``TorchFunctionMode`` that sees every torch function called *outside* such a
  module: the ``torch.cat`` and ``x + y`` in a container's ``forward``, an ``F.relu``
  called directly, a ``matmul``, or the insides of a custom module of unknown type.
  Each becomes a row named ``<module>.<function>``. Views (``view``, ``flatten``,
  ``permute``, indexing), tensor creation and calls that return no tensor cost nothing
  and are not listed; a function that returns a tensor and has no counting rule is
  listed under "not counted", never counted as zero in silence.

The files:

- ``rows``: :data:`KINDS` (every kind a row can have, with how it is counted) and
  :class:`LayerCost`, one layer call;
- ``rules``: the counting rules, one per kind of arithmetic (convolution, linear, pool,
  norm, per element); ``modules``: the module types counted as one row and the rule each
  takes; ``functions``: the torch functions, by name, and theirs;
- ``tracer``: the hooks and the function mode that turn one forward pass into rows;
- ``forward``: :func:`cost`, the pass itself, the timing with ``measure`` and the roofline;
- ``report``: :class:`CostReport`, totals, by kind, by block, as a table, JSON or CSV;
  ``plot``: the report as a PNG; ``text``: numbers as text;
- ``bottleneck``: :func:`bottleneck_cost`, the Inception question in params and MACs;
- ``load``: :func:`load_model`, a model by registered name, file or module.

Conventions, printed with every report:

* 1 MAC (multiply-add) counts once and equals 2 FLOPs. MACs are the products of
  weights and activations in convolutions, linear layers and matrix products, exactly
  what ``torch.utils.flop_counter`` counts (it reports 2 FLOPs per MAC).
* Bias (the additive ``bias`` of convolutions and linear layers) is counted by a
  switch: when on, its parameters are in ``params`` and each bias add is 1 FLOP per
  output element (an add, not a MAC); when off, both are left out.
* Other arithmetic (pools, norms, activations, element-wise ops, reductions) is in
  ``flops`` at a per-element rate that each row states in its ``rule``.
* The model runs in eval mode without autograd: the cost of inference. Bytes are
  what a layer must move at least once: its weights and buffers, its inputs and its
  outputs. Arithmetic intensity is FLOPs per byte moved. GB, MB are 10^9, 10^6 bytes.
"""

from .bottleneck import BottleneckCost, bottleneck_cost
from .forward import cost
from .load import load_model
from .report import CostReport
from .rows import KINDS, LayerCost

__all__ = [
    "KINDS",
    "BottleneckCost",
    "CostReport",
    "LayerCost",
    "bottleneck_cost",
    "cost",
    "load_model",
]
