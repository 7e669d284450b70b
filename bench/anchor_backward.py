"""Backward-pass anchor for bench/backward.R: PyTorch 1.13's convolution
backward (input, weight and bias gradients at once, torch.ops.aten.
convolution_backward, the kernel autograd runs), Keras 'same' split, min of
`runs` after `warmup`, gc.collect() before every call unless --no-gc (as
anchor.py, and as backward.R's gc() before each conv3d call). Prints
name,torch_ms per shape."""

import argparse
import gc
import math
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from anchor import keras_pads, read_shapes  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--shapes", default=os.path.join(os.path.dirname(__file__), "shapes.csv"))
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--only", default="")
    p.add_argument("--runs", type=int, default=7)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--no-gc", action="store_true",
                   help="no gc.collect() before each call (calls back to back)")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    dtype = {"float32": torch.float32, "float64": torch.float64}[a.dtype]
    torch.manual_seed(1)
    print("name,torch_ms")
    for r in read_shapes(a.shapes, a.only):
        cg = r["cin"] // r["groups"]
        pads = keras_pads(r)
        x = torch.randn(r["N"], r["cin"], r["D"], r["H"], r["W"], dtype=dtype)
        w = torch.randn(r["cout"], cg, r["kd"], r["kh"], r["kw"], dtype=dtype) / math.sqrt(cg)
        s, d, g = r["stride"], r["dilation"], r["groups"]
        sym = all(p0 == p1 for p0, p1 in pads)
        xin = x if sym else F.pad(x, (pads[2][0], pads[2][1], pads[1][0], pads[1][1],
                                      pads[0][0], pads[0][1]))
        padding = [p0 for p0, _ in pads] if sym else [0, 0, 0]
        y = F.conv3d(xin, w, None, stride=s, padding=padding, dilation=d, groups=g)
        dy = torch.randn_like(y)

        def backward():
            gx, gw, gb = torch.ops.aten.convolution_backward(
                dy, xin, w, [r["cout"]], [s] * 3, padding, [d] * 3, False, [0, 0, 0], g,
                [True, True, True])
            if not sym:  # the gradient of the unpadded input
                gx = gx[:, :, pads[0][0]:pads[0][0] + r["D"], pads[1][0]:pads[1][0] + r["H"],
                        pads[2][0]:pads[2][0] + r["W"]].contiguous()
            return gx, gw, gb

        with torch.no_grad():
            for _ in range(a.warmup):
                if not a.no_gc:
                    gc.collect()
                backward()
            times = []
            for _ in range(a.runs):
                if not a.no_gc:
                    gc.collect()
                t0 = time.perf_counter()
                backward()
                times.append(time.perf_counter() - t0)
        print("%s,%.4f" % (r["name"], min(times) * 1e3))
        sys.stdout.flush()


if __name__ == "__main__":
    main()
