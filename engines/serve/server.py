"""``python -m engines.serve`` / ``avatarcam-serve``: start the avatar server on Ray Serve.

One machine::

    avatarcam-serve --checkpoint vox-adv-cpk.pth.tar --host 0.0.0.0 --token SECRET

A cluster: ``ray start --head`` on one machine, ``ray start --address HEAD:6379`` on the others,
then ``avatarcam-serve --address auto --replicas 4 ...`` on the head.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from export.errors import UserError, missing_dependency

from ..options import BACKENDS, PRECISIONS
from .settings import DEFAULT_PORT, HEALTH_PATH, ServerSettings

log = logging.getLogger("avatarcam.serve")

#: The environment variable that may hold the token (beside --token and --token-file).
TOKEN_VARIABLE = "AVATARCAM_SERVER_TOKEN"
#: Ray Serve's proxies prefer replicas on their own node unless this is 0.
LOCAL_ROUTING_VARIABLE = "RAY_SERVE_PROXY_PREFER_LOCAL_NODE_ROUTING"
#: Ray's switch for clusters of one machine on 127.0.0.1 (ray._private.ray_constants).
LOOPBACK_VARIABLE = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
#: Object store of a local Ray cluster: results travel over the WebSocket, not the store.
OBJECT_STORE_BYTES = 256 * 1024 * 1024


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="avatarcam-serve",
        description="Serve avatar animation to run_live.py --server clients over WebSockets, "
        "on Ray Serve: N replicas, each batching its streams' frames on one engine.",
        epilog="examples:\n"
        "  avatarcam-serve --checkpoint vox-adv-cpk.pth.tar            # ws://127.0.0.1:8765\n"
        "  avatarcam-serve --checkpoint ... --host 0.0.0.0 --token SECRET --replicas 2\n"
        "  ray start --head; avatarcam-serve --address auto --checkpoint ...   # a cluster",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    model = parser.add_argument_group("model")
    model.add_argument("--checkpoint", type=Path, help="FOMM checkpoint (default: looked up)")
    model.add_argument("--config", default="vox-256", help="preset or FOMM YAML (vox-256)")
    model.add_argument("--resolution", type=int, help="frame size (default: the config's)")
    model.add_argument("--backend", choices=[b for b in BACKENDS if b != "remote"], default="auto")
    model.add_argument("--precision", choices=PRECISIONS, default="fp32")
    model.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    serving = parser.add_argument_group("serving")
    serving.add_argument("--host", default="127.0.0.1", help="bind address (default loopback)")
    serving.add_argument("--port", type=int, default=DEFAULT_PORT, help="port (default 8765)")
    serving.add_argument("--replicas", type=int, default=1, help="model replicas (default 1)")
    serving.add_argument(
        "--max-batch", type=int, default=4, help="most streams' frames per engine call (4)"
    )
    serving.add_argument(
        "--batch-wait-ms",
        type=float,
        default=2.0,
        help="how long a replica waits to fill a batch (default 2 ms; a frame is 33 ms)",
    )
    serving.add_argument(
        "--max-sessions", type=int, default=8, help="streams per replica; more are refused (8)"
    )
    serving.add_argument(
        "--token",
        help="shared secret clients must send (--server-token); visible to other local users "
        f"in the process list: prefer --token-file or ${TOKEN_VARIABLE}",
    )
    serving.add_argument("--token-file", type=Path, help="read the token from this file")
    serving.add_argument(
        "--max-sessions-per-client",
        type=int,
        default=4,
        help="open connections per client IP address, over all replicas (4)",
    )
    serving.add_argument(
        "--idle-timeout", type=float, default=60.0, help="close a silent session after (60 s)"
    )
    serving.add_argument(
        "--hello-timeout", type=float, default=5.0, help="time a new connection has for HELLO (5 s)"
    )
    serving.add_argument(
        "--engine-timeout",
        type=float,
        default=30.0,
        help="longest engine call; past it the replica is unhealthy and Ray restarts it (30 s)",
    )
    serving.add_argument(
        "--max-replicas-per-node",
        type=int,
        help="at most this many replicas on one node of a cluster (default: no limit)",
    )
    serving.add_argument(
        "--gpus-per-replica",
        type=float,
        help="GPUs each replica reserves (default: the cluster's GPUs / --replicas, at most 1)",
    )
    serving.add_argument(
        "--address", help="join a running Ray cluster (auto, HOST:PORT); default: start one"
    )
    serving.add_argument("--num-cpus", type=int, help="CPUs of the local Ray cluster")
    serving.add_argument(
        "--exit-after", type=float, help=argparse.SUPPRESS
    )  # tests: stop after this many seconds
    parser.add_argument("-v", "--verbose", action="store_true", help="log more detail")
    return parser


def settings_from_args(args: argparse.Namespace) -> ServerSettings:
    from export.checkpoint import find_default_checkpoint

    for flag, value in (
        ("--replicas", args.replicas),
        ("--max-batch", args.max_batch),
        ("--max-sessions", args.max_sessions),
    ):
        if value < 1:
            raise UserError(f"{flag} must be at least 1, got {value}")
    if args.batch_wait_ms < 0:
        raise UserError(f"--batch-wait-ms must be 0 or more, got {args.batch_wait_ms}")
    if not 0 < args.port < 65536:
        raise UserError(f"--port {args.port} is not a TCP port (1-65535)")
    if args.max_sessions_per_client < 1:
        raise UserError(
            f"--max-sessions-per-client must be at least 1, got {args.max_sessions_per_client}"
        )
    for flag, seconds in (
        ("--idle-timeout", args.idle_timeout),
        ("--hello-timeout", args.hello_timeout),
        ("--engine-timeout", args.engine_timeout),
    ):
        if not seconds > 0:
            raise UserError(f"{flag} must be more than 0 seconds, got {seconds}")
    if args.max_replicas_per_node is not None and args.max_replicas_per_node < 1:
        raise UserError(
            f"--max-replicas-per-node must be at least 1, got {args.max_replicas_per_node}"
        )
    if args.gpus_per_replica is not None and args.gpus_per_replica < 0:
        raise UserError(f"--gpus-per-replica must be 0 or more, got {args.gpus_per_replica}")
    checkpoint = args.checkpoint or find_default_checkpoint()
    if not Path(checkpoint).is_file():
        raise UserError(f"--checkpoint {checkpoint} does not exist: pass a FOMM checkpoint file")
    return ServerSettings(
        checkpoint=Path(checkpoint).resolve(),
        config=args.config,
        resolution=args.resolution,
        backend=args.backend,
        precision=args.precision,
        device=args.device,
        host=args.host,
        port=args.port,
        replicas=args.replicas,
        max_batch=args.max_batch,
        batch_wait_ms=args.batch_wait_ms,
        max_sessions=args.max_sessions,
        token=_token(args),
        max_sessions_per_client=args.max_sessions_per_client,
        idle_timeout_s=args.idle_timeout,
        hello_timeout_s=args.hello_timeout,
        engine_timeout_s=args.engine_timeout,
        gpus_per_replica=args.gpus_per_replica,
        max_replicas_per_node=args.max_replicas_per_node,
        address=args.address,
        num_cpus=args.num_cpus,
    )


def _token(args: argparse.Namespace) -> str | None:
    """--token, else the first line of --token-file, else $AVATARCAM_SERVER_TOKEN."""
    if args.token and args.token_file:
        raise UserError("pass --token or --token-file, not both")
    if args.token_file is not None:
        try:
            token = args.token_file.read_text().strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(
                f"--token-file {args.token_file}: cannot read it ({exc}); pass a text file "
                "holding the token"
            ) from None
        if not token:
            raise UserError(f"--token-file {args.token_file} is empty: write the token into it")
        return token
    return args.token or os.environ.get(TOKEN_VARIABLE) or None


def _import_serve():
    try:
        import fastapi  # noqa: F401
        import ray
        from ray import serve
    except ImportError as exc:
        raise missing_dependency(exc.name or "ray", "serve", "the avatar server") from None
    return ray, serve


def start(settings: ServerSettings) -> None:
    """Start Ray (or join ``settings.address``) and deploy the application; returns when the
    replicas are ready to take sessions."""
    if settings.loopback and not settings.address:
        # Ray takes the node's address from its routes and binds its own servers (GCS,
        # raylet, workers, agents) to it; for a loopback server they listen on loopback only.
        # Read when Ray is imported; RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 is Ray's own switch
        # for single-machine clusters that never leave 127.0.0.1.
        os.environ[LOOPBACK_VARIABLE] = "0"
        if "ray" in sys.modules:  # imported already (a benchmark in this process): same switch
            from ray._private import ray_constants

            ray_constants.ENABLE_RAY_CLUSTER = False
    ray, serve = _import_serve()
    from export.config import load_config

    from .proxy_hook import environment
    from .session import max_message_bytes

    config = load_config(settings.config, settings.resolution)  # a bad config fails here
    resolution = settings.resolution or config.resolution
    # Replicas import this checkout's packages, whatever is installed elsewhere; OpenCV in
    # them refuses to decode images larger than a frame of the model, whatever their header.
    root = str(Path(__file__).resolve().parents[2])
    pixels = str(resolution * resolution)
    env_vars = {"PYTHONPATH": root, "OPENCV_IO_MAX_IMAGE_PIXELS": pixels}
    if not ray.is_initialized():
        if settings.address:
            # Worker nodes get this checkout's packages from Ray (uploaded once); the
            # checkpoint must be at the same path on every node (replicas check at start).
            modules = [str(Path(root, package)) for package in ("engines", "export")]
            ray.init(
                address=settings.address,
                logging_level=logging.WARNING,
                runtime_env={
                    "py_modules": modules,
                    "env_vars": {"OPENCV_IO_MAX_IMAGE_PIXELS": pixels},
                },
            )
        else:
            # The proxies (Ray processes started below inherit this environment) bound
            # WebSocket messages before buffering them and refuse connections over a
            # client's budget before they reach a replica: engines.serve.proxy_hook.
            os.environ.update(
                environment(max_message_bytes(resolution), settings.max_sessions_per_client)
            )
            # Sessions entering at one node's proxy go to replicas on every node.
            os.environ[LOCAL_ROUTING_VARIABLE] = "0"
            path = os.environ.get("PYTHONPATH")
            os.environ["PYTHONPATH"] = root + (os.pathsep + path if path else "")
            ray.init(
                address="local",  # a new cluster, never one that happens to run here
                num_cpus=settings.num_cpus,
                include_dashboard=False,
                object_store_memory=OBJECT_STORE_BYTES,
                logging_level=logging.WARNING,
                runtime_env={"env_vars": env_vars},
            )
    serve.start(http_options={"host": settings.host, "port": settings.port})
    from .deployment import build

    serve.run(
        build(settings),
        name="avatarcam",
        route_prefix="/",
        logging_config={"enable_access_log": False},
    )


def stop() -> None:
    ray, serve = _import_serve()
    try:
        serve.shutdown()
    finally:
        ray.shutdown()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(message)s",
        stream=sys.stderr,
        force=True,
    )
    try:
        settings = settings_from_args(args)
        if not settings.loopback and settings.token is None:
            log.warning(
                "warning: %s is reachable from other machines and no --token is set: anyone "
                "who can reach it can use this server. Pass --token SECRET (clients: "
                "--server-token SECRET).",
                settings.host,
            )
        stopped = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stopped.set())
        log.info("starting %d replica(s) of %s ...", settings.replicas, settings.checkpoint.name)
        start(settings)
        try:
            print(
                f"avatarcam server ready: {settings.url}  (health: "
                f"http://{settings.url.removeprefix('ws://')}{HEALTH_PATH}; Ctrl+C stops)\n"
                f"clients: python run_live.py --server {settings.url} --avatar PHOTO"
                + (" --server-token TOKEN" if settings.token else ""),
                flush=True,
            )
            if not settings.loopback:
                import socket

                print(
                    f"from other machines: ws://{socket.gethostname()}:{settings.port} "
                    "(or this machine's IP address)",
                    flush=True,
                )
            stopped.wait(args.exit_after)
            log.info("stopping the server ...")
        finally:
            stop()
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0
