"""conv1x1: the pointwise convolution for PyTorch, forward and backward, in both memory layouts.

The package, file by file: checks.py validates the arguments; views.py sees the tensors as the
matrices the products need; gemm.py, native.py and onednn.py are the libraries each pass can run
on; choice.py picks among them; passes.py runs each pass on its pick; pool.py keeps freed outputs
mapped; library.py registers the op with PyTorch (torch.ops.onebyone.conv1x1: fake kernels, autograd,
autocast, FLOPs, the decomposition ONNX export writes); operator.py is the public function.
"""

from .checks import ACTIVATIONS
from .choice import BACKENDS, chosen_backends, set_backend
from .library import decompositions
from .native import native_isa
from .operator import conv1x1
from .pool import set_output_pool

__all__ = [
    "ACTIVATIONS",
    "BACKENDS",
    "chosen_backends",
    "conv1x1",
    "decompositions",
    "native_isa",
    "set_backend",
    "set_output_pool",
]
