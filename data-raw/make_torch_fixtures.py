#!/usr/bin/python3
"""Generate reference fixtures for layer_conv_3d() from PyTorch.

Run from the package root:

    /usr/bin/python3 data-raw/make_torch_fixtures.py

Writes tests/testthat/fixtures/torch-conv3d.R, an R source file whose value
(`source(path)$value` or `dget(path)`) is a list of cases. Each case is a list
with `name`, `args` (layer_conv_3d arguments), `x`, `kernel`, `bias` (or NULL)
and the expected output `y`, all in Keras layouts:

  * x / y: channels_last (N, D, H, W, C) or channels_first (N, C, D, H, W)
  * kernel: (kd, kh, kw, C/groups, filters); bias: (filters)

Semantics follow /work/shared/SPEC.md (Keras 2 Conv3D): cross-correlation,
'same' padding with the odd extra pad at the END, grouped convolution, the
activation applied after the bias (softmax over the LAST axis of the Keras
layout output, even under channels_first; hard_sigmoid = clip(0.2x+0.5, 0, 1)).

The reference is torch.nn.functional.conv3d in float64 on an explicitly
padded input. Every case is re-checked against an independent naive numpy
loop (with numpy activations) before anything is written.

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
from torch_fixture_common import (CF, act_numpy, case, check_coverage,  # noqa: E402
                                  check_same_lengths, conv3d_torch, numpy_layer, r_array,
                                  r_case, random_inputs, write_fixture)

torch.manual_seed(20240531)
torch.set_default_dtype(torch.float64)

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
OUT = os.path.join(ROOT, "tests", "testthat", "fixtures", "torch-conv3d.R")


# ---------------------------------------------------------------------------
# Reference computation with torch
# ---------------------------------------------------------------------------

def conv3d_torch_numpy(x, kernel, bias, a):
    """x, kernel, bias: numpy float64 arrays in Keras layout; a: args dict."""
    b = torch.from_numpy(bias) if bias is not None else None
    y = conv3d_torch(torch.from_numpy(x), torch.from_numpy(kernel), b, a)
    return y.numpy().copy()


# ---------------------------------------------------------------------------
# Independent naive reference (numpy loops) following SPEC.md literally
# ---------------------------------------------------------------------------

def conv3d_naive(x, kernel, bias, a):
    L = numpy_layer(x, kernel, a)
    x, k, s, d, filters, cpg, fpg, outs = L.x, L.k, L.s, L.d, L.filters, L.cpg, L.fpg, L.outs
    N, D, H, W, _ = x.shape
    befores = [p[0] for p in L.pads]
    y = np.zeros((N, outs[0], outs[1], outs[2], filters))
    for n in range(N):
        for od in range(outs[0]):
            for oh in range(outs[1]):
                for ow in range(outs[2]):
                    for f in range(filters):
                        g = f // fpg
                        acc = 0.0 if bias is None else bias[f]
                        for td in range(k[0]):
                            zd = od * s[0] + td * d[0] - befores[0]
                            if zd < 0 or zd >= D:
                                continue
                            for th in range(k[1]):
                                zh = oh * s[1] + th * d[1] - befores[1]
                                if zh < 0 or zh >= H:
                                    continue
                                for tw in range(k[2]):
                                    zw = ow * s[2] + tw * d[2] - befores[2]
                                    if zw < 0 or zw >= W:
                                        continue
                                    for c in range(cpg):
                                        acc += (x[n, zd, zh, zw, g * cpg + c]
                                                * kernel[td, th, tw, c, f])
                        y[n, od, oh, ow, f] = acc
    if L.cf:
        y = np.transpose(y, (0, 4, 1, 2, 3))
    return act_numpy(a["activation"], y)


# ---------------------------------------------------------------------------
# Cases
# ---------------------------------------------------------------------------

CASES = [
    case("cl_valid_k3_basic", (5, 4, 5), 3, 3, 3),
    case("cf_valid_k3_basic", (4, 5, 5), 3, 3, 3, data_format=CF),
    case("cl_same_k2_even_relu", (4, 5, 6), 2, 2, 2, padding="same",
         activation="relu"),
    case("cf_same_k4_even_sigmoid", (5, 6, 4), 2, 2, 4, padding="same",
         data_format=CF, activation="sigmoid"),
    case("cl_same_k3_s2_odd_tanh", (7, 5, 7), 2, 3, 3, strides=2, padding="same",
         activation="tanh"),
    case("cf_same_k2_s2_odd_N2_elu", (5, 7, 3), 2, 3, 2, n=2, strides=2,
         padding="same", data_format=CF, activation="elu"),
    case("cl_valid_k2_s3_selu", (7, 4, 8), 2, 3, 2, strides=3, activation="selu"),
    case("cl_same_s123_nonc_kernel_softplus", (5, 6, 7), 2, 3, (3, 2, 3),
         strides=(1, 2, 3), padding="same", activation="softplus"),
    case("cf_valid_s312_softsign", (7, 5, 6), 2, 3, (2, 3, 2), strides=(3, 1, 2),
         data_format=CF, activation="softsign"),
    case("cl_valid_d2_swish", (5, 6, 7), 2, 2, 3, dilation_rate=2,
         activation="swish"),
    case("cl_same_d123_silu", (4, 6, 7), 2, 2, (2, 3, 2), dilation_rate=(1, 2, 3),
         padding="same", activation="silu"),
    case("cf_same_d212_gelu", (5, 4, 5), 2, 2, (3, 2, 2), dilation_rate=(2, 1, 2),
         padding="same", data_format=CF, activation="gelu"),
    case("cl_valid_groups2_exponential", (5, 4, 5), 4, 6, 3, groups=2,
         activation="exponential", x_scale=0.5, w_scale=0.15),
    case("cf_same_k2_groups4_hard_sigmoid", (3, 4, 4), 8, 8, 2, groups=4,
         padding="same", data_format=CF, activation="hard_sigmoid", x_scale=3.0),
    case("cl_same_depthwise_mult2_relu6", (3, 4, 5), 4, 8, 3, groups=4,
         padding="same", activation="relu6", x_scale=4.0),
    case("cf_valid_depthwise_leaky_relu", (4, 5, 5), 3, 3, (2, 3, 3), groups=3,
         data_format=CF, activation="leaky_relu"),
    case("cl_nobias_mish", (5, 5, 4), 3, 3, (3, 3, 2), use_bias=False,
         activation="mish"),
    case("cf_nobias_same_softmax_last_axis", (4, 5, 6), 3, 3, 3, padding="same",
         data_format=CF, use_bias=False, activation="softmax"),
    case("cl_same_softmax_channels", (4, 5, 4), 3, 4, (2, 3, 3), padding="same",
         activation="softmax"),
    case("cl_cin1_N2_linear", (4, 6, 5), 1, 2, (1, 3, 2), n=2,
         activation="linear"),
    case("cl_cin16_valid", (3, 3, 4), 16, 4, 2, w_scale=0.15),
    case("cf_cin16_groups2_same_s2_relu", (3, 4, 3), 16, 4, (2, 2, 1), strides=2,
         groups=2, padding="SAME", data_format=CF, activation="relu", w_scale=0.2),
    case("cl_same_k4_s2_odd_N2_nobias", (5, 5, 3), 2, 2, 4, n=2, strides=2,
         padding="same", use_bias=False),
    case("cl_same_kernel_larger_than_input", (2, 3, 2), 2, 2, (3, 4, 5),
         padding="Same"),
    case("cf_valid_pointwise_s2_groups2", (5, 4, 5), 4, 4, 1, strides=(2, 1, 2),
         groups=2, data_format=CF),
    case("cl_same_d2_groups2_N2_sigmoid", (4, 3, 4), 4, 2, (3, 2, 3),
         dilation_rate=(2, 2, 1), groups=2, n=2, padding="same",
         activation="sigmoid"),
]


def build(c):
    x, kernel, bias = random_inputs(c)
    y = conv3d_torch_numpy(x, kernel, bias, c["args"])
    return x, kernel, bias, y


def hand_checks():
    """Tiny cases whose answer is known by hand (pins the 'same' convention)."""
    base = dict(filters=1, strides=1, padding="same", dilation_rate=1, groups=1,
                data_format="channels_last", use_bias=False, activation=None)
    # W axis only: x = 1..5, kernel (1,1,2) of ones. Total pad 1 goes at the END:
    # y[i] = x[i] + x[i+1], y[last] = x[last].
    x = np.arange(1.0, 6.0).reshape(1, 1, 1, 5, 1)
    k = np.ones((1, 1, 2, 1, 1))
    y = conv3d_torch_numpy(x, k, None, dict(base, kernel_size=(1, 1, 2)))
    assert np.array_equal(y.ravel(), [3.0, 5.0, 7.0, 9.0, 5.0]), y.ravel()
    # D axis, kernel 4 (pad 3: 1 before, 2 after), weights 1, 10, 100, 1000:
    # y[i] = x[i-1] + 10 x[i] + 100 x[i+1] + 1000 x[i+2] (x = 0 outside).
    x = np.arange(1.0, 5.0).reshape(1, 4, 1, 1, 1)
    k = np.array([1.0, 10.0, 100.0, 1000.0]).reshape(4, 1, 1, 1, 1)
    y = conv3d_torch_numpy(x, k, None, dict(base, kernel_size=(4, 1, 1)))
    assert np.array_equal(y.ravel(), [3210.0, 4321.0, 432.0, 43.0]), y.ravel()
    # Stride 2 on odd H = 5, kernel 3 (out 3, pad 2: 1 before, 1 after), channels_first,
    # two groups with one channel each, bias and relu.
    x = np.zeros((1, 2, 1, 5, 1))
    x[0, 0, 0, :, 0] = [1.0, 2.0, 3.0, 4.0, 5.0]
    x[0, 1, 0, :, 0] = [-1.0, -2.0, -3.0, -4.0, -5.0]
    k = np.ones((1, 3, 1, 1, 2))
    b = np.array([0.5, 20.0])
    y = conv3d_torch_numpy(x, k, b, dict(base, filters=2, kernel_size=(1, 3, 1), strides=2,
                                   groups=2, data_format="channels_first",
                                   use_bias=True, activation="relu"))
    assert y.shape == (1, 2, 1, 3, 1)
    assert np.array_equal(y[0, 0, 0, :, 0], [3.5, 9.5, 9.5]), y[0, 0, 0, :, 0]
    assert np.array_equal(y[0, 1, 0, :, 0], [17.0, 11.0, 11.0]), y[0, 1, 0, :, 0]
    # Softmax over the LAST axis of a channels_first output (W, not channels).
    x = np.zeros((1, 2, 1, 1, 2))
    x[0, 0, 0, 0, :] = [0.0, math.log(3.0)]
    x[0, 1, 0, 0, :] = [5.0, 5.0]
    k = np.eye(2).reshape(1, 1, 1, 2, 2)
    y = conv3d_torch_numpy(x, k, None, dict(base, filters=2, kernel_size=1, padding="valid",
                                      data_format="channels_first", activation="softmax"))
    assert np.allclose(y[0, 0, 0, 0, :], [0.25, 0.75], rtol=0, atol=1e-15)
    assert np.allclose(y[0, 1, 0, 0, :], [0.5, 0.5], rtol=0, atol=1e-15)


def main():
    hand_checks()
    check_coverage(CASES)

    blocks = []
    total = 0
    for c in CASES:
        x, kernel, bias, y = build(c)
        # Self-check: independent naive loop + numpy activations.
        ref = conv3d_naive(x, kernel, bias, c["args"])
        assert ref.shape == y.shape, (c["name"], ref.shape, y.shape)
        err = np.max(np.abs(ref - y)) if y.size else 0.0
        assert err < 1e-12 * max(1.0, np.max(np.abs(y))), (c["name"], err)
        check_same_lengths(c["args"], x, y)
        n_el = x.size + kernel.size + y.size + (0 if bias is None else bias.size)
        total += n_el
        print("%-36s x%-20s y%-20s max|naive-torch|=%.2e" %
              (c["name"], x.shape, y.shape, err), file=sys.stderr)
        blocks.append(r_case(c, x, kernel, bias, [("y", r_array(y))]))

    header = (
        "# Reference outputs of Keras-semantics Conv3D computed with PyTorch "
        "(torch.nn.functional.conv3d, float64).\n"
        "# GENERATED FILE - do not edit by hand. Regenerate from the package root with:\n"
        "#   /usr/bin/python3 data-raw/make_torch_fixtures.py\n"
        "# torch %s, numpy %s. Arrays are in Keras layout, values in column-major order.\n"
        "# Evaluates to a list of cases: list(name, args, x, kernel, bias, y).\n"
        % (torch.__version__, np.__version__)
    )
    write_fixture(OUT, header, blocks, total)


if __name__ == "__main__":
    main()
