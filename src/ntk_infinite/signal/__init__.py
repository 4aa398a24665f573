"""Signal propagation at infinite width: fixed points, χ₁, depth scales, phases, the edge of
chaos (Poole et al. 2016; Schoenholz et al. 2017), layer by layer through a dense architecture,
and the depth at which the NTK of distinct inputs degenerates. Everything comes from the same
activation duals the kernel engine uses.
"""

from .depth import LayerwiseSignal, NTKConditioning, layerwise, ntk_condition
from .meanfield import SignalPoint, analyse, correlation_map, edge_of_chaos, variance_map

__all__ = ["SignalPoint", "analyse", "variance_map", "correlation_map", "edge_of_chaos", "LayerwiseSignal",
           "layerwise", "NTKConditioning", "ntk_condition"]
