"""Program + data -> Gram matrices: the point and pair passes, jitted numerics, forward-mode gradients."""
