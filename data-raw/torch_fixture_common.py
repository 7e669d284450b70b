"""Helpers shared by the PyTorch fixture scripts of conv3d (make_torch_fixtures.py,
make_torch_grad_fixtures.py): the torch reference forward pass, the Keras
activations (in torch, and independently in numpy), Keras argument triples,
Keras 'same' padding, and writing numbers and arrays as R source (arrays in
R's column-major order)."""

import math

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
