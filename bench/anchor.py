#!/usr/bin/python3
"""PyTorch anchor for the conv3d benchmark (see bench/README.md and BENCH.md).

Timing mode (default): for each shape of the shapes file, times the forward
convolution with Keras 'same' padding in torch, both through
torch.nn.functional.conv3d (its default path) and torch.mkldnn_convolution
(oneDNN forced; float32 only), and prints a header and one CSV line per shape:

    name,torch_ms,mkldnn_ms,torch_runs,mkldnn_runs,torch_faults,mkldnn_faults

(NA where a path does not apply or failed; *_runs: timed runs made, fewer than
--runs only past --budget; *_faults: minor page faults during the fastest run,
i.e. fresh memory glibc had to map for the output). Each time is the minimum of --runs calls after --warmup calls, under
torch.no_grad(). When Keras' padding is asymmetric (odd total pad: the extra
goes at the end) the input is pre-padded with F.pad *inside* the timed region,
since that is what a torch user has to do to get Keras' result.

Verify mode (--verify DIR): reads DIR/shapes.csv and, per shape, the R arrays
DIR/<name>_x.bin, _k.bin, _b.bin (float64, R's column-major order, Keras
layouts: x (N,D,H,W,C), kernel (kd,kh,kw,C/groups,F)), computes the output with
both paths and writes DIR/<name>_torch.bin and DIR/<name>_mkldnn.bin as
float64 in R's column-major (N,Do,Ho,Wo,F) order.
"""
import argparse
import csv
import gc
import math
import os
import resource
import sys
import time

import torch
import torch.nn.functional as F


def read_shapes(path, only=None):
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        for k in ("N", "D", "H", "W", "cin", "cout", "kd", "kh", "kw",
                  "stride", "dilation", "groups"):
            r[k] = int(r[k])
        r["padding"] = r["padding"].strip().lower()
    if only:
        names = [n for n in only.split(",") if n]
        unknown = [n for n in names if n not in {r["name"] for r in rows}]
        if unknown:
            sys.exit("anchor.py: unknown shape(s): " + ",".join(unknown))
        rows = [r for r in rows if r["name"] in names]
    return rows


def keras_pads(r):
    """Per spatial axis (before, after) of Keras padding, as in SPEC.md."""
    pads = []
    for n, k in ((r["D"], r["kd"]), (r["H"], r["kh"]), (r["W"], r["kw"])):
        s, d = r["stride"], r["dilation"]
        if r["padding"] == "same":
            out = -(-n // s)
            total = max(0, (out - 1) * s + (k - 1) * d + 1 - n)
            before = total // 2
            pads.append((before, total - before))
        elif r["padding"] == "valid":
            pads.append((0, 0))
        else:
            raise ValueError("padding must be same or valid, not %r" % r["padding"])
    return pads


def make_fns(r, dtype):
    """The two forward functions of input x, weight w, bias b."""
    pads = keras_pads(r)
    s, d, g = r["stride"], r["dilation"], r["groups"]
    if all(a == b for a, b in pads):
        sym = [a for a, _ in pads]
        prepad = None
    else:
        sym = [0, 0, 0]
        # F.pad lists the last axis first: (W_before, W_after, H_..., D_...).
        prepad = (pads[2][0], pads[2][1], pads[1][0], pads[1][1], pads[0][0], pads[0][1])

    def torch_fn(x, w, b):
        if prepad is not None:
            x = F.pad(x, prepad)
        return F.conv3d(x, w, b, stride=s, padding=sym, dilation=d, groups=g)

    def mkldnn_fn(x, w, b):
        if prepad is not None:
            x = F.pad(x, prepad)
        return torch.mkldnn_convolution(x, w, b, sym, [s] * 3, [d] * 3, g)

    return torch_fn, (mkldnn_fn if dtype == torch.float32 else None)


def time_ms(fn, args, warmup, runs, budget):
    """Min of `runs` calls after `warmup` calls, in ms; gc.collect() runs before
    every call unless --no-gc (outside the timed region, as run.R's gc() before
    each conv3d call: a collection walks the heap and leaves the caches and the
    threads as R's does). When a call is so slow
    that the runs would exceed `budget` seconds, fewer are made (at least 3
    timed runs). Returns (ms, runs actually timed, minor page faults of the
    fastest run: fresh output memory the allocator had to map)."""
    t_call = None
    for i in range(warmup):
        if COLLECT:
            gc.collect()
        t0 = time.perf_counter()
        fn(*args)
        t_call = time.perf_counter() - t0
        if t_call * runs > budget:
            break  # a very slow call: skip the remaining warm-ups
    n = runs
    if t_call is not None and t_call * runs > budget:
        n = max(3, min(runs, int(budget / t_call)))
    times, faults = [], []
    for _ in range(n):
        if COLLECT:
            gc.collect()
        f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        t0 = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - t0)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
    if VERBOSE:
        print("  runs (ms): " + " ".join("%.2f" % (t * 1e3) for t in times), file=sys.stderr)
        print("  minor page faults: " + " ".join("%d" % f for f in faults), file=sys.stderr)
    return min(times) * 1e3, n, faults[times.index(min(times))]


