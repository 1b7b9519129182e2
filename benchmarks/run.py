"""``python -m benchmarks.run [--scenario NAME ...] [--quick] [--workers N] [--out DIR]``.

Runs the scenarios one after the other, each bounded in time and cleaning up its processes, and
writes ``<out>/<scenario>.json``, ``.md``, ``.png`` plus ``<out>/README.md`` with every table.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

from benchmarks.procs import exit_on_signals, log
from benchmarks.report import write_index, write_result
from benchmarks.scenarios import SCENARIOS, Context

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "docs" / "benchmarks"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--scenario",
        action="append",
        choices=sorted(SCENARIOS),
        help="run only this scenario (repeatable; default: all, in suite order)",
    )
    parser.add_argument("--quick", action="store_true", help="shorter arms and fewer points")
    parser.add_argument("--workers", type=int, default=1, help="gateway --workers (default 1)")
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"results directory (default {DEFAULT_OUT})"
    )
    parser.add_argument(
        "--time-limit",
        type=float,
        default=600.0,
        help="seconds one scenario may take before it is abandoned (default 600)",
    )
    parser.add_argument(
        "--only", help="overhead/http: only configurations whose key contains this (e.g. b1/)"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        help="overhead/http: interleaved rounds per configuration (default 3, 1 with --quick); an A/B "
        "of a few per cent needs more",
    )
    parser.add_argument(
        "--variant-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="overhead/http: add a second gateway arm started with this environment; filterchain: "
        "a policy-filter arm rendered by code run with it",
    )
    args = parser.parse_args(argv)
    variant = dict(item.split("=", 1) for item in args.variant_env) or None
    chosen = args.scenario or list(SCENARIOS)
    args.out.mkdir(parents=True, exist_ok=True)
    command = "python -m benchmarks.run " + shlex.join(argv if argv is not None else sys.argv[1:])
    failed: list[str] = []
    started = time.monotonic()
    with exit_on_signals(), tempfile.TemporaryDirectory(prefix="sonic-bench-") as tmp:
        for name in chosen:
            workdir = Path(tmp) / name
            workdir.mkdir()
            ctx = Context(
                workdir=workdir,
                outdir=args.out,
                quick=args.quick,
                workers=args.workers,
                command=command.strip(),
                only=args.only,
                rounds=args.rounds,
                variant_env=variant,
            )
            log(f"=== scenario {name}{' (quick)' if args.quick else ''}; logs in {workdir}")
            t0 = time.monotonic()
            try:
                with _deadline(args.time_limit, name):
                    result, columns = SCENARIOS[name](ctx)
            except Exception:
                traceback.print_exc()
                log(
                    f"=== scenario {name} FAILED after {time.monotonic() - t0:.0f} s; logs were in {workdir}:"
                )
                kept = Path(tempfile.mkdtemp(prefix=f"sonic-bench-failed-{name}-"))
                for path in sorted(workdir.glob("*.log")):
                    shutil.copy(path, kept / path.name)
                    tail = path.read_text(errors="replace").splitlines()[-15:]
                    print(f"--- {path.name}\n" + "\n".join(tail), flush=True)
                log(f"=== the logs of {name} are kept in {kept}")
                failed.append(name)
                continue
            result["wall_s"] = time.monotonic() - t0
            path = write_result(args.out, result, columns)
            print(path.read_text(), flush=True)
            log(f"=== scenario {name} done in {result['wall_s']:.0f} s -> {path}")
    index = write_index(args.out, list(SCENARIOS))
    log(
        f"all done in {time.monotonic() - started:.0f} s; tables in {index}"
        + (f"; FAILED: {', '.join(failed)}" if failed else "")
    )
    return 1 if failed else 0


class _deadline:
    """SIGALRM after ``seconds``: a hung scenario raises instead of blocking the suite."""

    def __init__(self, seconds: float, name: str) -> None:
        self.seconds, self.name = seconds, name

    def __enter__(self) -> None:
        import signal

        def fire(signum: int, frame: object) -> None:
            raise TimeoutError(f"scenario {self.name} ran past {self.seconds:.0f} s")

        self._old = signal.signal(signal.SIGALRM, fire)
        signal.setitimer(signal.ITIMER_REAL, self.seconds)

    def __exit__(self, *exc: object) -> None:
        import signal

        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, self._old)


if __name__ == "__main__":
    sys.exit(main())
