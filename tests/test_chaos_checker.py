#!/usr/bin/env python3
"""Tests of the mandrill-chaos history checker (chaos/chaos_check.py) on
hand-made histories: a clean one must pass, and each broken one (a lost id,
overlapping leases, a restart orphaned by a worker kill, one from a stalled worker, a reused delivery
id, a double save, a request never restarted, an unattributed duplicate, a
run that did not settle, memory over its limit, under a policy two restarts
of one host at once or a group over its cap) must fail naming the broken
invariant, or pass with "KNOWN OPEN" when that invariant is marked so.
Usage: test_chaos_checker.py [CHAOS_DIR]; exit 0 when every case behaves.
"""
import io
import json
import os
import shutil
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "..", "chaos"))
import chaos_check  # noqa: E402
import chaos_plan   # noqa: E402

S = 1000000000                      # one second in ns
T0 = 1700000000 * S
A = "0b9c8f8e-1f2a-4c3d-9e8f-0a1b2c3d4e5f"
B = "1c9c8f8e-1f2a-4c3d-9e8f-0a1b2c3d4e5f"


def s_base():
    """A clean history: A and B published, PUBACKed, delivered, restarted
    once, saved once and acked; the broker settled."""
    return {
        "meta": {"seed": 1, "durability": "batch", "start_ns": T0},
        "faults": [],
        "pub": [{"t": T0, "op": "publish", "req": "r1", "ids": [A, B]},
                {"t": T0 + S // 10, "op": "puback", "req": "r1", "ids": [A, B],
                 "duplicates": [], "durability": "batch"}],
        "events": [{"t": T0 + S, "name": "delivered",
                    "body": {"message_id": A, "attempt": 1, "delivery_id": 4294967297, "worker": "w0"}},
                   {"t": T0 + S, "name": "delivered",
                    "body": {"message_id": B, "attempt": 1, "delivery_id": 4294967298, "worker": "w1"}}],
        "restarts": ["start %s a.example.net w0 %d" % (A, T0 + 2 * S),
                     "end %s a.example.net w0 %d" % (A, T0 + 3 * S),
                     "start %s b.example.net w1 %d" % (B, T0 + 2 * S),
                     "end %s b.example.net w1 %d" % (B, T0 + 3 * S)],
        "rows": [{"message_id": A, "worker": "w0", "attempt": 1, "saves": 1},
                 {"message_id": B, "worker": "w1", "attempt": 1, "saves": 1}],
        "stats": {"ready": 0, "delayed": 0, "in_flight": 0, "held": 0},
        "dead": {"dead_letters": [], "total": 0},
        "rss": [{"t": T0 + S, "pid": 1, "rss_kb": 10000}],
    }


def s_write(h):
    d = tempfile.mkdtemp(prefix="chaos-check-test-")
    with open(os.path.join(d, "meta.json"), "w") as f:
        json.dump(h["meta"], f)
    for name, key in (("faults.jsonl", "faults"), ("pub-0.jsonl", "pub"),
                      ("events.jsonl", "events"), ("rows.jsonl", "rows"), ("rss.jsonl", "rss")):
        with open(os.path.join(d, name), "w") as f:
            for rec in h[key]:
                f.write(json.dumps(rec) + "\n")
    with open(os.path.join(d, "restarts.log"), "w") as f:
        f.write("\n".join(h["restarts"]) + "\n")
    with open(os.path.join(d, "stats.json"), "w") as f:
        json.dump(h["stats"], f)
    with open(os.path.join(d, "deadletters.json"), "w") as f:
        json.dump(h["dead"], f)
    return d


FAILURES = []


def s_case(name, h, want_rc, want_text, **kw):
    d = s_write(h)
    out = io.StringIO()
    try:
        rc = chaos_check.check(d, out=out, **kw)
    finally:
        shutil.rmtree(d)
    text = out.getvalue()
    ok = rc == want_rc and all(w in text for w in want_text)
    print("%s %s (rc %d)" % ("ok  " if ok else "FAIL", name, rc))
    if not ok:
        FAILURES.append(name)
        print(text)