VERBOSE = False
COLLECT = True


def fmt(v):
    return "NA" if v is None else "%.4f" % v


def run_timing(a):
    dtype = {"float32": torch.float32, "float64": torch.float64}[a.dtype]
    torch.manual_seed(1)
    print("name,torch_ms,mkldnn_ms,torch_runs,mkldnn_runs,torch_faults,mkldnn_faults")
    sys.stdout.flush()
    for r in read_shapes(a.shapes, a.only):
        cg = r["cin"] // r["groups"]
        x = torch.randn(r["N"], r["cin"], r["D"], r["H"], r["W"], dtype=dtype)
        w = torch.randn(r["cout"], cg, r["kd"], r["kh"], r["kw"], dtype=dtype)
        w /= math.sqrt(cg * r["kd"] * r["kh"] * r["kw"])
        b = torch.randn(r["cout"], dtype=dtype)
        torch_fn, mkldnn_fn = make_fns(r, dtype)
        res = {}
        with torch.no_grad():
            for key, fn in (("torch", torch_fn), ("mkldnn", mkldnn_fn)):
                if fn is None:
                    res[key] = (None, None, None)
                    continue
                try:
                    if VERBOSE:
                        print("%s %s:" % (r["name"], key), file=sys.stderr)
                    res[key] = time_ms(fn, (x, w, b), a.warmup, a.runs, a.budget)
                except Exception as e:  # record NA, say why on stderr
                    print("anchor.py: %s failed for %s: %s" % (key, r["name"], e),
                          file=sys.stderr)
                    res[key] = (None, None, None)
        na = lambda v: "NA" if v is None else str(v)
        print(",".join([r["name"], fmt(res["torch"][0]), fmt(res["mkldnn"][0]),
                        na(res["torch"][1]), na(res["mkldnn"][1]),
                        na(res["torch"][2]), na(res["mkldnn"][2])]))
        sys.stdout.flush()


def run_verify(a):
    import numpy as np
    dtype = {"float32": torch.float32, "float64": torch.float64}[a.dtype]
    d = a.verify
    print("name,torch_ok,mkldnn_ok")
    for r in read_shapes(os.path.join(d, "shapes.csv"), a.only):
        nm, cg = r["name"], r["cin"] // r["groups"]
        # R column-major (N,D,H,W,C) == C-order (C,W,H,D,N).
        x = np.fromfile(os.path.join(d, nm + "_x.bin"), dtype="<f8")
        x = x.reshape(r["cin"], r["W"], r["H"], r["D"], r["N"]).transpose(4, 0, 3, 2, 1)
        k = np.fromfile(os.path.join(d, nm + "_k.bin"), dtype="<f8")
        k = k.reshape(r["cout"], cg, r["kw"], r["kh"], r["kd"]).transpose(0, 1, 4, 3, 2)
        b = np.fromfile(os.path.join(d, nm + "_b.bin"), dtype="<f8")
        xt = torch.from_numpy(np.ascontiguousarray(x)).to(dtype)
        kt = torch.from_numpy(np.ascontiguousarray(k)).to(dtype)
        bt = torch.from_numpy(b).to(dtype)
        torch_fn, mkldnn_fn = make_fns(r, dtype)
        status = []
        with torch.no_grad():
            for key, fn in (("torch", torch_fn), ("mkldnn", mkldnn_fn)):
                out = os.path.join(d, "%s_%s.bin" % (nm, key))
                if os.path.exists(out):
                    os.remove(out)
                if fn is None:
                    status.append("NA")
                    continue
                try:
                    y = fn(xt, kt, bt)  # (N,F,Do,Ho,Wo) -> C-order (F,Wo,Ho,Do,N)
                    y.permute(1, 4, 3, 2, 0).contiguous().to(torch.float64).numpy().tofile(out)
                    status.append("ok")
                except Exception as e:
                    print("anchor.py: %s failed for %s: %s" % (key, nm, e), file=sys.stderr)
                    status.append("NA")
        print("%s,%s,%s" % (nm, status[0], status[1]))


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shapes", default=os.path.join(here, "shapes.csv"), help="shapes CSV file")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads()")
    p.add_argument("--only", default="", help="comma-separated shape names (default all)")
    p.add_argument("--runs", type=int, default=7, help="timed runs (min is reported)")
    p.add_argument("--warmup", type=int, default=2, help="untimed warm-up calls")
    p.add_argument("--budget", type=float, default=20.0,
                   help="seconds per shape and path beyond which fewer runs are made (>= 3)")
    p.add_argument("--verify", default=None, metavar="DIR",
                   help="compute outputs for the arrays in DIR instead of timing")
    p.add_argument("--verbose", action="store_true", help="print every timed run on stderr")
    p.add_argument("--no-gc", action="store_true",
                   help="no gc.collect() before each call (calls back to back)")
    a = p.parse_args()
    global VERBOSE, COLLECT
    VERBOSE = a.verbose
    COLLECT = not a.no_gc
    torch.set_num_threads(a.threads)
    if a.verify:
        run_verify(a)
    else:
        run_timing(a)


if __name__ == "__main__":
    main()
