#!/usr/bin/env python3
"""The publisher of mandrill-chaos: a ZeroMQ DEALER speaking MMP/1
(proto/PROTOCOL.md section 4.1) that records every PUBLISH and its PUBACK.

    chaos_publisher.py --endpoint EP --log FILE --stop-file FILE
                       [--rate N] [--batch N] [--window N] [--retry-after S]

History (FILE, JSON lines, appended with one write each, so a kill -9 loses
at most the line being written):
    {"t": ns, "op": "publish", "req": R, "ids": [...], "retry": bool}
    {"t": ns, "op": "puback",  "req": R, "ids": [...], "duplicates": [...],
     "durability": MODE}
    {"t": ns, "op": "error",   "req": R, "code": C, "reason": TEXT}
The publish line is written before the PUBLISH is sent, and the puback line
only after the PUBACK arrived, so the file never claims a PUBACK that did not
happen; the checker counts only puback lines.

Retries, as a publisher must: a batch without an answer within
--retry-after seconds, or answered ERROR (e.g. `unavailable` on a full
disk), is sent again with the same ids. On start the publisher reads its own
history and first retries every id that was published but never PUBACKed, so
a publisher killed with -9 and started again keeps the promise.

It makes new requests (unique ids and instance names, so the broker's
per-host rules never hold one back) at --rate requests per second until
--stop-file exists; then it finishes its retries and exits 0. Exit 2: bad
usage. Clock: time.time_ns () (realtime), the one clock of the history.
"""
import argparse
import json
import os
import sys
import time
import uuid

import zmq


def s_now():
    return time.time_ns()


class History:
    """Appends JSON lines with one os.write each (O_APPEND)."""

    def __init__(self, path):
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def write(self, record):
        os.write(self.fd, (json.dumps(record, separators=(",", ":")) + "\n").encode())


def s_unacked(path):
    """Ids published but never PUBACKed in an earlier life of this publisher."""
    published, acked = [], set()
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                rec = json.loads(line)
            except ValueError:
                continue            # a line cut by kill -9
            if rec.get("op") == "publish":
                published.extend(rec.get("ids", []))
            elif rec.get("op") == "puback":
                acked.update(rec.get("ids", []))
    seen, out = set(), []
    for i in published:
        if i not in acked and i not in seen:
            seen.add(i)
            out.append(i)
    return out


def s_request(mid, pool):
    """A request for a new host, or (pool > 0) for one of pool hosts
    fleet-00 .. fleet-NN, chosen by the id's first 8 hex digits."""
    if pool > 0:
        host = "fleet-%02d" % (int(mid[:8], 16) % pool)
        return {"message_id": mid, "instance_name": host, "hostname": host + ".example.net"}
    return {"message_id": mid, "instance_name": "cattle-" + mid.replace("-", "")[:32]}


def main():
    ap = argparse.ArgumentParser(description="MMP/1 publisher that records its history")
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--log", required=True)
    ap.add_argument("--stop-file", required=True)
    ap.add_argument("--rate", type=float, default=20.0, help="new requests per second")
    ap.add_argument("--batch", type=int, default=5)
    ap.add_argument("--window", type=int, default=8, help="batches in flight")
    ap.add_argument("--retry-after", type=float, default=3.0)
    ap.add_argument("--host-pool", type=int, default=0, help="hosts the requests name (0: new each)")
    args = ap.parse_args()
    if args.batch < 1 or args.batch > 1000 or args.window < 1 or args.rate < 0:
        print("chaos_publisher: bad --batch/--window/--rate", file=sys.stderr)
        return 2

    hist = History(args.log)
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RECONNECT_IVL, 100)
    sock.setsockopt(zmq.RECONNECT_IVL_MAX, 500)
    sock.connect(args.endpoint)

    retry = s_unacked(args.log)         # ids waiting to be (re)sent
    inflight = {}                       # req -> (ids, sent_ns)
    seq = 0
    tag = "%d-%d" % (os.getpid(), s_now() // 1000000)
    made = 0.0                          # requests owed by the rate so far
    started = time.monotonic()
    sent_reqs = {}                      # every req sent, for late answers

    def send(ids, is_retry):
        nonlocal seq
        seq += 1
        req = "%s-%d" % (tag, seq)
        hist.write({"t": s_now(), "op": "publish", "req": req, "ids": ids, "retry": is_retry})
        body = json.dumps({"messages": [s_request(i, args.host_pool) for i in ids], "req": req}).encode()
        try:
            sock.send_multipart([b"MMP1", b"PUBLISH", body], flags=zmq.NOBLOCK)
        except zmq.Again:
            pass                        # counts as unanswered: retried later
        inflight[req] = (ids, time.monotonic())
        sent_reqs[req] = ids

    while True:
        stopping = os.path.exists(args.stop_file)
        if stopping and not retry and not inflight:
            return 0
        # Fill the window: retries first, then new requests as the rate allows
        while len(inflight) < args.window and retry:
            ids, retry = retry[:args.batch], retry[args.batch:]
            send(ids, True)
        if not stopping:
            owed = args.rate * (time.monotonic() - started) - made
            while len(inflight) < args.window and owed >= args.batch:
                send([str(uuid.uuid4()) for _ in range(args.batch)], False)
                made += args.batch
                owed -= args.batch
        if sock.poll(50):
            try:
                frames = sock.recv_multipart()
            except zmq.ZMQError:
                continue
            if len(frames) != 3 or frames[0] != b"MMP1":
                continue
            try:
                body = json.loads(frames[2])
            except ValueError:
                continue
            req = body.get("req")
            if req not in sent_reqs:
                continue
            # A late answer to a batch already retried still counts (a
            # PUBACK is a promise, whenever it arrives); its retry is then
            # answered as a duplicate.
            late = req not in inflight
            ids = sent_reqs[req] if late else inflight.pop(req)[0]
            if frames[1] == b"PUBACK":
                hist.write({"t": s_now(), "op": "puback", "req": req,
                            "ids": body.get("message_ids", []),
                            "duplicates": body.get("duplicates", []),
                            "durability": body.get("durability")})
            elif not late:
                hist.write({"t": s_now(), "op": "error", "req": req,
                            "code": body.get("code"), "reason": body.get("reason")})
                retry.extend(ids)
                time.sleep(0.2)         # back off: the broker said not now
        now = time.monotonic()
        for req in [r for r, (_, sent) in inflight.items() if now - sent > args.retry_after]:
            ids, _ = inflight.pop(req)
            retry.extend(ids)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
