#!/usr/bin/python3
"""Generate reference GRADIENT fixtures for conv3d_gradients() from PyTorch.

Run from the package root:

    /usr/bin/python3 data-raw/make_torch_grad_fixtures.py

Writes tests/testthat/fixtures/torch-conv3d-grads.R, an R source file whose
value (`source(path)$value` or `dget(path)`) is a list of cases. Each case is a
list with

  * `name`, `args` (layer_conv_3d arguments; `activation = NULL` when none),
  * `x`, `kernel`, `bias` (or NULL): the layer's input and weights,
  * `dy`: a random gradient of the loss with respect to the layer output y,
  * `grad_input`, `grad_kernel`, `grad_bias` (or NULL): the gradients of that
    loss (i.e. of sum(dy * y)) with respect to x, kernel and bias,

all in Keras layouts:

  * x / y / dy / grad_input: channels_last (N, D, H, W, C) or
    channels_first (N, C, D, H, W)
  * kernel / grad_kernel: (kd, kh, kw, C/groups, filters); bias: (filters)

Semantics follow /work/shared/SPEC.md (Keras 2 Conv3D): cross-correlation,
'same' padding with the odd extra pad at the END, grouped convolution, the
activation applied after the bias (softmax over the LAST axis of the Keras
layout output, even under channels_first; hard_sigmoid = clip(0.2x+0.5, 0, 1)).

The forward pass is torch.nn.functional.conv3d in float64 on an input padded
explicitly with F.pad (so the Keras 'same' split is exact); x, kernel and bias
are leaf tensors *in Keras layout* (requires_grad), the permutations to torch's
layouts happen inside the graph, and y.backward(dy) yields the gradients
directly in Keras layouts.

Self-checks, run on every regeneration before anything is written:
  * hand-computed gradients for tiny cases (pins the 'same' convention,
    stride gaps, groups, and softmax over the last axis of channels_first);
  * an independent vectorised numpy forward pass (with numpy activations)
    must reproduce torch's y for every case;
  * for EVERY case, directional central finite differences of the numpy
    forward pass, L(p) = sum(dy * y(p)), along several random directions in
    (x, kernel, bias) space must match <grad, v>;
  * for a few small cases, element-wise central finite differences of the
    numpy forward pass for every entry of every gradient;
  * torch.autograd.gradcheck on two small cases.

R arrays are column-major, so values are written in Fortran order with
dim = the numpy shape; numbers use Python's repr() of float64 (shortest
round-trip representation, at most 17 significant digits).
"""

import math
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_fixture_common import (CF, CL, act_numpy, case, check_coverage,  # noqa: E402
                                  check_same_lengths, conv3d_torch, numpy_layer, r_array,
                                  r_case, r_vec, random_inputs, write_fixture)

SEED = 20240607
torch.manual_seed(SEED)
torch.set_default_dtype(torch.float64)

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
OUT = os.path.join(ROOT, "tests", "testthat", "fixtures", "torch-conv3d-grads.R")
MAX_BYTES = 400 * 1024

# Activations with kinks: finite differences must not straddle one.
KINKS = {
    "relu": (0.0,), "relu6": (0.0, 6.0), "leaky_relu": (0.0,),
    "hard_sigmoid": (-2.5, 2.5), "elu": (0.0,), "selu": (0.0,),
}


# ---------------------------------------------------------------------------
# Gradients with torch autograd
# ---------------------------------------------------------------------------

def torch_grads(x, kernel, bias, dy, a):
    """Gradients of sum(dy * y) by torch autograd (y.backward(dy))."""
    xt = torch.from_numpy(x.copy()).requires_grad_(True)
    kt = torch.from_numpy(kernel.copy()).requires_grad_(True)
    bt = torch.from_numpy(bias.copy()).requires_grad_(True) if bias is not None else None
    y = conv3d_torch(xt, kt, bt, a)
    assert tuple(y.shape) == dy.shape, (y.shape, dy.shape)
    y.backward(torch.from_numpy(dy))
    gx = xt.grad.numpy().copy()
    gk = kt.grad.numpy().copy()
    gb = bt.grad.numpy().copy() if bt is not None else None
    assert gx.shape == x.shape and gk.shape == kernel.shape
    return y.detach().numpy().copy(), gx, gk, gb


# ---------------------------------------------------------------------------
# Independent numpy forward pass (SPEC.md literally, vectorised over taps)
# ---------------------------------------------------------------------------

