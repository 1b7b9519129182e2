"""``sonic-client``: smoke tests against a gateway (metadata, token check, inference on .npy)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ._client import Client
from ._errors import SonicClientError
from ._tokens import (
    DiscoveredToken,
    FileToken,
    TokenProvider,
    token_expiry,
    token_source,
    unexpired_token,
)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sonic-client", description=__doc__)
    p.add_argument("--url", default=None,
                   help="gateway address: host:port (gRPC), grpc[s]://, http[s]:// "
                        "(default $SONIC_GATEWAY_URL or 127.0.0.1:8001)")
    p.add_argument("--protocol", choices=["grpc", "http"], default=None)
    p.add_argument("--token-file", default=None, help="read the token from this file "
                     "(default: WLCG discovery: BEARER_TOKEN, BEARER_TOKEN_FILE, "
                     "$XDG_RUNTIME_DIR/bt_u$UID, /tmp/bt_u$UID)")
    p.add_argument("--timeout", type=float, default=60.0, help="per-request deadline, seconds")
    p.add_argument("--job-id", default=None)
    p.add_argument("--dataset", default=None)
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("token", help="show where the token was found and when it expires "
                                 "(never prints the token); exit status 1 when it has expired")
    sub.add_parser("server-metadata", help="print the server's metadata as JSON")
    mm = sub.add_parser("model-metadata", help="print a model's metadata as JSON")
    mm.add_argument("model")
    mm.add_argument("--model-version", default="")
    inf = sub.add_parser("infer", help="run a model on an .npy file and summarise the outputs")
    inf.add_argument("model")
    inf.add_argument("npy", type=Path, help="input array (.npy), batch dimension first")
    inf.add_argument("--input", default=None, help="input name (default: the model's only input)")
    inf.add_argument("--model-version", default="")
    inf.add_argument("--batch-size", type=int, default=None)
    inf.add_argument("--concurrency", type=int, default=4)
    inf.add_argument("--compression", choices=["none", "gzip", "auto"], default="none")
    inf.add_argument("--link-gbit-s", type=float, default=None,
                     help="this job's share of the network link, for --compression auto "
                          "(default $SONIC_LINK_GBIT_S; unknown: gzip whenever the data compresses)")
    inf.add_argument("--save", type=Path, default=None, help="write the outputs to this .npz")
    return p


def main(argv: Sequence[str] | None = None, *,
         wall_clock: Callable[[], float] = time.time) -> int:
    """Run the CLI; ``wall_clock`` (Unix time) decides whether the token has expired."""
    args = _parser().parse_args(argv)
    provider: TokenProvider = FileToken(args.token_file) if args.token_file else DiscoveredToken()
    try:
        if args.command == "token":
            # An expired token is an error (exit 1) that names its source, never the token.
            token = unexpired_token(provider, wall_clock())
            exp = token_expiry(token)
            left = f"expires in {exp - wall_clock():.0f} s" if exp else "expiry unknown"
            print(f"token found: {token_source(provider)}; {len(token)} characters; {left}")
            return 0
        compression = None if getattr(args, "compression", "none") == "none" else args.compression
        with Client(args.url, protocol=args.protocol, token=provider, job_id=args.job_id,
                    dataset=args.dataset, timeout=args.timeout, compression=compression,
                    link_gbit_s=getattr(args, "link_gbit_s", None), wall_clock=wall_clock) as c:
            if args.command == "server-metadata":
                print(json.dumps(c.server_metadata(), indent=2))
            elif args.command == "model-metadata":
                print(json.dumps(c.model_metadata(args.model, args.model_version), indent=2))
            else:
                data = np.load(args.npy, allow_pickle=False)
                inputs = {args.input: data} if args.input else data
                out = c.infer(args.model, inputs, model_version=args.model_version,
                              batch_size=args.batch_size, concurrency=args.concurrency)
                s = out.stats
                print(f"{s.n_items} items in {s.n_batches} requests, {s.bytes_sent / 1e6:.2f} MB, "
                      f"compression={s.compression}, retries={s.retries}, {s.wall_s * 1e3:.1f} ms "
                      f"({s.n_items / s.wall_s if s.wall_s else 0:.0f} items/s)")
                for name, arr in out.items():
                    print(f"  {name}: shape={list(arr.shape)} dtype={arr.dtype} "
                          f"mean={float(np.mean(arr)) if arr.size and arr.dtype != object else 'n/a'}")
                if args.save:
                    np.savez(args.save, **out)
                    print(f"outputs written to {args.save}")
    except SonicClientError as exc:
        print(f"sonic-client: {exc}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as exc:
        print(f"sonic-client: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
