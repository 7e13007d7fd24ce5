"""Keeps a loopback server's Ray Serve replicas on loopback.

Each Serve replica starts an inter-deployment gRPC server bound to ``[::]:0``, every interface,
whatever the node's address (``ray.serve._private.replica``, Ray 2.60), right after the
deployment's constructor returns. On a loopback server (``--host 127.0.0.1``, a local cluster
whose node address is 127.0.0.1) the constructors call :func:`bind_replica_to_loopback` first,
so that this server listens on 127.0.0.1 like the rest of Ray. The bind call is Ray's private
helper: when it is not where this module expects it, the replica logs that it may listen on
every interface instead of failing.
"""

from __future__ import annotations

import logging

log = logging.getLogger("ray.serve")


def bind_replica_to_loopback() -> bool:
    """Make this replica's inter-deployment gRPC server bind 127.0.0.1; False if not possible."""
    try:
        from ray.serve._private import replica
    except ImportError:
        replica = None
    original = getattr(replica, "add_port_to_grpc_server", None)
    if original is None:
        log.warning("avatarcam: this Ray version's replicas may listen on every interface")
        return False
    if getattr(original, "_avatarcam_loopback", False):
        return True

    def bind(server, address: str):
        if address.startswith("[::]:") or address.startswith("0.0.0.0:"):
            address = "127.0.0.1:" + address.rsplit(":", 1)[1]
        return original(server, address)

    bind._avatarcam_loopback = True  # type: ignore[attr-defined]
    replica.add_port_to_grpc_server = bind
    return True
