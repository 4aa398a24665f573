"""Branched, normalised and standard-parameterisation dense architectures, as plain specs that
both this library and neural-tangents build (tests/test_branching.py)."""

import ntk_infinite as nk

_RES_BLOCK = [("relu",), ("dense", 1.3, 0.05, 40, "ntk"), ("relu",), ("dense", 1.2, 0.0, 40, "ntk")]

CASES = {
    "resnet": [("dense", 1.4, 0.1, 40, "ntk"),
               ("fanout", 2), ("parallel", [_RES_BLOCK, [("identity",)]]), ("faninsum",),
               ("fanout", 2), ("parallel", [_RES_BLOCK, [("identity",)]]), ("faninsum",),
               ("relu",), ("dense", 1.5, 0.1, 1, "ntk")],
    "layernorm": [("dense", 1.5, 0.1, 40, "ntk"), ("layernorm", 1e-12), ("relu",), ("dense", 1.2, 0.3, 40, "ntk"),
                  ("layernorm", 0.3), ("erf",), ("dense", 0.9, 0.1, 1, "ntk")],
    "standard": [("dense", 1.5, 0.1, 64, "standard"), ("relu",), ("dense", 1.2, 0.0, 32, "standard"), ("relu",),
                 ("dense", 1.0, 0.2, 1, "standard")],
    "concat": [("dense", 1.5, 0.1, 10, "ntk"), ("fanout", 3),
               ("parallel", [[("dense", 1.0, 0.0, 10, "ntk")], [("relu",), ("dense", 2.0, 0.1, 30, "ntk")],
                             [("erf",), ("dense", 1.0, 0.0, 20, "ntk")]]),
               ("faninconcat",), ("dense", 1.1, 0.1, 25, "ntk"), ("relu",), ("dense", 1.3, 0.0, 1, "ntk")],
    "resnet-layernorm-standard": [
        ("dense", 1.2, 0.1, 48, "standard"),
        ("fanout", 2), ("parallel", [[("layernorm", 1e-12), ("relu",), ("dense", 1.3, 0.1, 48, "standard")],
                                     [("identity",)]]), ("faninsum",),
        ("relu",), ("dense", 1.0, 0.0, 1, "standard")],
}


def build(spec):
    """The nk layers of a spec."""
    out = []
    for item in spec:
        kind = item[0]
        if kind == "dense":
            _, w, b, width, param = item
            out.append(nk.Dense(w_std=w, b_std=b, width=width, parameterization=param))
        elif kind == "relu":
            out.append(nk.ReLU())
        elif kind == "erf":
            out.append(nk.Erf())
        elif kind == "identity":
            out.append(nk.Identity())
        elif kind == "layernorm":
            out.append(nk.LayerNorm(eps=item[1]))
        elif kind == "fanout":
            out.append(nk.FanOut(item[1]))
        elif kind == "parallel":
            out.append(nk.parallel(*(nk.serial(*build(branch)) for branch in item[1])))
        elif kind == "faninsum":
            out.append(nk.FanInSum())
        elif kind == "faninconcat":
            out.append(nk.FanInConcat())
        else:
            raise ValueError(kind)
    return out


def architecture(name):
    return nk.serial(*build(CASES[name]))
