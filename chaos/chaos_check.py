"""The history checker of mandrill-chaos (issue 8 section 1).

    mandrill-chaos check HISTORY_DIR [--known-open NAME,...] [--rss-limit-mb N]

Reads a history directory (the layout is in chaos/README.md) and, for each
invariant, either says it holds over the whole history or prints a
counterexample (the ids, times and lines that break it):

  lost          every PUBACKed id ends acked or dead-lettered: acked means a
                database row or an `acked` event; dead-lettered means listed
                by the final DEADLETTERS. Also fails when the final STATS
                still holds requests (ready, delayed, in flight, held): the
                run did not settle, so nothing can be proved. Ids PUBACKed
                with durability `memory` before a broker kill are excused
                (memory mode promises nothing across a restart) and counted.
  overlap       never two open leases for one request at once: the restart
                script's start/end intervals of one id never overlap (a
                start without an end is open until the end of the history).
  orphan        the same, for a pair whose first restart belonged to a worker
                killed with -9 before the second began: the killed worker's
                restart runs on (as a real one would) while the broker
                delivers the request again at once. Kept apart from
                `overlap` so that it can be marked known open by itself
                (the in-doubt rule of docs/DESIGN "Restart safety").
  stalled       the same, for a pair whose second restart came from a worker
                that was stopped (SIGSTOP) while the first was delivered:
                the broker rightly gave the stalled worker's lease away,
                and the worker, resumed, started the restart of the lease
                it no longer held. Kept apart for the same reason.
  saved_once    every acked (not dead-lettered) id has exactly one row.
  restarted     every acked id has at least one completed restart (in a run
                that did not settle, only ids with an `acked` event: a row
                alone may belong to a request whose restart is still due).
  delivery_reuse  no delivery id appears in two `delivered` events. The
                event feed is best-effort (PUB drops at its high-water mark):
                a lost event can hide a reuse, never invent one.
  unattributed  every duplicate completed restart (the second and later
                `end` of one id) is attributed to the latest fault that
                began before the duplicate's start and lasted at least
                until the first restart's start; a duplicate with no such
                fault is a violation.
  memory        the broker's RSS (sampled every 100 ms) stayed under
                --rss-limit-mb (no limit: reported only).

--known-open NAME,... reports violations of those invariants as
"KNOWN OPEN: ..." lines without failing (for bugs known and still open).
Exit codes: 0 every invariant holds, 1 a violation, 2 usage (no such
directory, unreadable history). Cost: O(history) time and memory.
"""
import bisect
import fnmatch
import glob
import json
import os
import sys

INVARIANTS = ("lost", "overlap", "orphan", "stalled", "saved_once", "restarted", "delivery_reuse",
              "unattributed", "memory", "host_overlap", "group_cap")
SHOW = 5                            # counterexamples printed per invariant


class UsageError(Exception):
    pass


def s_jsonl(path):
    """Records of a JSON-lines file; a line cut by a kill -9 is skipped."""
    out = []
    if not os.path.exists(path):
        return out
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
    return out


def s_json(path, default):
    if not os.path.exists(path):
        return default
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except ValueError as e:
        raise UsageError("%s: not JSON (%s)" % (path, e))


