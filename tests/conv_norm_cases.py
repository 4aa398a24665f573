"""Convolutional networks with LayerNorm and standard parameterisation, as plain specs that this
library, the naive reference (tests/naive.py) and neural-tangents all build."""

import math

import ntk_infinite as nk

#: Items: ("conv", filter, strides, padding, w, b, parameterization, channels), ("dense", w, b,
#: parameterization, width), ("relu",), ("erf",), ("layernorm", eps), ("avgpool", window, strides,
#: padding), ("gap",), ("flatten",).
CASES = {
    "layernorm-gap": [("conv", (3, 2), (1, 1), "SAME", 1.5, 0.1, "ntk", 8), ("layernorm", 1e-12), ("relu",),
                      ("conv", (2, 2), (1, 1), "VALID", 1.3, 0.0, "ntk", 8), ("layernorm", 0.2), ("erf",), ("gap",),
                      ("dense", 1.2, 0.1, "ntk", 1)],
    "layernorm-flatten": [("conv", (3, 2), (1, 1), "SAME", 1.5, 0.1, "ntk", 8), ("layernorm", 1e-12), ("relu",),
                          ("conv", (2, 2), (1, 1), "VALID", 1.3, 0.0, "ntk", 8), ("layernorm", 0.2), ("erf",),
                          ("flatten",), ("dense", 1.2, 0.1, "ntk", 1)],
    "standard-gap": [("conv", (3, 2), (1, 1), "SAME", 1.5, 0.1, "standard", 16), ("relu",),
                     ("conv", (2, 2), (2, 1), "SAME", 1.3, 0.0, "standard", 8), ("relu",),
                     ("avgpool", (2, 2), (1, 1), "SAME"), ("gap",), ("dense", 1.2, 0.1, "standard", 1)],
    "standard-flatten": [("conv", (3, 2), (1, 1), "SAME", 1.5, 0.1, "standard", 16), ("relu",),
                         ("conv", (2, 2), (1, 1), "VALID", 1.3, 0.0, "standard", 8), ("relu",), ("flatten",),
                         ("dense", 1.2, 0.1, "standard", 10), ("relu",), ("dense", 1.0, 0.0, "standard", 1)],
}


def architecture(name):
    layers = []
    for item in CASES[name]:
        kind = item[0]
        if kind == "conv":
            _, filt, strides, padding, w, b, param, chans = item
            layers.append(nk.Conv(filter_shape=filt, strides=strides, padding=padding, w_std=w, b_std=b,
                                  channels=chans, parameterization=param))
        elif kind == "dense":
            _, w, b, param, width = item
            layers.append(nk.Dense(w_std=w, b_std=b, width=width, parameterization=param))
        elif kind == "relu":
            layers.append(nk.ReLU())
        elif kind == "erf":
            layers.append(nk.Erf())
        elif kind == "layernorm":
            layers.append(nk.LayerNorm(eps=item[1]))
        elif kind == "avgpool":
            layers.append(nk.AvgPool(window_shape=item[1], strides=item[2], padding=item[3]))
        elif kind == "gap":
            layers.append(nk.GlobalAvgPool())
        elif kind == "flatten":
            layers.append(nk.Flatten())
    return nk.serial(*layers)


def _out(n, k, s, padding):
    return (n - k) // s + 1 if padding == "VALID" else -(-n // s)


def naive_spec(name, input_shape):
    """The items for tests/naive.py's spatial recursion, with every fan-in written out from the
    input shape (standard parameterisation: C_in of a Conv; P·C of a Dense after Flatten)."""
    shape, chans = tuple(input_shape[:-1]), input_shape[-1]
    flat, out = None, []
    for item in CASES[name]:
        kind = item[0]
        if kind == "conv":
            _, filt, strides, padding, w, b, param, c_out = item
            out.append(("conv_std", filt, strides, padding, w, b, chans) if param == "standard"
                       else ("conv", filt, strides, padding, w, b))
            shape = tuple(_out(n, k, s, padding) for n, k, s in zip(shape, filt, strides))
            chans = c_out
        elif kind == "dense":
            _, w, b, param, width = item
            n_in = chans * (flat or 1)
            out.append(("dense_std", w, b, n_in) if param == "standard" else ("dense", w, b))
            chans, flat = width, None
        elif kind == "avgpool":
            _, window, strides, padding = item
            out.append(item)
            shape = tuple(_out(n, k, s, padding) for n, k, s in zip(shape, window, strides))
        elif kind == "flatten":
            out.append(item)
            flat = math.prod(shape)
        else:
            out.append(item)
    return out


#: Convolutional networks with parallel branches: the nk text and the naive reference's items.
BRANCH_CASES = {
    "resnet-gap": (
        "Conv(filter_shape=(3, 2), padding='SAME', w_std=1.5, b_std=0.1) > "
        "2*(Residual(ReLU > Conv(filter_shape=(3, 3), padding='SAME', w_std=1.3, b_std=0.05) > ReLU > "
        "Conv(filter_shape=(1, 2), padding='SAME', w_std=1.2))) > ReLU > GlobalAvgPool > Dense(1.2, 0.1)",
        [("conv", (3, 2), (1, 1), "SAME", 1.5, 0.1)]
        + 2 * [("fork_sum", [[("relu",), ("conv", (3, 3), (1, 1), "SAME", 1.3, 0.05), ("relu",),
                              ("conv", (1, 2), (1, 1), "SAME", 1.2, 0.0)], []])]
        + [("relu",), ("gap",), ("dense", 1.2, 0.1)]),
    "resnet-layernorm-flatten": (
        "Conv(filter_shape=(3, 2), padding='SAME', w_std=1.5, b_std=0.1) > "
        "Residual(LayerNorm > ReLU > Conv(filter_shape=(3, 3), padding='SAME', w_std=1.3, b_std=0.05)) > ReLU > "
        "Flatten > Dense(1.2, 0.1)",
        [("conv", (3, 2), (1, 1), "SAME", 1.5, 0.1),
         ("fork_sum", [[("layernorm", 1e-12), ("relu",), ("conv", (3, 3), (1, 1), "SAME", 1.3, 0.05)], []]),
         ("relu",), ("flatten",), ("dense", 1.2, 0.1)]),
    "strided-concat-gap": (
        "Conv(filter_shape=(2, 2), padding='SAME', w_std=1.5, b_std=0.1, channels=4) > FanOut(2) > "
        "[Conv(filter_shape=(3, 3), strides=(2, 2), padding='SAME', w_std=1.1, channels=4) | "
        "ReLU > Conv(filter_shape=(1, 1), strides=(2, 2), padding='SAME', w_std=1.4, b_std=0.2, channels=12)] > "
        "FanInConcat > Conv(filter_shape=(2, 2), padding='SAME', w_std=1.2) > ReLU > GlobalAvgPool > Dense",
        [("conv", (2, 2), (1, 1), "SAME", 1.5, 0.1),
         ("fork_concat", [[("conv", (3, 3), (2, 2), "SAME", 1.1, 0.0)],
                          [("relu",), ("conv", (1, 1), (2, 2), "SAME", 1.4, 0.2)]], [0.25, 0.75]),
         ("conv", (2, 2), (1, 1), "SAME", 1.2, 0.0), ("relu",), ("gap",), ("dense", 1.0, 0.0)]),
}