def conv3d_numpy(x, kernel, bias, a, pre_activation=False):
    L = numpy_layer(x, kernel, a)
    x, k, s, d, G, cpg, fpg, outs = L.x, L.k, L.s, L.d, L.G, L.cpg, L.fpg, L.outs
    N = x.shape[0]
    assert min(outs) > 0
    xp = np.pad(x, [(0, 0)] + L.pads + [(0, 0)])
    xg = xp.reshape(xp.shape[:4] + (G, cpg))
    y = np.zeros((N, outs[0], outs[1], outs[2], G, fpg))
    for td in range(k[0]):
        for th in range(k[1]):
            for tw in range(k[2]):
                sl = xg[:,
                        td * d[0]: td * d[0] + (outs[0] - 1) * s[0] + 1: s[0],
                        th * d[1]: th * d[1] + (outs[1] - 1) * s[1] + 1: s[1],
                        tw * d[2]: tw * d[2] + (outs[2] - 1) * s[2] + 1: s[2]]
                wk = kernel[td, th, tw].reshape(cpg, G, fpg)  # filter f = g*fpg + j
                y += np.einsum("nabcgk,kgj->nabcgj", sl, wk)
    y = y.reshape(N, outs[0], outs[1], outs[2], L.filters)
    if bias is not None:
        y = y + bias
    if L.cf:
        y = np.transpose(y, (0, 4, 1, 2, 3))
    if pre_activation:
        return y
    return act_numpy(a["activation"], y)


def loss_numpy(x, kernel, bias, dy, a):
    return float(np.sum(dy * conv3d_numpy(x, kernel, bias, a)))


def straddles_kink(a, z0, z1):
    """Whether some pre-activation value crosses (or touches) a kink of the
    activation between two parameter points (then a difference quotient is
    meaningless)."""
    for c in KINKS.get(a["activation"], ()):
        if np.any(np.sign(z0 - c) != np.sign(z1 - c)):
            return True
    return False


def check_directional_fd(name, x, kernel, bias, dy, a, gx, gk, gb, rng, n_dir=4):
    """Central differences of the numpy forward along random directions."""
    h = 1e-5
    z0 = conv3d_numpy(x, kernel, bias, a, pre_activation=True)
    worst = 0.0
    for _ in range(n_dir):
        vx = rng.standard_normal(x.shape)
        vk = rng.standard_normal(kernel.shape)
        vb = rng.standard_normal(bias.shape) if bias is not None else None
        for t in (h, -h):
            zt = conv3d_numpy(x + t * vx, kernel + t * vk,
                              None if bias is None else bias + t * vb, a,
                              pre_activation=True)
            assert not straddles_kink(a, z0, zt), (name, "finite difference straddles a kink")

        def at(t):
            return loss_numpy(x + t * vx, kernel + t * vk,
                              None if bias is None else bias + t * vb, dy, a)

        fd = (at(h) - at(-h)) / (2 * h)
        an = float(np.sum(gx * vx) + np.sum(gk * vk) + (np.sum(gb * vb) if gb is not None else 0.0))
        scale = float(np.sum(np.abs(gx * vx)) + np.sum(np.abs(gk * vk)) +
                      (np.sum(np.abs(gb * vb)) if gb is not None else 0.0))
        err = abs(fd - an) / max(scale, 1e-300)
        assert err < 1e-7, (name, "directional finite difference", fd, an, err)
        worst = max(worst, err)
    return worst


def check_elementwise_fd(name, x, kernel, bias, dy, a, gx, gk, gb):
    """Central differences of the numpy forward for every gradient entry."""
    h = 1e-6
    worst = 0.0
    params = [("x", x, gx), ("kernel", kernel, gk)]
    if bias is not None:
        params.append(("bias", bias, gb))
    for which, p, g in params:
        for idx in np.ndindex(p.shape):
            old = p[idx]
            p[idx] = old + h
            lp = loss_numpy(x, kernel, bias, dy, a)
            p[idx] = old - h
            lm = loss_numpy(x, kernel, bias, dy, a)
            p[idx] = old
            fd = (lp - lm) / (2 * h)
            err = abs(fd - g[idx])
            assert err < 1e-7 * max(1.0, abs(g[idx])), (name, which, idx, fd, g[idx])
            worst = max(worst, err)
    return worst


def check_gradcheck(x, kernel, bias, a):
    inputs = [torch.from_numpy(x.copy()).requires_grad_(True),
              torch.from_numpy(kernel.copy()).requires_grad_(True)]
    if bias is not None:
        inputs.append(torch.from_numpy(bias.copy()).requires_grad_(True))

    def fn(*t):
        return conv3d_torch(t[0], t[1], t[2] if len(t) > 2 else None, a)

    assert torch.autograd.gradcheck(fn, tuple(inputs), eps=1e-6, atol=1e-8, rtol=1e-6)