class History:
    """Everything a run recorded, read once."""

    def __init__(self, hdir):
        if not os.path.isdir(hdir):
            raise UsageError("%s: not a directory" % hdir)
        self.dir = hdir
        self.meta = s_json(os.path.join(hdir, "meta.json"), {})
        self.faults = s_jsonl(os.path.join(hdir, "faults.jsonl"))
        self.faults.sort(key=lambda f: f.get("t", 0))
        self.pub = []
        for p in sorted(glob.glob(os.path.join(hdir, "pub-*.jsonl"))):
            self.pub.extend(s_jsonl(p))
        self.events = s_jsonl(os.path.join(hdir, "events.jsonl"))
        self.rows = s_jsonl(os.path.join(hdir, "rows.jsonl"))
        self.stats = s_json(os.path.join(hdir, "stats.json"), None)
        dl = s_json(os.path.join(hdir, "deadletters.json"), {})
        self.dead = set()
        for item in dl.get("dead_letters", []) if isinstance(dl, dict) else []:
            msg = item.get("message", {}) if isinstance(item, dict) else {}
            if isinstance(msg, dict) and msg.get("message_id"):
                self.dead.add(msg["message_id"].lower())
        self.rss = s_jsonl(os.path.join(hdir, "rss.jsonl"))
        self.restarts = []          # (kind, id, host, worker, t_ns, line_no)
        path = os.path.join(hdir, "restarts.log")
        if os.path.exists(path):
            with open(path, encoding="utf-8", errors="replace") as f:
                for n, line in enumerate(f, 1):
                    w = line.split()
                    if len(w) >= 5 and w[0] in ("start", "end") and w[4].isdigit():
                        self.restarts.append((w[0], w[1].lower(), w[2], w[3], int(w[4]), n))
        self.end_t = max([r[4] for r in self.restarts] + [f.get("t", 0) for f in self.faults]
                         + [e.get("t", 0) for e in self.events] + [p.get("t", 0) for p in self.pub]
                         + [0])


class Report:
    def __init__(self, known_open):
        self.known_open = set(known_open)
        self.failed = False
        self.lines = []
        self.result = {}

    def holds(self, name, text):
        self.result[name] = "holds"
        self.lines.append("HOLDS %-14s %s" % (name, text))

    def violated(self, name, text, examples):
        shown = ["    " + e for e in examples[:SHOW]]
        if len(examples) > SHOW:
            shown.append("    ... and %d more" % (len(examples) - SHOW))
        if name in self.known_open:
            self.result[name] = "known_open"
            self.lines.append("KNOWN OPEN: %s: %s" % (name, text))
        else:
            self.result[name] = "violated"
            self.failed = True
            self.lines.append("VIOLATION %-10s %s" % (name, text))
        self.lines.extend(shown)

    def note(self, text):
        self.lines.append("  note: " + text)


def s_fmt_t(h, t):
    """A time as seconds since the run began (meta start_ns), for reading."""
    base = h.meta.get("start_ns", 0)
    return "%.3fs" % ((t - base) / 1e9) if base else str(t)


def s_pubacked(h):
    """id -> (first PUBACK time, durability)."""
    out = {}
    for rec in h.pub:
        if rec.get("op") == "puback":
            for i in rec.get("ids", []):
                i = i.lower()
                if i not in out:
                    out[i] = (rec.get("t", 0), rec.get("durability"))
    return out


def s_spans(h):
    """Faults as (begin, end, record): each begin paired with the next end
    of the same kind and target; a fault never ended lasts to the end."""
    spans = []
    for k, f in enumerate(h.faults):
        if f.get("phase") != "begin":
            continue
        key = (f.get("kind"), f.get("name"), f.get("host"))
        end = h.end_t
        for g in h.faults[k + 1:]:
            if g.get("phase") == "end" and (g.get("kind"), g.get("name"), g.get("host")) == key:
                end = g["t"]
                break
        spans.append((f["t"], end, f))
    return spans


def s_broker_kills(h):
    return [f["t"] for f in h.faults if f.get("kind") == "kill_broker" and f.get("phase") == "begin"]


def s_unsettled(h):
    """Why the final STATS shows the broker still holding work ([] when it
    settled)."""
    if h.stats is None:
        return ["no final STATS (stats.json) in the history"]
    return ["final STATS %s = %d" % (key, h.stats[key]) for key in ("ready", "delayed", "in_flight", "held")
            if isinstance(h.stats.get(key), int) and h.stats[key] > 0]


