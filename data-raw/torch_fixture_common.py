"""Helpers shared by the PyTorch fixture scripts of conv3d (make_torch_fixtures.py,
make_torch_grad_fixtures.py): the case builder and its random inputs, the
coverage checks of the case lists, the torch reference forward pass, the Keras
activations (in torch, and independently in numpy), Keras argument triples,
Keras output lengths and 'same' padding, and writing numbers, arrays and cases
as R source (arrays in R's column-major order)."""

import math
import os
import sys
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F


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


def keras_geometry(sizes, a):
    """Output lengths and (before, after) zero padding per spatial axis."""
    k, s, d = triple(a["kernel_size"]), triple(a["strides"]), triple(a["dilation_rate"])
    outs, pads = [], []
    for i in range(3):
        if a["padding"].lower() == "valid":
            outs.append((sizes[i] - ((k[i] - 1) * d[i] + 1)) // s[i] + 1)
            pads.append((0, 0))
        else:
            outs.append(-(-sizes[i] // s[i]))
            pads.append(same_pads(sizes[i], k[i], s[i], d[i]))
    return outs, pads


CL, CF = "channels_last", "channels_first"


def numpy_layer(x, kernel, a):
    """What the numpy references need of a layer: x channels-last, the
    triples k, s, d, the groups G with their channels cpg and filters fpg,
    output lengths outs and (before, after) pads; cf when x was
    channels_first (so y goes back)."""
    cf = a["data_format"] == CF
    if cf:
        x = np.transpose(x, (0, 2, 3, 4, 1))
    G, filters = int(a["groups"]), int(a["filters"])
    k = triple(a["kernel_size"])
    cpg = x.shape[4] // G
    assert kernel.shape == (k[0], k[1], k[2], cpg, filters)
    outs, pads = keras_geometry(x.shape[1:4], a)
    return SimpleNamespace(x=x, cf=cf, k=k, s=triple(a["strides"]),
                           d=triple(a["dilation_rate"]), G=G, filters=filters, cpg=cpg,
                           fpg=filters // G, outs=outs, pads=pads)


def case(name, spatial, channels, filters, kernel_size, n=1, strides=1,
         padding="valid", dilation_rate=1, groups=1, data_format=CL,
         use_bias=True, activation=None, x_scale=1.0, w_scale=None, **extra):
    """One fixture case: layer_conv_3d arguments, input size and scales; extra
    keys (the gradient script's check flags) are kept as given."""
    return dict(name=name, spatial=spatial, channels=channels, n=n,
                args=dict(filters=filters, kernel_size=kernel_size, strides=strides,
                          padding=padding, dilation_rate=dilation_rate, groups=groups,
                          data_format=data_format, use_bias=use_bias,
                          activation=activation),
                x_scale=x_scale, w_scale=w_scale, **extra)


def random_inputs(c):
    """x, kernel and bias (or None) of case c, drawn from torch's generator in a
    fixed order, as float64 numpy arrays in Keras layout."""
    a = c["args"]
    k = triple(a["kernel_size"])
    C, G, Fl = c["channels"], a["groups"], a["filters"]
    assert C % G == 0 and Fl % G == 0
    if a["data_format"] == CL:
        xshape = (c["n"],) + tuple(c["spatial"]) + (C,)
    else:
        xshape = (c["n"], C) + tuple(c["spatial"])
    x = torch.randn(xshape) * c["x_scale"]
    fan_in = (C // G) * k[0] * k[1] * k[2]
    w_scale = c["w_scale"] if c["w_scale"] is not None else 1.5 / math.sqrt(fan_in)
    kernel = torch.randn(k + (C // G, Fl)) * w_scale
    bias = torch.randn(Fl) * 0.5 if a["use_bias"] else None
    x = x.numpy().astype(np.float64)
    kernel = kernel.numpy().astype(np.float64)
    bias = bias.numpy().astype(np.float64) if bias is not None else None
    return x, kernel, bias


def check_coverage(cases):
    """The case list covers every activation and at least five 'same' cases
    with an odd total pad (where the extra pad at the end matters)."""
    names = [c["name"] for c in cases]
    assert len(set(names)) == len(names)
    acts = {c["args"]["activation"] for c in cases}
    needed = {None, "linear", "relu", "sigmoid", "tanh", "softmax", "elu", "selu",
              "softplus", "softsign", "swish", "silu", "gelu", "exponential",
              "hard_sigmoid", "relu6", "leaky_relu", "mish"}
    assert needed <= acts, needed - acts
    odd = []
    for c in cases:
        a = c["args"]
        if a["padding"].lower() != "same":
            continue
        k, st, d = triple(a["kernel_size"]), triple(a["strides"]), triple(a["dilation_rate"])
        for i in range(3):
            before, after = same_pads(c["spatial"][i], k[i], st[i], d[i])
            if after != before:
                odd.append(c["name"])
                break
    assert len(odd) >= 5, odd


def check_same_lengths(a, x, y):
    """'same' padding gives ceil(n / s) outputs per axis."""
    if a["padding"].lower() == "same":
        sp_axes = (1, 2, 3) if a["data_format"] == CL else (2, 3, 4)
        s = triple(a["strides"])
        for i, ax in enumerate(sp_axes):
            assert y.shape[ax] == -(-x.shape[ax] // s[i])


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


def r_case(c, x, kernel, bias, fields):
    """A case as an R list: name, args, x, kernel, bias, then fields, a list
    of (name, R source) pairs."""
    parts = [("name", r_str(c["name"])), ("args", r_args(c["args"])), ("x", r_array(x)),
             ("kernel", r_array(kernel)), ("bias", "NULL" if bias is None else r_vec(bias))]
    return ("  list(\n" + ",\n".join("    %s = %s" % p for p in parts + fields) + "\n  )")


def write_fixture(path, header, blocks, total, max_bytes=None):
    """Writes the cases (R source blocks) as one R list after header;
    total is the count of numbers, for the report on stderr."""
    text = header + "list(\n" + ",\n".join(blocks) + "\n)\n"
    assert max_bytes is None or len(text) <= max_bytes, ("fixture file too large", len(text))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as fh:
        fh.write(text)
    print("wrote %s: %d cases, %d numbers, %d bytes" % (path, len(blocks), total, len(text)),
          file=sys.stderr)


# Keras activations, applied to the Keras-layout output.
def act_torch(name, y):
    """Torch activations (differentiable), applied to the Keras-layout output."""
    if name is None or name == "linear":
        return y
    if name == "relu":
        return torch.relu(y)
    if name == "sigmoid":
        return torch.sigmoid(y)
    if name == "tanh":
        return torch.tanh(y)
    if name == "softmax":
        return torch.softmax(y, dim=-1)
    if name == "elu":
        return F.elu(y, alpha=1.0)
    if name == "selu":
        return F.selu(y)
    if name == "softplus":
        return F.softplus(y)
    if name == "softsign":
        return F.softsign(y)
    if name in ("swish", "silu"):
        return F.silu(y)
    if name == "gelu":
        return F.gelu(y, approximate="none")
    if name == "exponential":
        return torch.exp(y)
    if name == "hard_sigmoid":
        return torch.clamp(0.2 * y + 0.5, 0.0, 1.0)
    if name == "relu6":
        return F.relu6(y)
    if name == "leaky_relu":
        return F.leaky_relu(y, negative_slope=0.2)
    if name == "mish":
        return F.mish(y)
    raise ValueError(name)


def act_numpy(name, y):
    """Independent numpy definitions (used only by the fixture self-checks)."""
    if name is None or name == "linear":
        return y
    if name == "relu":
        return np.maximum(y, 0.0)
    if name == "sigmoid":
        return 1.0 / (1.0 + np.exp(-y))
    if name == "tanh":
        return np.tanh(y)
    if name == "softmax":
        e = np.exp(y - y.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)
    if name == "elu":
        return np.where(y > 0, y, np.expm1(np.minimum(y, 0.0)))
    if name == "selu":
        a, s = 1.6732632423543772, 1.0507009873554805
        return s * np.where(y > 0, y, a * np.expm1(np.minimum(y, 0.0)))
    if name == "softplus":
        return np.log1p(np.exp(y))
    if name == "softsign":
        return y / (1.0 + np.abs(y))
    if name in ("swish", "silu"):
        return y / (1.0 + np.exp(-y))
    if name == "gelu":
        erf = np.vectorize(math.erf)
        return 0.5 * y * (1.0 + erf(y / math.sqrt(2.0)))
    if name == "exponential":
        return np.exp(y)
    if name == "hard_sigmoid":
        return np.clip(0.2 * y + 0.5, 0.0, 1.0)
    if name == "relu6":
        return np.clip(y, 0.0, 6.0)
    if name == "leaky_relu":
        return np.where(y > 0, y, 0.2 * y)
    if name == "mish":
        return y * np.tanh(np.log1p(np.exp(y)))
    raise ValueError(name)


def conv3d_torch(x, kernel, bias, a, pre_activation=False):
    """x, kernel, bias: torch tensors in Keras layout (may require grad).

    Returns y in Keras layout (a torch tensor, part of the autograd graph)."""
    k = triple(a["kernel_size"])
    s = triple(a["strides"])
    d = triple(a["dilation_rate"])
    g = int(a["groups"])
    xt = x
    if a["data_format"] == "channels_last":
        xt = xt.permute(0, 4, 1, 2, 3)  # -> (N, C, D, H, W)
    if a["padding"].lower() == "same":
        pads = [same_pads(xt.shape[2 + i], k[i], s[i], d[i]) for i in range(3)]
        # F.pad takes the last axis first: (W_before, W_after, H_..., D_...)
        flat = []
        for before, after in reversed(pads):
            flat += [before, after]
        xt = F.pad(xt, flat, mode="constant", value=0.0)
    w = kernel.permute(4, 3, 0, 1, 2)  # -> (F, C/G, kd, kh, kw)
    y = F.conv3d(xt.contiguous(), w.contiguous(), bias, stride=s, padding=0,
                 dilation=d, groups=g)
    if a["data_format"] == "channels_last":
        y = y.permute(0, 2, 3, 4, 1)  # -> (N, D, H, W, F)
    y = y.contiguous()
    if pre_activation:
        return y
    return act_torch(a["activation"], y)
