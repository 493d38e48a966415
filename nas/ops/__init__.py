"""Candidate operations: the DARTS primitives and five efficient-convolution papers.

Importing this package registers every op in :data:`OPS`.
"""

from nas.ops import primitives as _primitives  # noqa: F401  (registers DARTS ops)
from nas.ops._registry import (
    OPS,
    create_op,
    is_parameter_free,
    list_ops,
    op_family,
    register_op,
)
from nas.ops.bdsc import BDSCConv2d, BDSCDeploy2d, clamp_bdsc_
from nas.ops.c2sp import C2spConv2d
from nas.ops.doconv import DOConv2d
from nas.ops.osep import OSepConv2d, solve_osep_groups
from nas.ops.ssl import SparseShift2d, displacement_parameters, ssl_penalty, ssl_sparsity

__all__ = [
    "OPS",
    "register_op",
    "create_op",
    "list_ops",
    "op_family",
    "is_parameter_free",
    "C2spConv2d",
    "OSepConv2d",
    "solve_osep_groups",
    "BDSCConv2d",
    "BDSCDeploy2d",
    "clamp_bdsc_",
    "SparseShift2d",
    "ssl_penalty",
    "ssl_sparsity",
    "displacement_parameters",
    "DOConv2d",
]