def s_check_lost(h, rep, pubacked, acked):
    kills = s_broker_kills(h)
    excused, lost = [], []
    for i, (t, mode) in sorted(pubacked.items(), key=lambda kv: kv[1][0]):
        if i in acked or i in h.dead:
            continue
        if mode == "memory" and any(k > t for k in kills):
            excused.append(i)
            continue
        lost.append("%s PUBACKed at %s (%s), neither acked nor dead-lettered"
                    % (i, s_fmt_t(h, t), mode))
    unsettled = s_unsettled(h)
    if unsettled:
        rep.violated("lost", "the run did not settle (%s): %d PUBACKed id(s) not acked or "
                     "dead-lettered yet, so none lost cannot be proved"
                     % (", ".join(unsettled), len(lost)), unsettled + lost)
    elif lost:
        rep.violated("lost", "%d PUBACKed id(s) lost" % len(lost), lost)
    else:
        rep.holds("lost", "%d PUBACKed ids: %d acked, %d dead-lettered"
                  % (len(pubacked), len([i for i in pubacked if i in acked]),
                     len([i for i in pubacked if i in h.dead])))
    if excused:
        rep.note("%d id(s) PUBACKed in memory mode were forgotten by a broker kill (allowed)"
                 % len(excused))


def s_intervals(h):
    """id -> [(start, end, worker, open_ended, line)] from the restart log."""
    open_ = {}
    out = {}
    for kind, i, _host, worker, t, n in sorted(h.restarts, key=lambda r: (r[4], r[5])):
        if kind == "start":
            open_.setdefault((i, worker), []).append((t, n))
        else:
            starts = open_.get((i, worker))
            if starts:
                s, sn = starts.pop(0)
                out.setdefault(i, []).append((s, t, worker, False, sn))
    for (i, worker), starts in open_.items():
        for s, sn in starts:
            out.setdefault(i, []).append((s, h.end_t, worker, True, sn))
    for v in out.values():
        v.sort()
    return out


def s_check_overlap(h, rep, intervals):
    kills = [(b, e, f.get("name")) for b, e, f in s_spans(h) if f.get("kind") == "kill_worker"]
    stops = [(b, e, f.get("name")) for b, e, f in s_spans(h)
             if f.get("kind") in ("stop_worker_hb", "stop_worker_deadline")]
    begins = [f for f in h.faults if f.get("phase") == "begin"]
    bad, orphans, stalled = [], [], []
    for i, ivs in intervals.items():
        for a, b in zip(ivs, ivs[1:]):
            if b[0] >= a[1]:
                continue
            cause = [f for f in begins if f["t"] <= b[0]]
            text = ("%s: restart by %s %s..%s%s (line %d) overlaps restart by %s "
                    "starting %s (line %d); last fault before: %s"
                    % (i, a[2], s_fmt_t(h, a[0]), s_fmt_t(h, a[1]),
                       " (no end)" if a[3] else "", a[4], b[2], s_fmt_t(h, b[0]), b[4],
                       "%s %s at %s" % (cause[-1].get("kind"), cause[-1].get("name", ""),
                                        s_fmt_t(h, cause[-1]["t"])) if cause else "none"))
            # An orphan: a's worker was killed while a ran, or before a's
            # start line was stamped by a child forked before the kill (the
            # line comes from the child, so it can follow the kill by a few
            # ms) but before the worker was started again.
            if any(name == a[2] and a[0] < e and a[1] > t and t <= b[0] for t, e, name in kills):
                orphans.append(text)
            elif any(name == b[2] and t <= a[0] <= e <= b[0] for t, e, name in stops):
                stalled.append(text)
            else:
                bad.append(text)
    if bad:
        rep.violated("overlap", "%d pair(s) of overlapping leases (restart intervals)" % len(bad), bad)
    else:
        rep.holds("overlap", "%d restart intervals over %d ids, none overlapping%s"
                  % (sum(len(v) for v in intervals.values()), len(intervals),
                     " (but for the cases below)" if orphans or stalled else ""))
    if orphans:
        rep.violated("orphan", "%d restart(s) of a killed worker still ran when the request "
                     "was restarted again" % len(orphans), orphans)
    else:
        rep.holds("orphan", "no restart of a killed worker overlapped a redelivery")
    if stalled:
        rep.violated("stalled", "%d restart(s) started by a worker resumed from a stop, "
                     "for a lease given away while it was stopped" % len(stalled), stalled)
    else:
        rep.holds("stalled", "no worker resumed from a stop restarted a lease it had lost")


