"""The DARTS supernet: the reference ``MixedOp`` cells (:mod:`.model`) and the fused forward
that runs each cell's edges as batched ops (:mod:`.fused`, :mod:`.fused_ops`,
:mod:`.fused_conv`)."""