# ---------------------------------------------------------------------------
# Hand-computed gradients (pin conventions independently of any FD)
# ---------------------------------------------------------------------------

def hand_checks():
    base = dict(filters=1, strides=1, padding="same", dilation_rate=1, groups=1,
                data_format=CL, use_bias=False, activation=None)
    # W axis only: x = 1..5, kernel (1,1,2) = (a, b), 'same': total pad 1 at the
    # END, y[i] = a x[i] + b x[i+1] (x[5] = 0). With dy = 1:
    #   dL/dx[j] = a + b for j >= 1, a for j = 0;
    #   dL/da = sum(x) = 15, dL/db = x[1] + ... + x[4] = 14.
    x = np.arange(1.0, 6.0).reshape(1, 1, 1, 5, 1)
    k = np.array([2.0, 3.0]).reshape(1, 1, 2, 1, 1)
    dy = np.ones((1, 1, 1, 5, 1))
    _, gx, gk, gb = torch_grads(x, k, None, dy, dict(base, kernel_size=(1, 1, 2)))
    assert gb is None
    assert np.array_equal(gx.ravel(), [2.0, 5.0, 5.0, 5.0, 5.0]), gx.ravel()
    assert np.array_equal(gk.ravel(), [15.0, 14.0]), gk.ravel()

    # Valid, stride 2 on W = 6 with kernel 3: outputs at 0 and 2, so x[5] is
    # never used and gets a zero gradient; with bias, dL/db = sum(dy).
    x = np.arange(1.0, 7.0).reshape(1, 1, 1, 6, 1)
    k = np.array([1.0, 10.0, 100.0]).reshape(1, 1, 3, 1, 1)
    b = np.array([0.25])
    dy = np.array([1.0, 2.0]).reshape(1, 1, 1, 2, 1)
    _, gx, gk, gb = torch_grads(x, k, b, dy, dict(base, kernel_size=(1, 1, 3), strides=2,
                                                  padding="valid", use_bias=True))
    # y0 = x0 + 10 x1 + 100 x2, y1 = x2 + 10 x3 + 100 x4
    assert np.array_equal(gx.ravel(), [1.0, 10.0, 102.0, 20.0, 200.0, 0.0]), gx.ravel()
    assert np.array_equal(gk.ravel(), [1.0 + 2 * 3, 2.0 + 2 * 4, 3.0 + 2 * 5]), gk.ravel()
    assert np.array_equal(gb, [3.0]), gb

    # Two groups, channels_first, depthwise on the channel axis: the gradient
    # of a filter only sees its own group's channel.
    x = np.zeros((1, 2, 1, 1, 2))
    x[0, 0, 0, 0, :] = [1.0, 2.0]
    x[0, 1, 0, 0, :] = [10.0, 20.0]
    k = np.array([3.0, 5.0]).reshape(1, 1, 1, 1, 2)
    dy = np.ones((1, 2, 1, 1, 2))
    _, gx, gk, _ = torch_grads(x, k, None, dy, dict(base, filters=2, kernel_size=1, groups=2,
                                                    padding="valid", data_format=CF))
    assert np.array_equal(gx[0, :, 0, 0, :], [[3.0, 3.0], [5.0, 5.0]]), gx
    assert np.array_equal(gk.ravel(), [3.0, 30.0]), gk.ravel()

    # Softmax over the LAST axis (W) of a channels_first output. Identity 1x1x1
    # kernel; softmax of (0, log 3) is p = (1/4, 3/4); with dy = (1, 0) the
    # gradient wrt the logits is p * (dy - <p, dy>) = (3/16, -3/16); the other
    # channel (equal logits 5, 5) gets dy = (0, 0), gradient 0.
    x = np.zeros((1, 2, 1, 1, 2))
    x[0, 0, 0, 0, :] = [0.0, math.log(3.0)]
    x[0, 1, 0, 0, :] = [5.0, 5.0]
    k = np.eye(2).reshape(1, 1, 1, 2, 2)
    dy = np.zeros((1, 2, 1, 1, 2))
    dy[0, 0, 0, 0, :] = [1.0, 0.0]
    _, gx, _, _ = torch_grads(x, k, None, dy, dict(base, filters=2, kernel_size=1,
                                                   padding="valid", data_format=CF,
                                                   activation="softmax"))
    assert np.allclose(gx[0, 0, 0, 0, :], [3 / 16, -3 / 16], rtol=0, atol=1e-15), gx
    assert np.array_equal(gx[0, 1, 0, 0, :], [0.0, 0.0]), gx