def main():
    s_case("clean history passes", s_base(), 0, ["RESULT PASS", "HOLDS lost"])

    h = s_base()
    h["rows"] = h["rows"][:1]
    h["events"] = h["events"][:1]
    h["restarts"] = h["restarts"][:2]
    s_case("a lost id is caught", h, 1, ["VIOLATION lost", B])

    h = s_base()
    h["dead"] = {"dead_letters": [{"message": {"message_id": B}, "reason": "x"}], "total": 1}
    h["rows"] = h["rows"][:1]
    h["restarts"] = h["restarts"][:2]
    s_case("a dead-lettered id is not lost", h, 0, ["RESULT PASS", "1 dead-lettered"])

    h = s_base()
    h["meta"]["durability"] = "memory"
    h["pub"][1]["durability"] = "memory"
    h["faults"] = [{"t": T0 + S, "kind": "kill_broker", "phase": "begin"}]
    h["rows"], h["restarts"] = [], []
    s_case("memory mode may forget across a broker kill", h, 0, ["RESULT PASS", "memory mode"])

    h = s_base()
    h["stats"]["in_flight"] = 1
    s_case("an unsettled run fails", h, 1, ["VIOLATION lost", "in_flight = 1"])
    # Unsettled: B was saved (a row) but its restart has not run yet, and
    # no acked event says it was acked: still pending, not a `restarted`
    # violation. With an acked event it is one.
    h["restarts"] = h["restarts"][:2]
    s_case("a saved request still waiting in an unsettled run is not judged restarted", h, 1,
           ["HOLDS restarted", "not judged by `restarted`"])
    h["events"].append({"t": T0 + 3 * S, "name": "acked", "body": {"message_id": B}})
    s_case("an acked request without a restart is caught in an unsettled run too", h, 1,
           ["VIOLATION restarted", B])

    h = s_base()
    h["restarts"] += ["start %s a.example.net w1 %d" % (A, T0 + 2 * S + S // 2),
                      "end %s a.example.net w1 %d" % (A, T0 + 4 * S)]
    h["faults"] = [{"t": T0 + 2 * S + S // 4, "kind": "stop_worker_deadline", "phase": "begin", "name": "w0"}]
    s_case("overlapping leases are caught", h, 1, ["VIOLATION overlap", A, "stop_worker_deadline"])

    h = s_base()
    h["restarts"].insert(0, "start %s a.example.net w1 %d" % (A, T0 + S + S // 2))
    s_case("a start without an end is open to the end", h, 1, ["VIOLATION overlap", "(no end)"])

    h = s_base()
    h["restarts"] += ["start %s a.example.net w1 %d" % (A, T0 + 2 * S + S // 2),
                      "end %s a.example.net w1 %d" % (A, T0 + 4 * S)]
    h["faults"] = [{"t": T0 + 2 * S + S // 4, "kind": "kill_worker", "phase": "begin", "name": "w0"}]
    s_case("a killed worker's orphan restart is caught", h, 1,
           ["VIOLATION orphan", "HOLDS overlap", "HOLDS unattributed"])
    s_case("... and reported KNOWN OPEN when marked", h, 0,
           ["KNOWN OPEN: orphan", "RESULT PASS"], known_open=["orphan"])

    h = s_base()
    h["restarts"] += ["start %s a.example.net w1 %d" % (A, T0 + 2 * S + S // 2),
                      "end %s a.example.net w1 %d" % (A, T0 + 4 * S)]
    h["faults"] = [{"t": T0 + 2 * S - S // 100, "kind": "kill_worker", "phase": "begin", "name": "w0"},
                   {"t": T0 + 2 * S + S // 5, "kind": "kill_worker", "phase": "end", "name": "w0"}]
    s_case("an orphan whose start line follows the kill is still an orphan", h, 1,
           ["VIOLATION orphan", "HOLDS overlap"])
    h["faults"] = [{"t": T0 + S, "kind": "kill_worker", "phase": "begin", "name": "w0"},
                   {"t": T0 + S + S // 2, "kind": "kill_worker", "phase": "end", "name": "w0"}]
    s_case("a kill of an earlier life of the worker makes no orphan", h, 1,
           ["VIOLATION overlap", "HOLDS orphan"])

    h = s_base()
    h["restarts"] += ["start %s a.example.net w1 %d" % (A, T0 + 2 * S + S // 2),
                      "end %s a.example.net w1 %d" % (A, T0 + 4 * S)]
    h["faults"] = [{"t": T0 + S, "kind": "stop_worker_hb", "phase": "begin", "name": "w1"},
                   {"t": T0 + 2 * S + S // 4, "kind": "stop_worker_hb", "phase": "end", "name": "w1"}]
    s_case("a stalled worker restarting a lease it lost is caught", h, 1,
           ["VIOLATION stalled", "HOLDS overlap", "HOLDS orphan"])
    s_case("... and reported KNOWN OPEN when marked", h, 0,
           ["KNOWN OPEN: stalled", "RESULT PASS"], known_open=["stalled"])

    h = s_base()
    h["events"][1]["body"]["delivery_id"] = 4294967297
    s_case("a reused delivery id is caught", h, 1, ["VIOLATION delivery_reuse", "4294967297"])

    h = s_base()
    h["rows"].append({"message_id": A, "worker": "w1", "attempt": 2, "saves": 1})
    s_case("a double save is caught", h, 1, ["VIOLATION saved_once", A + " has 2 rows"])

    h = s_base()
    h["rows"] = h["rows"][:1]
    h["events"].append({"t": T0 + 3 * S, "name": "acked", "body": {"message_id": B}})
    s_case("an acked id without a row is caught", h, 1, ["VIOLATION saved_once", B + " has 0 rows"])

    h = s_base()
    h["restarts"] = h["restarts"][:2]
    s_case("an acked id never restarted is caught", h, 1, ["VIOLATION restarted", B])

    h = s_base()
    h["restarts"] += ["start %s a.example.net w1 %d" % (A, T0 + 5 * S),
                      "end %s a.example.net w1 %d" % (A, T0 + 6 * S)]
    s_case("a duplicate restart with no fault is caught", h, 1, ["VIOLATION unattributed", A])
    h["faults"] = [{"t": T0 + 4 * S, "kind": "kill_broker", "phase": "begin"}]
    s_case("a duplicate restart is attributed to its fault", h, 0,
           ["1 duplicate completed restart(s): kill_broker 1", "RESULT PASS"])
    h["faults"] = [{"t": T0 + S, "kind": "kill_broker", "phase": "begin"},
                   {"t": T0 + S + S // 2, "kind": "kill_broker", "phase": "end"}]
    s_case("a fault over before the first restart explains nothing", h, 1, ["VIOLATION unattributed"])
    # The first restart's worker is killed, then the disk is slowed before
    # the redelivered restart: the kill undid the first attempt.
    h["faults"] = [{"t": T0 + 2 * S + S // 2, "kind": "kill_worker", "phase": "begin", "name": "w0"},
                   {"t": T0 + 3 * S, "kind": "kill_worker", "phase": "end", "name": "w0"},
                   {"t": T0 + 4 * S, "kind": "slow_disk", "phase": "begin", "delay_ms": 100},
                   {"t": T0 + 7 * S, "kind": "slow_disk", "phase": "end"}]
    s_case("a duplicate is blamed on the fault that undid the first attempt", h, 0,
           ["1 duplicate completed restart(s): kill_worker 1", "RESULT PASS"])
    # A stop of another worker spans both restarts; the broker was killed
    # in between: the broker's fault is the one that undid the attempt.
    h["faults"] = [{"t": T0 + S, "kind": "stop_worker_hb", "phase": "begin", "name": "w2"},
                   {"t": T0 + 3 * S, "kind": "kill_broker", "phase": "begin"},
                   {"t": T0 + 3 * S + S // 2, "kind": "kill_broker", "phase": "end"},
                   {"t": T0 + 7 * S, "kind": "stop_worker_hb", "phase": "end", "name": "w2"}]
    s_case("another worker's fault is blamed only when nothing else overlaps", h, 0,
           ["1 duplicate completed restart(s): kill_broker 1", "RESULT PASS"])

    h = s_base()
    h["rss"].append({"t": T0 + 2 * S, "pid": 1, "rss_kb": 300 * 1024})
    s_case("memory under no limit is reported", h, 0, ["RSS max 300.0 MiB", "RESULT PASS"])
    s_case("memory over the limit is caught", h, 1, ["VIOLATION memory"], rss_limit_mb=256)

    # The same seed replays the same plan; another seed gives another
    args = (60.0, chaos_plan.KINDS, 3, 2, 3, 1.0, 5.0)
    one, again, other = (chaos_plan.plan(7, *args), chaos_plan.plan(7, *args),
                         chaos_plan.plan(8, *args))
    ok = one == again and one != other and len(one) > 5 \
        and all(f["kind"] in chaos_plan.KINDS for f in one)
    print("%s a seed replays its plan (%d faults)" % ("ok  " if ok else "FAIL", len(one)))
    if not ok:
        FAILURES.append("plan replay")

    #  Under a policy: A and B on one host at once, and a group over its cap
    h = s_base()
    h["meta"]["groups"] = [["ab", "*.example.net", 2]]
    s_case("a policy run within its caps passes", h, 0,
           ["HOLDS host_overlap", "HOLDS group_cap", "ab at most 2 at once (cap 2)"])
    h = s_base()
    h["meta"]["groups"] = [["ab", "*.example.net", 1]]
    s_case("a group over its cap is caught", h, 1, ["VIOLATION group_cap", "group ab: 2 restarts at once"])
    h = s_base()
    h["meta"]["groups"] = [["a", "a.*", 1], ["b", "b.*", 1]]
    s_case("hosts go to the first group that matches", h, 0, ["a at most 1", "b at most 1"])
    h = s_base()
    h["meta"]["groups"] = [["ab", "*.example.net", 5]]
    h["restarts"] = [r.replace("b.example.net", "a.example.net") for r in h["restarts"]]
    s_case("two restarts of one host at once are caught", h, 1, ["VIOLATION host_overlap", "a.example.net"])
    h = s_base()
    h["restarts"] = [r.replace("b.example.net", "a.example.net") for r in h["restarts"]]
    s_case("without a policy one host may be restarted twice at once", h, 0, ["RESULT PASS"])

    rc = chaos_check.check("/nonexistent/chaos/history", out=io.StringIO())
    print("%s a missing directory is a usage error (rc %d)" % ("ok  " if rc == 2 else "FAIL", rc))
    if rc != 2:
        FAILURES.append("usage")
    d = s_write(s_base())
    rc = chaos_check.check(d, known_open=["nonsense"], out=io.StringIO())
    shutil.rmtree(d)
    print("%s an unknown --known-open name is a usage error (rc %d)" % ("ok  " if rc == 2 else "FAIL", rc))
    if rc != 2:
        FAILURES.append("known-open usage")

    if FAILURES:
        print("%d case(s) failed: %s" % (len(FAILURES), ", ".join(FAILURES)))
        return 1
    print("all cases passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
