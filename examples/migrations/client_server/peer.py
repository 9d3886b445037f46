"""A pingpong peer in the manner of fi_pingpong: ``peer.py server|client -p PROV --core N -E=PORT``.

It takes its NeuronCore from the command line, starts the (fake) runtime on it, and
exchanges one message with the other side over loopback TCP on the out-of-band port.
"""

from __future__ import annotations

import argparse
import os
import socket
import time

from pytest_neuron.testing import init_runtime


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=["server", "client"])
    parser.add_argument("-p", dest="provider", required=True)
    parser.add_argument("--core", required=True)
    parser.add_argument("-E", dest="port", type=int, required=True)
    args = parser.parse_args()
    os.environ["NEURON_RT_VISIBLE_CORES"] = args.core
    runtime = init_runtime()
    if args.role == "server":
        with socket.socket() as server:
            server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            server.bind(("127.0.0.1", args.port))
            server.listen(1)
            conn, _ = server.accept()
            with conn:
                conn.sendall(f"server core {runtime.visible_cores}".encode())
        return
    for _ in range(500):
        try:
            conn = socket.create_connection(("127.0.0.1", args.port))
            break
        except OSError:
            time.sleep(0.02)
    else:
        raise SystemExit(f"no server on port {args.port}")
    with conn:
        print(f"{conn.recv(100).decode()}, client core {runtime.visible_cores} ({args.provider})")


if __name__ == "__main__":
    main()