# ---------------------------------------------------------------------------
# Cases
# ---------------------------------------------------------------------------

def grad_case(name, spatial, channels, filters, kernel_size, elementwise_fd=False,
              gradcheck=False, **args):
    """A case with flags for the element-wise finite differences and gradcheck."""
    return case(name, spatial, channels, filters, kernel_size, elementwise_fd=elementwise_fd,
                gradcheck=gradcheck, **args)


CASES = [
    grad_case("cl_valid_k3_basic", (4, 4, 5), 2, 3, 3, elementwise_fd=True),
    grad_case("cf_valid_k2_relu", (4, 3, 4), 3, 2, 2, data_format=CF, activation="relu"),
    grad_case("cl_same_k2_even_sigmoid", (3, 4, 5), 2, 2, 2, padding="same",
         activation="sigmoid"),
    grad_case("cf_same_k4_even_tanh", (4, 3, 5), 2, 2, 4, padding="same", data_format=CF,
         activation="tanh", elementwise_fd=True, gradcheck=True),
    grad_case("cl_same_k3_s2_odd_elu", (5, 4, 5), 2, 2, 3, strides=2, padding="same",
         activation="elu"),
    grad_case("cf_same_k2_s2_odd_N2_selu", (3, 5, 4), 2, 2, 2, n=2, strides=2, padding="same",
         data_format=CF, activation="selu"),
    grad_case("cl_valid_k2_s3_unused_tail_softplus", (7, 4, 6), 1, 2, 2, strides=3,
         activation="softplus"),
    grad_case("cl_same_s123_nonc_kernel_softsign", (4, 5, 6), 2, 2, (3, 2, 3),
         strides=(1, 2, 3), padding="same", activation="softsign"),
    grad_case("cf_valid_s312_swish", (7, 4, 6), 2, 2, (2, 3, 2), strides=(3, 1, 2),
         data_format=CF, activation="swish"),
    grad_case("cl_valid_d2_silu", (5, 5, 6), 1, 2, 2, dilation_rate=2, activation="silu"),
    grad_case("cl_same_d123_gelu", (4, 5, 6), 2, 2, (2, 3, 2), dilation_rate=(1, 2, 3),
         padding="same", activation="gelu"),
    grad_case("cf_same_d212_exponential", (4, 4, 5), 2, 2, (3, 2, 2), dilation_rate=(2, 1, 2),
         padding="same", data_format=CF, activation="exponential", x_scale=0.5,
         w_scale=0.2),
    grad_case("cl_valid_groups2_hard_sigmoid", (4, 3, 4), 4, 6, 2, groups=2,
         activation="hard_sigmoid", x_scale=3.0),
    grad_case("cf_same_k2_groups4_relu6", (3, 3, 4), 8, 8, 2, groups=4, padding="same",
         data_format=CF, activation="relu6", x_scale=4.0),
    grad_case("cl_same_depthwise_mult2_leaky_relu", (3, 4, 4), 3, 6, 3, groups=3,
         padding="same", activation="leaky_relu"),
    grad_case("cf_valid_depthwise_mish", (4, 4, 5), 3, 3, (2, 3, 3), groups=3,
         data_format=CF, activation="mish", elementwise_fd=True),
    grad_case("cl_nobias_same_softmax_channels", (3, 4, 4), 2, 4, (2, 2, 3), padding="same",
         use_bias=False, activation="softmax", gradcheck=True),
    grad_case("cf_nobias_same_softmax_last_axis", (3, 4, 5), 2, 2, 3, padding="same",
         data_format=CF, use_bias=False, activation="softmax", elementwise_fd=True),
    grad_case("cl_cin1_N2_linear", (3, 5, 4), 1, 2, (1, 3, 2), n=2, activation="linear"),
    grad_case("cl_same_kernel_larger_than_input", (2, 3, 2), 2, 2, (3, 4, 5),
         padding="Same"),
    grad_case("cf_valid_pointwise_s2_groups2_unused_tail", (5, 4, 6), 4, 4, 1,
         strides=(2, 1, 2), groups=2, data_format=CF),
    grad_case("cl_same_k4_s2_odd_N2_nobias", (5, 3, 5), 2, 2, 4, n=2, strides=2,
         padding="same", use_bias=False),
    grad_case("cl_same_d2_groups2_N2_sigmoid", (4, 3, 4), 4, 2, (3, 2, 3),
         dilation_rate=(2, 2, 1), groups=2, n=2, padding="same", activation="sigmoid"),
    grad_case("cf_cin16_groups2_same_s2_relu", (3, 3, 3), 16, 4, (2, 2, 1), strides=2,
         groups=2, padding="SAME", data_format=CF, activation="relu", w_scale=0.2),
]


