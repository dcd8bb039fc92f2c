"""conv1x1: the pointwise convolution for PyTorch, forward and backward, in both memory layouts.

The package, file by file: checks.py validates the arguments; views.py sees the tensors as the
matrices the products need; gemm.py, native.py and onednn.py are the libraries each pass can run
on; choice.py picks among them; passes.py runs each pass on its pick; pool.py keeps freed outputs
mapped; operator.py is the op itself.
"""

from .checks import ACTIVATIONS
from .choice import BACKENDS, chosen_backends, set_backend
from .native import native_isa
from .operator import conv1x1
from .pool import set_output_pool

__all__ = [
    "ACTIVATIONS",
    "BACKENDS",
    "chosen_backends",
    "conv1x1",
    "native_isa",
    "set_backend",
    "set_output_pool",
]
