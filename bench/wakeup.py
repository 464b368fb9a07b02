"""What waking another process costs on this machine: a loopback TCP ping-pong.

One process sends 900 bytes on a loopback TCP connection (TCP_NODELAY) and waits
for them back from a second process, as the gateway does with a SOAP backend on
the same machine at one connection. It prints the sender's CPU per round trip
(`time.process_time()`) and the wall time, with both processes on the same core
and on two different cores (`os.sched_setaffinity`), beside the same exchange
within one process. On a VM, waking a process on another core can cost several
times what the exchange itself does (an inter-processor interrupt the host must
deliver); that cost lands in every figure at one connection, the gateway's
(two wake-ups a request: the backend and the client) and the floor's (one).

    .venv/bin/python bench/wakeup.py [-n 20000]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import time

_DATA = b"x" * 900


def _echo(listener: socket.socket, cpu: int) -> None:
    os.sched_setaffinity(0, {cpu})
    conn, _ = listener.accept()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    while data := conn.recv(4096):
        conn.sendall(data)
    os._exit(0)


def _round_trips(n: int, client_cpu: int, server_cpu: int) -> tuple[float, float]:
    """CPU µs of the sender and wall µs per round trip to a second process."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    pid = os.fork()
    if pid == 0:
        _echo(listener, server_cpu)
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {client_cpu})
    try:
        with socket.create_connection(listener.getsockname()) as conn:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for _ in range(n // 10):  # warm-up
                conn.sendall(_DATA)
                conn.recv(4096)
            cpu, wall = time.process_time(), time.perf_counter()
            for _ in range(n):
                conn.sendall(_DATA)
                conn.recv(4096)
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    finally:
        os.sched_setaffinity(0, before)
        listener.close()
        os.waitpid(pid, 0)
    return cpu / n * 1e6, wall / n * 1e6


def _in_process(n: int) -> float:
    a, b = socket.socketpair()
    with a, b:
        cpu = time.process_time()
        for _ in range(n):
            a.sendall(_DATA)
            b.recv(4096)
            b.sendall(_DATA)
            a.recv(4096)
        return (time.process_time() - cpu) / n * 1e6


def measure(n: int) -> dict[str, float]:
    """The three cases: sender CPU µs (and wall µs) per round trip."""
    cpus = sorted(os.sched_getaffinity(0))
    out = {"in_process_cpu_us": _in_process(n)}
    out["same_core_cpu_us"], out["same_core_wall_us"] = _round_trips(n, cpus[0], cpus[0])
    if len(cpus) > 1:
        out["cross_core_cpu_us"], out["cross_core_wall_us"] = _round_trips(n, cpus[0], cpus[1])
    return {k: round(v, 1) for k, v in out.items()}


def summary(found: dict[str, float]) -> str | None:
    """One sentence for the report, or None without two cores."""
    if "cross_core_cpu_us" not in found:
        return None
    ratio = found["cross_core_cpu_us"] / found["same_core_cpu_us"]
    return (
        f"Waking a process on the other core costs {found['cross_core_cpu_us']:.1f} µs of the "
        f"sender's CPU per loopback round trip, {ratio:.1f}x the same exchange on one core "
        f"({found['same_core_cpu_us']:.1f} µs; bench/wakeup.py). A read at one connection pays "
        "it at least twice (the backend, the client), the floor once."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=20000, help="round trips per case")
    parser.add_argument("--json", action="store_true", help="one JSON object, for bench/run.py")
    args = parser.parse_args()
    found = measure(args.n)
    if args.json:
        print(json.dumps(found))
        return
    cpus = sorted(os.sched_getaffinity(0))
    print(f"{args.n} round trips of {len(_DATA)} bytes; cores {cpus}")
    print("| case | sender CPU µs | wall µs | CPU vs same core |")
    print("|---|---:|---:|---:|")
    print(f"| one process, a socket pair | {found['in_process_cpu_us']:.1f} | - | - |")
    same = found["same_core_cpu_us"]
    print(f"| two processes, one core | {same:.1f} | {found['same_core_wall_us']:.1f} | 1.00x |")
    if "cross_core_cpu_us" in found:
        cross = found["cross_core_cpu_us"]
        wall = found["cross_core_wall_us"]
        print(f"| two processes, two cores | {cross:.1f} | {wall:.1f} | {cross / same:.2f}x |")


if __name__ == "__main__":
    main()