def s_host_intervals(h):
    """host -> [(start, end, id, worker)] from the restart log (a start
    without an end runs to the end of the history)."""
    open_ = {}
    out = {}
    for kind, i, host, worker, t, _n in sorted(h.restarts, key=lambda r: (r[4], r[5])):
        key = (i, worker)
        if kind == "start":
            open_.setdefault(key, []).append((t, host))
        elif open_.get(key):
            s, host0 = open_[key].pop(0)
            out.setdefault(host0.lower(), []).append((s, t, i, worker))
    for (i, worker), starts in open_.items():
        for s, host in starts:
            out.setdefault(host.lower(), []).append((s, h.end_t, i, worker))
    return out


def s_max_concurrency(ivs):
    """Most intervals open at once, and when; an end at t comes before a start at t."""
    points = sorted([(a, 1) for a, _b, *_ in ivs] + [(b, -1) for _a, b, *_ in ivs],
                    key=lambda p: (p[0], p[1]))
    best, at, now = 0, 0, 0
    for t, d in points:
        now += d
        if now > best:
            best, at = now, t
    return best, at


def s_check_policy(h, rep):
    """With --group: one restart per host at a time (whatever the request),
    and no group more restarts at once than its cap. Hosts are matched to
    groups as the broker does: the first glob that matches the folded
    hostname, else "default" (no cap). Returns {group: [max seen, cap]}."""
    groups = h.meta.get("groups") or []
    if not groups:
        return {}
    by_host = s_host_intervals(h)
    bad = []
    for host, ivs in sorted(by_host.items()):
        ivs.sort()
        for a, b in zip(ivs, ivs[1:]):
            if b[0] < a[1] and b[2] != a[2]:
                bad.append("%s: restart of %s by %s %s..%s overlaps restart of %s by %s from %s"
                           % (host, a[2], a[3], s_fmt_t(h, a[0]), s_fmt_t(h, a[1]),
                              b[2], b[3], s_fmt_t(h, b[0])))
    if bad:
        rep.violated("host_overlap", "%d pair(s) of restarts of one host at once" % len(bad), bad)
    else:
        rep.holds("host_overlap", "%d hosts, never two restarts of one host at once" % len(by_host))
    per_group = {}
    for host, ivs in by_host.items():
        name = "default"
        for g, pattern, _cap in groups:
            if fnmatch.fnmatchcase(host, pattern.lower()):
                name = g
                break
        per_group.setdefault(name, []).extend(ivs)
    caps = {g: cap for g, _p, cap in groups}
    result, over = {}, []
    for g in [g for g, _p, _c in groups] + (["default"] if "default" in per_group else []):
        seen, at = s_max_concurrency(per_group.get(g, []))
        result[g] = [seen, caps.get(g)]
        if g in caps and seen > caps[g]:
            over.append("group %s: %d restarts at once at %s, cap %d" % (g, seen, s_fmt_t(h, at), caps[g]))
    if over:
        rep.violated("group_cap", "%d group(s) over their cap" % len(over), over)
    else:
        rep.holds("group_cap", "; ".join("%s at most %d at once (cap %s)" % (g, v[0], v[1] or "none")
                                         for g, v in result.items()))
    return result


