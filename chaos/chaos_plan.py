"""The fault plan of mandrill-chaos: a list of faults drawn from one seed.

plan (seed, duration_s, kinds, workers, publishers, hosts, timing) returns
[{"at": s, "kind": K, "target": i, "hold": s}, ...] sorted by "at" (a
slow_disk fault also has "delay_ms"). The plan
depends only on its arguments (random.Random (seed)), so the same seed and
options replay the same plan; what the processes were doing at each instant
still depends on timing. Faults run one after another: a fault's hold ends
before the next one begins, and the next starts 1.5 to 4 s after that.

Kinds (target is a worker, publisher or host index where it applies):
  kill_broker     kill -9, started again after `hold` on the same data dir and ports
  kill_worker     kill -9 of a worker, started again after `hold`
  kill_publisher  kill -9 of a publisher, started again after `hold`
  stop_worker_hb  SIGSTOP of a worker for longer than 3 heartbeats, below the ack deadline
  stop_worker_deadline  SIGSTOP of a worker for longer than the ack deadline
  stop_broker     SIGSTOP of the broker for longer than 3 heartbeats
  cut_host        (--hosts) the host's veth link down for `hold`, then up
  netem_host      (--hosts) 30 % loss and 100 ms delay on the host's link for `hold`
  disk_full       fill the tmpfs under the journal for `hold`, then free it
  slow_disk       every fsync of the broker `delay_ms` late for `hold`
"""
import random

KINDS = ("kill_broker", "kill_worker", "kill_publisher", "stop_worker_hb",
         "stop_worker_deadline", "stop_broker", "cut_host", "netem_host", "disk_full",
         "slow_disk")
HOST_KINDS = ("cut_host", "netem_host")
#   A slow_disk fault's fsync delay: from a disk under load to one that
#   stalls for longer than the heartbeat.
SLOW_DISK_DELAYS_MS = (20, 100, 500, 1500)


def plan(seed, duration_s, kinds, workers, publishers, hosts, heartbeat_s, ack_deadline_s):
    rng = random.Random(seed)
    out = []
    t = rng.uniform(2.0, 4.0)
    while t < duration_s:
        kind = rng.choice(list(kinds))
        target = 0
        if kind in ("kill_worker", "stop_worker_hb", "stop_worker_deadline"):
            target = rng.randrange(workers)
        elif kind == "kill_publisher":
            target = rng.randrange(publishers)
        elif kind in HOST_KINDS:
            target = rng.randrange(max(hosts, 1))
        if kind in ("kill_broker", "kill_worker", "kill_publisher"):
            hold = rng.uniform(0.2, 1.5)
        elif kind in ("stop_worker_hb", "stop_broker"):
            low = 3 * heartbeat_s + 0.5
            hold = rng.uniform(low, max(low, min(ack_deadline_s - 0.5, low + 1.0)))
        elif kind == "stop_worker_deadline":
            hold = rng.uniform(ack_deadline_s + 1.0, ack_deadline_s + 3.0)
        elif kind in HOST_KINDS or kind == "slow_disk":
            hold = rng.uniform(2.0, 6.0)
        else:
            hold = rng.uniform(1.0, 3.0)
        fault = {"at": round(t, 3), "kind": kind, "target": target, "hold": round(hold, 3)}
        if kind == "slow_disk":
            fault["delay_ms"] = rng.choice(SLOW_DISK_DELAYS_MS)
        out.append(fault)
        t += hold + rng.uniform(1.5, 4.0)
    return out


def parse_groups(specs):
    """[(name, glob, cap)] from --group NAME:GLOB:MAX specs; ValueError names
    the first bad one."""
    out = []
    for spec in specs:
        parts = spec.split(":")
        if len(parts) != 3 or not parts[0] or not parts[1] or not parts[2].isdigit() \
                or int(parts[2]) < 1:
            raise ValueError("--group %r: NAME:GLOB:MAX with MAX >= 1" % spec)
        out.append((parts[0], parts[1], int(parts[2])))
    return out
