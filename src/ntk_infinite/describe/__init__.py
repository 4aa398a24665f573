"""What the user writes: layers, activations and the text form (values only, no numerics)."""
