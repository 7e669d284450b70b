"""Helpers shared by the PyTorch fixture scripts of conv3d (make_torch_fixtures.py,
make_torch_grad_fixtures.py): Keras argument triples, Keras 'same' padding, and
writing numbers and arrays as R source (arrays in R's column-major order)."""

import math

import numpy as np


def triple(v):
    if isinstance(v, (list, tuple)):
        assert len(v) == 3
        return tuple(int(i) for i in v)
    return (int(v),) * 3


def same_pads(n, k, s, d):
    out = -(-n // s)  # ceil(n / s)
    k_eff = (k - 1) * d + 1
    total = max(0, (out - 1) * s + k_eff - n)
    before = total // 2
    return before, total - before


def r_num(v):
    v = float(v)
    assert math.isfinite(v)
    return repr(v)


def r_int(v):
    return "%dL" % int(v)


def r_intvec(v):
    if isinstance(v, (list, tuple)):
        return "c(" + ", ".join(r_int(i) for i in v) + ")"
    return r_int(v)


def r_str(s):
    return '"' + s + '"'


def wrap_values(vals, indent, width=100):
    lines, cur = [], ""
    for v in vals:
        piece = v + ", "
        if cur and len(indent) + len(cur) + len(piece) > width:
            lines.append(indent + cur.rstrip())
            cur = ""
        cur += piece
    lines.append(indent + cur.rstrip().rstrip(","))
    return "\n".join(lines)


def r_array(a, indent="      "):
    a = np.asarray(a, dtype=np.float64)
    vals = [r_num(v) for v in a.flatten(order="F")]
    dims = "c(" + ", ".join(r_int(i) for i in a.shape) + ")"
    return "array(c(\n" + wrap_values(vals, indent) + "\n    ), dim = " + dims + ")"


def r_vec(a, indent="      "):
    vals = [r_num(v) for v in np.asarray(a, dtype=np.float64).ravel()]
    return "c(\n" + wrap_values(vals, indent) + "\n    )"


def r_args(a):
    parts = [
        "filters = " + r_int(a["filters"]),
        "kernel_size = " + r_intvec(a["kernel_size"]),
        "strides = " + r_intvec(a["strides"]),
        "padding = " + r_str(a["padding"]),
        "dilation_rate = " + r_intvec(a["dilation_rate"]),
        "groups = " + r_int(a["groups"]),
        "data_format = " + r_str(a["data_format"]),
        "use_bias = " + ("TRUE" if a["use_bias"] else "FALSE"),
        "activation = " + ("NULL" if a["activation"] is None else r_str(a["activation"])),
    ]
    return "list(\n      " + ",\n      ".join(parts) + "\n    )"