def s_check_saved_restarted(h, rep, pubacked, acked, completed, acked_events):
    rows = {}
    for r in h.rows:
        i = str(r.get("message_id", "")).lower()
        rows[i] = rows.get(i, 0) + 1
    done = [i for i in pubacked if i in acked and i not in h.dead]
    bad_rows = ["%s has %d rows" % (i, rows.get(i, 0)) for i in done if rows.get(i, 0) != 1]
    if bad_rows:
        rep.violated("saved_once", "%d acked id(s) not saved exactly once" % len(bad_rows), bad_rows)
    else:
        rep.holds("saved_once", "%d acked ids, one row each" % len(done))
    resaves = [r for r in h.rows if isinstance(r.get("saves"), int) and r["saves"] > 1]
    if resaves:
        rep.note("%d row(s) were written more than once (the row's saves column), "
                 "after redeliveries" % len(resaves))
    # A worker saves and restarts at once, so a row comes before the ack: in
    # a run that settled every id with a row was acked (STATS holds none),
    # but in one that did not, a row may belong to a request still waiting
    # for its restart. Only an `acked` event proves the ack there.
    unjudged = []
    if s_unsettled(h):
        unjudged = [i for i in done if completed.get(i, 0) < 1 and i not in acked_events]
    norestart = ["%s acked without a completed restart" % i for i in done
                 if completed.get(i, 0) < 1 and i not in unjudged]
    if unjudged:
        rep.note("%d id(s) with a row and no restart yet, in a run that did not settle, have no "
                 "acked event: still pending, not judged by `restarted`" % len(unjudged))
    if norestart:
        rep.violated("restarted", "%d acked id(s) never restarted" % len(norestart), norestart)
    else:
        rep.holds("restarted", "%d acked ids, each restarted at least once" % (len(done) - len(unjudged)))


def s_check_reuse(h, rep):
    seen = {}
    bad = []
    for e in h.events:
        if e.get("name") != "delivered":
            continue
        body = e.get("body", {})
        did = body.get("delivery_id")
        if did is None:
            continue
        if did in seen:
            first = seen[did]
            bad.append("delivery id %s: %s attempt %s at %s, again %s attempt %s at %s"
                       % (did, first.get("message_id"), first.get("attempt"),
                          s_fmt_t(h, first.get("t", 0)), body.get("message_id"),
                          body.get("attempt"), s_fmt_t(h, e.get("t", 0))))
        else:
            seen[did] = dict(body, t=e.get("t", 0))
    if bad:
        if h.meta.get("durability") == "memory":
            rep.note("memory mode documents that delivery ids may repeat across restarts")
        rep.violated("delivery_reuse", "%d delivery id(s) reused" % len(bad), bad)
    else:
        rep.holds("delivery_reuse", "%d delivered events, every delivery id distinct "
                  "(the feed is best-effort)" % len(seen))


def s_check_duplicates(h, rep, intervals):
    """Duplicates by cause; returns {cause: count}."""
    spans = s_spans(h)
    by_cause, bad = {}, []
    for i, ivs in intervals.items():
        done = [iv for iv in ivs if not iv[3]]
        for dup in done[1:]:
            first_start, first_worker = done[0][0], done[0][2]
            # The culprit is a fault that began before the duplicate started
            # and was still going on (or began) after the first restart
            # started: the one that undid the first attempt. Of those, a
            # fault of the worker that ran the first restart comes first,
            # then one of the whole broker or disk (no worker named), then
            # any other; the earliest of its kind, since the later ones came
            # after the first attempt was already lost.
            cands = [f for b, e, f in spans if b <= dup[0] and e >= first_start]
            mine = [f for f in cands if f.get("name") == first_worker]
            shared = [f for f in cands if f.get("name") is None and f.get("host") is None]
            if cands:
                cause = (mine or shared or cands)[0].get("kind", "?")
                by_cause[cause] = by_cause.get(cause, 0) + 1
            else:
                bad.append("%s: duplicate restart by %s at %s, no fault since its first "
                           "restart at %s" % (i, dup[2], s_fmt_t(h, dup[0]), s_fmt_t(h, first_start)))
    total = sum(by_cause.values()) + len(bad)
    text = "%d duplicate completed restart(s)%s" % (
        total, ": " + ", ".join("%s %d" % kv for kv in sorted(by_cause.items())) if by_cause else "")
    if bad:
        rep.violated("unattributed", text + "; %d with no fault to blame" % len(bad), bad)
    else:
        rep.holds("unattributed", text)
    if bad:
        by_cause["unattributed"] = len(bad)
    return by_cause


