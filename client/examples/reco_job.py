"""A reconstruction-style job: synthetic ProtoDUNE-like events -> 48x48 patches around hits ->
classified through the gateway by ``emtrack_michel``, with a per-event timing table split into
preprocess / transmit / wait as in the paper's latency model.

    python client/examples/reco_job.py --url 127.0.0.1:8001 --events 5 --batch-size 1693

The work itself lives in :mod:`sonic_client.protodune` so the gateway's demo can import it.
"""

from __future__ import annotations

import argparse
import sys

from sonic_client import Client, SonicClientError
from sonic_client.protodune import MODEL_NAME, classify_event, generate_event


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--url", default=None, help="gateway (default $SONIC_GATEWAY_URL or 127.0.0.1:8001)")
    p.add_argument("--model", default=MODEL_NAME, help="emtrack_michel, or identity_fp32 to benchmark")
    p.add_argument("--events", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=1693, help="the paper used 235 and 1693")
    p.add_argument("--concurrency", type=int, default=1,
                   help="requests in flight (1 = the paper's blocking LArSoft module)")
    p.add_argument("--compression", choices=["none", "gzip", "auto"], default="none")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dataset", default="synthetic-protodune")
    args = p.parse_args(argv)

    compression = None if args.compression == "none" else args.compression
    header = (f"{'event':>5} {'hits':>6} {'reqs':>4} {'MB':>7} {'gzip':>4} "
              f"{'preprocess':>10} {'transmit':>9} {'wait':>8} {'total':>8}  counts")
    try:
        with Client(args.url, dataset=args.dataset, compression=compression,
                    concurrency=args.concurrency) as client:
            print(header)
            totals = [0.0, 0.0, 0.0]
            for i in range(args.events):
                event = generate_event(args.seed + i, event_id=i)
                r = classify_event(client, event, model=args.model, batch_size=args.batch_size,
                                   concurrency=args.concurrency)
                totals = [totals[0] + r.preprocess_s, totals[1] + r.transmit_s, totals[2] + r.wait_s]
                counts = " ".join(f"{k}={v}" for k, v in r.counts.items())
                print(f"{r.event_id:>5} {r.n_hits:>6} {r.n_batches:>4} {r.bytes_sent / 1e6:>7.2f} "
                      f"{'on' if r.compression == 'gzip' else 'off':>4} {r.preprocess_s:>9.3f}s "
                      f"{r.transmit_s:>8.3f}s {r.wait_s:>7.3f}s {r.total_s:>7.3f}s  {counts}")
            n = max(args.events, 1)
            print(f"{'mean':>5} {'':>6} {'':>4} {'':>7} {'':>4} {totals[0] / n:>9.3f}s "
                  f"{totals[1] / n:>8.3f}s {totals[2] / n:>7.3f}s {sum(totals) / n:>7.3f}s")
    except SonicClientError as exc:
        print(f"reco_job: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
