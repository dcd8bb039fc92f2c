"""conv1x1: the pointwise convolution for PyTorch, forward and backward, in both memory layouts.

The package, file by file: checks.py validates the arguments; views.py sees the tensors as the
matrices the products need; gemm.py, native.py and onednn.py are the libraries each pass can run
on; choice.py times them and picks, cache.py keeps the picks on disk per machine; passes.py names
each pass's candidates and runs it on its pick; step.py times a training call's whole step on
conv1x1's autograd function against PyTorch's own differentiable ops; pool.py keeps freed outputs
mapped; library.py registers the op with PyTorch (torch.ops.onebyone.conv1x1: fake kernels, autograd,
autocast, FLOPs, the decomposition ONNX export writes); operator.py is the public function.
"""

from .checks import ACTIVATIONS
from .choice import (
    BACKENDS,
    TIMING_BUDGET,
    choice_timings,
    choices_path,
    chosen_backends,
    clear_choices,
    pin_choices,
    set_backend,
)
from .library import decompositions
from .native import native_isa
from .operator import conv1x1
from .pool import set_output_pool

__all__ = [
    "ACTIVATIONS",
    "BACKENDS",
    "TIMING_BUDGET",
    "choice_timings",
    "choices_path",
    "chosen_backends",
    "clear_choices",
    "conv1x1",
    "decompositions",
    "native_isa",
    "pin_choices",
    "set_backend",
    "set_output_pool",
]
