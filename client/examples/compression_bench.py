"""Measure what gzip buys on realistic sparse patches (the numbers quoted in docs/client.md).

    python client/examples/compression_bench.py [--url HOST:PORT --model identity_fp32]

Without --url it reports the CPU side only (zlib ratio and ms per MB at the levels that matter:
1 is the ``"auto"`` probe, 6 is what gRPC's and our HTTP gzip use). With --url it also times
round trips with compression off and on against a live server.
"""

from __future__ import annotations

import argparse
import time
import zlib

import numpy as np

from sonic_client import Client
from sonic_client.protodune import INPUT_NAME, extract_patches, find_hits, generate_event


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--url", default=None)
    p.add_argument("--model", default="identity_fp32")
    p.add_argument("--events", type=int, default=5)
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args(argv)
    patches = np.concatenate([
        extract_patches(ev.image, find_hits(ev.image))
        for ev in (generate_event(s) for s in range(args.events))])
    print(f"{len(patches)} patches from {args.events} events, "
          f"{np.count_nonzero(patches) / patches.size:.1%} of pixels non-zero")
    print(f"{'batch':>6} {'MB':>6} {'lvl':>3} {'ratio':>6} {'comp ms/MB':>10} {'decomp ms/MB':>12}")
    for n in (235, 1693):
        ratios: dict[int, list[float]] = {1: [], 6: []}
        comp: dict[int, list[float]] = {1: [], 6: []}
        dec: dict[int, list[float]] = {1: [], 6: []}
        for start in range(0, len(patches) - n + 1, n):
            raw = patches[start:start + n].tobytes()
            mb = len(raw) / 1e6
            for lvl in (1, 6):
                t0 = time.perf_counter()
                c = zlib.compress(raw, lvl)
                t1 = time.perf_counter()
                zlib.decompress(c)
                t2 = time.perf_counter()
                ratios[lvl].append(len(raw) / len(c))
                comp[lvl].append((t1 - t0) * 1e3 / mb)
                dec[lvl].append((t2 - t1) * 1e3 / mb)
        for lvl in (1, 6):
            print(f"{n:>6} {n * 48 * 48 * 4 / 1e6:>6.2f} {lvl:>3} {np.median(ratios[lvl]):>6.1f} "
                  f"{np.median(comp[lvl]):>10.2f} {np.median(dec[lvl]):>12.2f}")
    noise = np.random.default_rng(0).normal(size=(235, 48, 48, 1)).astype(np.float32).tobytes()
    t0 = time.perf_counter()
    c = zlib.compress(noise, 6)
    print(f"dense Gaussian noise, lvl 6: ratio {len(noise) / len(c):.2f}, "
          f"{(time.perf_counter() - t0) * 1e3 / (len(noise) / 1e6):.1f} ms/MB")
    if args.url:
        with Client(args.url) as client:
            for n in (235, 1693):
                batch = {INPUT_NAME: patches[:n]}
                for comp_mode in (None, "gzip"):
                    client.infer(args.model, batch, compression=comp_mode)  # warm up
                    times = []
                    for _ in range(args.repeat):
                        t0 = time.perf_counter()
                        client.infer(args.model, batch, compression=comp_mode)
                        times.append(time.perf_counter() - t0)
                    print(f"round trip batch {n}, compression={comp_mode}: "
                          f"{np.median(times) * 1e3:.1f} ms (median of {args.repeat})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