def build(c):
    a = c["args"]
    x, kernel, bias = random_inputs(c)
    with torch.no_grad():
        yshape = tuple(conv3d_torch(torch.from_numpy(x), torch.from_numpy(kernel),
                                    None if bias is None else torch.from_numpy(bias),
                                    a).shape)
    dy = torch.randn(yshape).numpy().astype(np.float64)
    y, gx, gk, gb = torch_grads(x, kernel, bias, dy, a)
    return x, kernel, bias, dy, y, gx, gk, gb


# ---------------------------------------------------------------------------

def main():
    hand_checks()
    check_coverage(CASES)
    assert {c["args"]["data_format"] for c in CASES} == {CL, CF}
    assert any(not c["args"]["use_bias"] for c in CASES)
    assert any(c["args"]["groups"] == c["channels"] > 1 for c in CASES)  # depthwise

    rng = np.random.default_rng(SEED)
    blocks = []
    total = 0
    n_elementwise = n_gradcheck = 0
    for c in CASES:
        a = c["args"]
        x, kernel, bias, dy, y, gx, gk, gb = build(c)
        # Self-check 1: the forward pass against the independent numpy one.
        ref = conv3d_numpy(x, kernel, bias, a)
        assert ref.shape == y.shape == dy.shape, (c["name"], ref.shape, y.shape)
        err = float(np.max(np.abs(ref - y)))
        assert err < 1e-12 * max(1.0, float(np.max(np.abs(y)))), (c["name"], err)
        check_same_lengths(a, x, y)
        # Self-check 2: directional finite differences (every case).
        dir_err = check_directional_fd(c["name"], x, kernel, bias, dy, a, gx, gk, gb, rng)
        # Self-check 3: element-wise finite differences / gradcheck (a few cases).
        el_err = ""
        if c["elementwise_fd"]:
            el_err = " elementwise=%.1e" % check_elementwise_fd(
                c["name"], x.copy(), kernel.copy(),
                None if bias is None else bias.copy(), dy, a, gx, gk, gb)
            n_elementwise += 1
        if c["gradcheck"]:
            check_gradcheck(x, kernel, bias, a)
            el_err += " gradcheck=ok"
            n_gradcheck += 1
        # Sanity: the bias gradient of a linear layer is the sum of dy per filter.
        if gb is not None and a["activation"] in (None, "linear"):
            f_axis = 4 if a["data_format"] == CL else 1
            sums = dy.sum(axis=tuple(i for i in range(5) if i != f_axis))
            assert np.allclose(gb, sums, rtol=1e-13, atol=1e-13), c["name"]
        n_el = (2 * x.size + 2 * kernel.size + dy.size +
                (0 if bias is None else 2 * bias.size))
        total += n_el
        print("%-42s x%-18s y%-18s dir-fd=%.1e%s" %
              (c["name"], x.shape, y.shape, dir_err, el_err), file=sys.stderr)
        blocks.append(r_case(c, x, kernel, bias, [
            ("dy", r_array(dy)), ("grad_input", r_array(gx)), ("grad_kernel", r_array(gk)),
            ("grad_bias", "NULL" if gb is None else r_vec(gb))]))
    assert n_elementwise >= 2 and n_gradcheck >= 2

    header = (
        "# Reference gradients of Keras-semantics Conv3D computed with PyTorch autograd "
        "(float64):\n"
        "# loss = sum(dy * y), y = activation(conv3d(x, kernel) + bias); "
        "grad_* = d loss / d (x, kernel, bias).\n"
        "# GENERATED FILE - do not edit by hand. Regenerate from the package root with:\n"
        "#   /usr/bin/python3 data-raw/make_torch_grad_fixtures.py\n"
        "# torch %s, numpy %s. Arrays are in Keras layout, values in column-major order.\n"
        "# Evaluates to a list of cases: list(name, args, x, kernel, bias, dy,\n"
        "#   grad_input, grad_kernel, grad_bias).\n"
        % (torch.__version__, np.__version__)
    )
    write_fixture(OUT, header, blocks, total, max_bytes=MAX_BYTES)


if __name__ == "__main__":
    main()
