"""UDP round-trip client for the net figure (run inside the bench's namespace).

    python -I -S udp_client.py ADDRESS PORT SECONDS

Sends one 64-byte datagram, waits for its echo (at most 0.2 s, then it
counts as lost and the next one goes out), and repeats for SECONDS. Prints
`udp: trips=N seconds=S median_us=U lost=L`. Stand-alone on purpose: it runs
under `-I -S` in another namespace, importing nothing of the bench.
"""

import socket
import sys
import time

PAYLOAD_BYTES = 64
REPLY_TIMEOUT = 0.2


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: udp_client.py ADDRESS PORT SECONDS", file=sys.stderr)
        return 64
    try:
        address, port, seconds = argv[0], int(argv[1]), float(argv[2])
    except ValueError:
        print("udp_client.py: PORT and SECONDS must be numbers", file=sys.stderr)
        return 64
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(REPLY_TIMEOUT)
    sock.connect((address, port))
    samples, lost, seq = [], 0, 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        sent = time.perf_counter()
        if sent >= deadline:
            break
        seq += 1
        payload = seq.to_bytes(8, "little") * (PAYLOAD_BYTES // 8)
        try:
            sock.send(payload)
            while sock.recv(2048) != payload:
                pass  # a late echo of an earlier datagram: keep waiting for ours
            samples.append(time.perf_counter() - sent)
        except (socket.timeout, ConnectionRefusedError):
            lost += 1
    elapsed = time.perf_counter() - start
    samples.sort()
    median_us = samples[len(samples) // 2] * 1e6 if samples else 0.0
    print("udp: trips=%d seconds=%.3f median_us=%.1f lost=%d"
          % (len(samples), elapsed, median_us, lost))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
