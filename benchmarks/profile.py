"""Profile the gateway under load: ``python -m benchmarks.profile [--batch N] [--concurrency C]``.

Starts one Triton and the gateway (auth on), drives ``identity_fp32`` from load processes and runs
``py-spy record`` against the gateway for the duration, writing a flame graph (SVG) and a
``--format raw`` collapsed-stack file whose heaviest frames are printed.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from benchmarks.common import IDENTITY, wait_servable
from benchmarks.load import LoadPool, LoadRun, LoadSpec
from benchmarks.procs import Processes, exit_on_signals, log, tree_cpu_seconds
from gateway.triton.launcher import DEFAULT_MODEL_REPOSITORY


def top_frames(raw: Path, n: int = 25) -> list[tuple[str, float]]:
    """Self and inclusive sample shares per function from py-spy's collapsed stacks."""
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        total += int(count)
        for frame in set(stack.split(";")):
            inclusive[frame] += int(count)
    return [(frame, c / total) for frame, c in inclusive.most_common(n)] if total else []


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--out", type=Path, default=Path("profile"))
    p.add_argument("--native", action="store_true", help="include C/Cython frames (py-spy --native)")
    p.add_argument(
        "--no-auth", action="store_true", help="gateway with auth.enabled false (to diff against auth on)"
    )
    args = p.parse_args(argv)
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    args.out.mkdir(parents=True, exist_ok=True)
    with (
        exit_on_signals(),
        tempfile.TemporaryDirectory(prefix="sonic-prof-") as tmp,
        Processes(Path(tmp)) as procs,
        LoadPool(args.concurrency) as pool,
    ):
        (triton,) = procs.tritons([DEFAULT_MODEL_REPOSITORY], ["identity_fp32"])
        gw = procs.gateway([triton], auth=not args.no_auth, workers=args.workers)
        tokens = () if args.no_auth else tuple(gw.tokens(1))
        url = f"127.0.0.1:{gw.grpc_port}"
        wait_servable(url, "identity_fp32", tokens[0] if tokens else None)
        # One record of both formats: each lasts half the load, which runs a little longer than both.
        spec = LoadSpec(url=url, batch=args.batch, duration_s=args.seconds + 2, tokens=tokens, **IDENTITY)  # type: ignore[arg-type]
        runs: list[LoadRun] = []
        runner = threading.Thread(target=lambda: runs.append(pool.run(spec, args.concurrency)), daemon=True)
        cpu_before = tree_cpu_seconds(gw.proc.pid)
        runner.start()
        stem = args.out / f"gateway-b{args.batch}-c{args.concurrency}{'-noauth' if args.no_auth else ''}"
        for fmt, suffix in (("raw", ".txt"), ("flamegraph", ".svg")):
            log(f"py-spy record ({fmt}) for {args.seconds:g} s")
            subprocess.run(
                [
                    pyspy,
                    "record",
                    "--pid",
                    str(gw.proc.pid),
                    "--subprocesses",
                    "--duration",
                    str(int(args.seconds / 2)),
                    "--rate",
                    "200",
                    "--format",
                    fmt,
                    *(["--native"] if args.native else []),
                    "--output",
                    str(stem) + suffix,
                ],
                check=True,
                timeout=args.seconds + 30,
                stdout=subprocess.DEVNULL,
            )
        runner.join(args.seconds + 60)
        cpu = tree_cpu_seconds(gw.proc.pid) - cpu_before
    if runs:  # py-spy's own sampling is charged to it, not to the gateway
        n = len(runs[0].latencies)
        print(f"{n / runs[0].elapsed:.0f} requests/s, gateway CPU {1e3 * cpu / max(n, 1):.3f} ms/request")
    for frame, share in top_frames(Path(str(stem) + ".txt")):
        print(f"{share:6.1%}  {frame}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
