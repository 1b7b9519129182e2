"""The ``sonic-gateway`` command line."""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from gateway.auth.cli import add_token_arguments, run_token_command
from gateway.catalog.cli import add_catalog_commands
from gateway.config import ConfigError, load_settings
from gateway.envoy.binary import EnvoyNotAvailable, envoy_binary
from gateway.observability.logs import configure_logging
from gateway.triton.launcher import DEFAULT_MODEL_REPOSITORY, TritonError, TritonPorts, TritonServer

Command = Callable[[argparse.Namespace], int]


def wait_for_signal() -> None:
    """Block until SIGTERM or SIGINT."""
    received: list[int] = []

    def handler(signum: int, frame: object) -> None:
        received.append(signum)

    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        while not received:
            signal.pause()
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def cmd_serve(args: argparse.Namespace) -> int:
    from gateway.workers import run_workers

    settings = load_settings(args.config)
    if settings.envoy.enabled:
        envoy_binary(settings.envoy.binary)  # before anything starts: a missing data plane says so
    return run_workers(settings, args.workers)  # it configures logging as the settings say


def cmd_triton(args: argparse.Namespace) -> int:
    configure_logging("INFO", "text")
    server = TritonServer(
        TritonPorts(args.grpc_port, args.http_port, args.metrics_port),
        model_repository=Path(args.model_repository),
        log_path=Path(args.log_file) if args.log_file else None,
        host=args.host,
    )
    server.start()
    try:
        server.wait_ready(args.ready_timeout)
        print(
            f"Triton ready: gRPC {args.host}:{args.grpc_port}, HTTP {args.host}:{args.http_port}, "
            f"metrics {args.host}:{args.metrics_port} (Ctrl-C to stop)",
            flush=True,
        )
        wait_for_signal()
    finally:
        server.stop()
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from gateway.demo import run_demo

    return run_demo(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sonic-gateway", description="Federated, authenticated inference gateway for Triton."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gateway (gRPC and HTTP) until SIGTERM/SIGINT")
    serve.add_argument("--config", help="YAML configuration file (default: $SONIC_GATEWAY_CONFIG)")
    serve.add_argument("--workers", type=int, default=1, help="processes sharing the ports (default 1)")
    serve.set_defaults(func=cmd_serve)

    triton = sub.add_parser("triton", help="run a local Triton facility in the foreground")
    triton.add_argument("--grpc-port", type=int, default=9001)
    triton.add_argument("--http-port", type=int, default=9000)
    triton.add_argument("--metrics-port", type=int, default=9002)
    triton.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    triton.add_argument("--model-repository", default=str(DEFAULT_MODEL_REPOSITORY))
    triton.add_argument("--log-file", help="write Triton's log here (default: discard)")
    triton.add_argument("--ready-timeout", type=float, default=120.0)
    triton.set_defaults(func=cmd_triton)

    token = sub.add_parser("token", help="mint a token from the local development issuer")
    add_token_arguments(token)
    token.set_defaults(func=run_token_command)

    demo = sub.add_parser("demo", help="two local Triton facilities, the gateway, and a reco-style job")
    demo.add_argument("--events", type=int, default=2, help="synthetic events per batch size (default 2)")
    demo.add_argument("--workdir", default=".sonic/demo", help="logs and state (default .sonic/demo)")
    demo.set_defaults(func=cmd_demo)
    add_catalog_commands(sub)  # db upgrade, apply
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    func: Command = args.func
    try:
        return func(args)
    except (ConfigError, TritonError, EnvoyNotAvailable) as exc:
        print(f"sonic-gateway: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