def s_check_memory(h, rep, limit_mb):
    peak = max([s.get("rss_kb", 0) for s in h.rss] + [0])
    text = "broker RSS max %.1f MiB over %d samples%s" % (
        peak / 1024.0, len(h.rss), "" if limit_mb is None else " (limit %d MiB)" % limit_mb)
    if limit_mb is not None and peak > limit_mb * 1024:
        rep.violated("memory", text, ["RSS %d kB > %d MiB" % (peak, limit_mb)])
    else:
        rep.holds("memory", text)
    return peak


def s_recovery(h):
    """Recovery times (seconds) from the event feed: broker start -> first
    delivery; worker kill -> each lease it held delivered again."""
    delivered = sorted(((e.get("t", 0), e.get("body", {})) for e in h.events
                        if e.get("name") == "delivered"), key=lambda te: te[0])
    dtimes = [t for t, _ in delivered]
    broker = []
    for f in h.faults:
        if f.get("kind") == "kill_broker" and f.get("phase") == "end":
            k = bisect.bisect_left(dtimes, f["t"])
            if k < len(dtimes):
                broker.append((dtimes[k] - f["t"]) / 1e9)
    ended = {}
    for e in h.events:
        if e.get("name") in ("acked", "nacked", "expired"):
            did = e.get("body", {}).get("delivery_id")
            if did is not None:
                ended.setdefault(did, e.get("t", 0))
    worker = []
    for f in h.faults:
        if f.get("kind") != "kill_worker" or f.get("phase") != "begin":
            continue
        name, t = f.get("name"), f["t"]
        held = {}
        for dt, body in delivered:
            if dt > t:
                break
            did = body.get("delivery_id")
            if body.get("worker") == name and ended.get(did, t + 1) > t:
                held[body.get("message_id")] = dt
        for mid in held:
            for dt, body in delivered:
                if dt > t and body.get("message_id") == mid:
                    worker.append((dt - t) / 1e9)
                    break
    return broker, worker


def s_summary(values):
    if not values:
        return "n/a"
    v = sorted(values)
    return "n=%d median %.2fs max %.2fs" % (len(v), v[len(v) // 2], v[-1])


def check(hdir, known_open=(), rss_limit_mb=None, out=sys.stdout):
    """Checks one history; returns the exit code (0, 1 or 2)."""
    for name in known_open:
        if name not in INVARIANTS:
            print("mandrill-chaos check: unknown invariant %r (known: %s)"
                  % (name, ", ".join(INVARIANTS)), file=sys.stderr)
            return 2
    try:
        h = History(hdir)
    except (UsageError, OSError) as e:
        print("mandrill-chaos check: %s" % e, file=sys.stderr)
        return 2
    if rss_limit_mb is None:
        rss_limit_mb = h.meta.get("rss_limit_mb")
    rep = Report(known_open)
    pubacked = s_pubacked(h)
    acked_events = {str(e.get("body", {}).get("message_id", "")).lower()
                    for e in h.events if e.get("name") == "acked"}
    acked = {str(r.get("message_id", "")).lower() for r in h.rows} | acked_events
    intervals = s_intervals(h)
    completed = {i: len([iv for iv in ivs if not iv[3]]) for i, ivs in intervals.items()}
    s_check_lost(h, rep, pubacked, acked)
    s_check_overlap(h, rep, intervals)
    s_check_saved_restarted(h, rep, pubacked, acked, completed, acked_events)
    s_check_reuse(h, rep)
    dups = s_check_duplicates(h, rep, intervals)
    peak = s_check_memory(h, rep, rss_limit_mb)
    groups = s_check_policy(h, rep)
    broker_rec, worker_rec = s_recovery(h)
    faults = {}
    for f in h.faults:
        if f.get("phase") == "begin":
            faults[f.get("kind", "?")] = faults.get(f.get("kind", "?"), 0) + 1
    published = set()
    for rec in h.pub:
        if rec.get("op") == "publish":
            published.update(i.lower() for i in rec.get("ids", []))
    summary = {
        "seed": h.meta.get("seed"), "durability": h.meta.get("durability"),
        "faults": faults, "published": len(published), "pubacked": len(pubacked),
        "lost": sum(1 for i in pubacked if i not in acked and i not in h.dead),
        "dead_lettered": len([i for i in pubacked if i in h.dead]),
        "duplicates_by_cause": dups, "rss_max_kb": peak,
        "recovery_broker_s": broker_rec, "recovery_worker_s": worker_rec,
        "groups": groups, "verify": h.meta.get("verify", False),
        "invariants": rep.result,
    }
    print("mandrill-chaos check %s (seed %s, durability %s)"
          % (hdir, h.meta.get("seed"), h.meta.get("durability")), file=out)
    for line in rep.lines:
        print(line, file=out)
    print("  faults: %s" % (", ".join("%s %d" % kv for kv in sorted(faults.items())) or "none"),
          file=out)
    print("  recovery: broker restart -> first delivery %s; worker kill -> leases redelivered %s"
          % (s_summary(broker_rec), s_summary(worker_rec)), file=out)
    print("RESULT %s" % ("FAIL" if rep.failed else "PASS"), file=out)
    try:
        with open(os.path.join(hdir, "check.json"), "w", encoding="utf-8") as f:
            json.dump(summary, f, indent=1)
    except OSError:
        pass
    return 1 if rep.failed else 0


def table(hdir, out=sys.stdout):
    """Prints the soak table from HISTORY_DIR/check.json (written by check);
    returns 0, or 2 when there is none."""
    try:
        with open(os.path.join(hdir, "check.json"), encoding="utf-8") as f:
            s = json.load(f)
    except (OSError, ValueError) as e:
        print("mandrill-chaos table: %s" % e, file=sys.stderr)
        return 2

    def row(k, v):
        print("| %-44s | %s |" % (k, v), file=out)

    print("| %-44s | %s |" % ("mandrill-chaos (seed %s, %s)" % (s.get("seed"), s.get("durability")),
                              "value"), file=out)
    print("|%s|%s|" % ("-" * 46, "-" * 7), file=out)
    for kind, n in sorted(s.get("faults", {}).items()):
        row("faults: " + kind, n)
    row("requests published", s.get("published"))
    row("requests PUBACKed", s.get("pubacked"))
    row("lost", s.get("lost"))
    row("dead-lettered", s.get("dead_lettered"))
    dups = s.get("duplicates_by_cause", {})
    row("duplicate completed restarts", sum(dups.values()))
    for cause, n in sorted(dups.items()):
        row("  caused by " + cause, n)
    row("broker restart -> first delivery", s_summary(s.get("recovery_broker_s", [])))
    row("worker kill -> its leases redelivered", s_summary(s.get("recovery_worker_s", [])))
    row("broker RSS max", "%.1f MiB" % (s.get("rss_max_kb", 0) / 1024.0))
    row("workers verify deliveries in doubt", "yes" if s.get("verify") else "no")
    for g, (seen, cap) in sorted(s.get("groups", {}).items()):
        row("group %s: most restarts at once / cap" % g, "%d / %s" % (seen, cap or "none"))
    for name, verdict in sorted(s.get("invariants", {}).items()):
        row("invariant " + name, verdict)
    return 0
