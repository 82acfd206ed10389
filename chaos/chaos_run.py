"""The harness of mandrill-chaos: starts a broker, workers and publishers as
separate processes, injects the faults of a seeded plan, records the
history, settles the run and hands the history to the checker.

Contract:
- Every process it starts is a child it knows by PID; it kills and reaps
  exactly those (SIGCONT first, so a stopped one can die), on a normal end,
  on SIGINT/SIGTERM/SIGHUP and on --timeout; a child also gets SIGKILL
  from the kernel if the harness itself dies (PR_SET_PDEATHSIG). Network namespaces, veth links, qdiscs
  and the tmpfs it made are removed again; the history directory stays.
- Ports are free ports of 127.0.0.1 found by binding port 0. With --hosts N
  the broker binds 0.0.0.0 (--insecure) and each host i is a network
  namespace with a veth pair 10.X.i.1 (root side) - 10.X.i.2 (X a /16 no
  address of the machine is in, so two runs at once do not collide); workers and
  publishers are spread over the hosts round robin. Without root (or
  without `ip netns`) --hosts exits 77 (skip) at once.
- disk_full needs a tmpfs under the data dir, so root; without root the
  kind is dropped from the plan and the run says so.
- slow_disk preloads chaos/chaos_slowdisk.c's library into the broker
  (LD_PRELOAD, from --bin-dir or MANDRILL_CHAOS_SLOWDISK) and writes the
  delay into its control file (slowdisk.ms in the history directory) for
  the fault's hold; without the library the kind is dropped and the run
  says so.
- Failure: a process that cannot be started again ends the run with a
  message and exit 1 after cleaning up; the checker's verdict is the exit
  code otherwise (0 / 1).
Cost: a few threads (event feed, RSS sampler); one STATS round trip per
poll while settling.
"""
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import zmq

import chaos_check
import chaos_plan

HERE = os.path.dirname(os.path.abspath(__file__))



def s_log(msg):
    print("[chaos] %s" % msg, flush=True)


def s_free_ports(n):
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def s_program(bin_dir, env_name, rel, mode=os.X_OK):
    given = os.environ.get(env_name)
    path = given if given else os.path.join(bin_dir, rel)
    if not os.access(path, mode):
        raise RuntimeError("%s not found (set %s or --bin-dir)" % (path, env_name))
    return path


SLOWDISK_LIB = "chaos/libmandrill_chaos_slowdisk.so"


def s_slowdisk_env(lib, ctl):
    """The broker's environment for slow_disk: the library preloaded, its
    control file named. A sanitizer build must accept a preloaded library
    ahead of its runtime."""
    env = dict(os.environ)
    env["LD_PRELOAD"] = " ".join(x for x in (env.get("LD_PRELOAD", ""), os.path.abspath(lib)) if x)
    env["MANDRILL_CHAOS_SLOWDISK_CTL"] = ctl
    asan = env.get("ASAN_OPTIONS", "")
    env["ASAN_OPTIONS"] = (asan + ":" if asan else "") + "verify_asan_link_order=0"
    return env


def s_write_atomic(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def s_die_with_parent():
    """Child side of fork: SIGKILL when the harness dies, even by kill -9,
    so that no process of a run outlives it (Linux prctl PR_SET_PDEATHSIG)."""
    try:
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


class Proc:
    """One child process, known by PID; started again with the same argv."""

    def __init__(self, name, argv, log_path, env=None):
        self.name, self.argv, self.log_path = name, argv, log_path
        self.env = env                  # None: the harness's environment
        self.popen = None
        self.stopped = False
        self.down = False           # killed on purpose, not to be restarted by the watch
        self.starts = 0

    def start(self):
        log = open(self.log_path, "ab")
        self.popen = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, preexec_fn=s_die_with_parent,
                                      env=self.env)
        log.close()
        self.starts += 1
        self.stopped = self.down = False

    @property
    def pid(self):
        return self.popen.pid if self.popen else None

    def alive(self):
        return self.popen is not None and self.popen.poll() is None

    def signal(self, sig):
        if self.alive():
            try:
                os.kill(self.popen.pid, sig)
            except ProcessLookupError:
                pass

    def kill9(self):
        if self.popen is None:
            return
        self.signal(signal.SIGCONT)
        self.signal(signal.SIGKILL)
        try:
            self.popen.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        self.stopped = False

    def term(self, grace):
        """SIGTERM, then SIGKILL after grace seconds; returns the exit code."""
        if self.popen is None:
            return None
        self.signal(signal.SIGCONT)
        self.signal(signal.SIGTERM)
        try:
            return self.popen.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.kill9()
            return self.popen.returncode


class Recorder(threading.Thread):
    """Appends every event of the feed to events.jsonl with its arrival
    time. The feed is best-effort (the broker's PUB drops at its
    high-water mark, and events while the SUB reconnects are missed)."""

    def __init__(self, ctx, endpoint, path):
        super().__init__(daemon=True)
        self.sock = ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.RCVHWM, 0)
        self.sock.setsockopt(zmq.RECONNECT_IVL, 100)
        self.sock.setsockopt(zmq.SUBSCRIBE, b"")
        self.sock.connect(endpoint)
        self.file = open(path, "a", encoding="utf-8")
        self.done = threading.Event()
        self.count = 0

    def run(self):
        while not self.done.is_set():
            if not self.sock.poll(100):
                continue
            frames = self.sock.recv_multipart()
            if len(frames) != 2:
                continue
            try:
                body = json.loads(frames[1])
            except ValueError:
                continue
            self.file.write(json.dumps({"t": time.time_ns(), "name": frames[0].decode(errors="replace"),
                                        "body": body}, separators=(",", ":")) + "\n")
            self.count += 1
        self.file.close()
        self.sock.close()


class RssSampler(threading.Thread):
    """Samples the broker's VmRSS from /proc/PID/status every 100 ms."""

    def __init__(self, broker, path):
        super().__init__(daemon=True)
        self.broker, self.file = broker, open(path, "a", encoding="utf-8")
        self.done = threading.Event()

    def run(self):
        while not self.done.wait(0.1):
            pid = self.broker.pid
            try:
                with open("/proc/%d/status" % pid) as f:
                    for line in f:
                        if line.startswith("VmRSS:"):
                            kb = int(line.split()[1])
                            self.file.write('{"t":%d,"pid":%d,"rss_kb":%d}\n' % (time.time_ns(), pid, kb))
                            break
            except (OSError, TypeError, ValueError):
                pass
        self.file.close()


def s_sh(argv, check=True):
    r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if check and r.returncode != 0:
        raise RuntimeError("%s: %s" % (" ".join(argv), r.stdout.strip()))
    return r.returncode


class Net:
    """Network namespaces: one per test host, each with a veth pair."""

    def __init__(self, hosts, tag):
        self.hosts, self.tag, self.made, self.links = hosts, tag, [], []
        self.net = s_free_subnet()

    def ns(self, i):
        return "mch%sh%d" % (self.tag, i)

    def link(self, i):
        return "mch%sr%d" % (self.tag, i)

    def addr(self, i, side):
        return "10.%d.%d.%d" % (self.net, i + 1, side)

    def setup(self):
        for i in range(self.hosts):
            ns, root, peer = self.ns(i), self.link(i), "mch%sn%d" % (self.tag, i)
            s_sh(["ip", "netns", "add", ns])
            self.made.append(ns)
            s_sh(["ip", "link", "add", root, "type", "veth", "peer", "name", peer])
            self.links.append(root)
            s_sh(["ip", "link", "set", peer, "netns", ns])
            s_sh(["ip", "addr", "add", self.addr(i, 1) + "/24", "dev", root])
            s_sh(["ip", "link", "set", root, "up"])
            s_sh(["ip", "netns", "exec", ns, "ip", "addr", "add", self.addr(i, 2) + "/24", "dev", peer])
            s_sh(["ip", "netns", "exec", ns, "ip", "link", "set", peer, "up"])
            s_sh(["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"])

    def wrap(self, i, argv):
        return ["ip", "netns", "exec", self.ns(i % self.hosts)] + argv

    def cleanup(self):
        for root in self.links:
            s_sh(["ip", "link", "del", root], check=False)
        for ns in self.made:
            s_sh(["ip", "netns", "del", ns], check=False)
        self.links, self.made = [], []


def s_free_subnet():
    """A second octet X (64..127) such that no address on this machine is in
    10.X.0.0/16, starting from one the pid picks: two runs at once then get
    hosts of their own instead of fighting over one set of addresses."""
    try:
        used = subprocess.run(["ip", "-o", "-4", "addr", "show"], capture_output=True,
                              text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        used = ""
    start = os.getpid() % 64
    for k in range(64):
        x = 64 + (start + k) % 64
        if " 10.%d." % x not in used:
            return x
    raise RuntimeError("no free 10.X.0.0/16 for the test hosts (64..127 all in use)")


def s_netns_possible():
    if os.geteuid() != 0 or shutil.which("ip") is None:
        return False
    name = "mchprobe%d" % os.getpid()
    if s_sh(["ip", "netns", "add", name], check=False) != 0:
        return False
    s_sh(["ip", "netns", "del", name], check=False)
    return True


def s_netem_possible():
    """tc netem needs the kernel's sch_netem; probed in a throwaway netns."""
    name = "mchnetem%d" % os.getpid()
    if s_sh(["ip", "netns", "add", name], check=False) != 0:
        return False
    ok = s_sh(["ip", "netns", "exec", name, "tc", "qdisc", "add", "dev", "lo", "root",
               "netem", "delay", "1ms"], check=False) == 0
    s_sh(["ip", "netns", "del", name], check=False)
    return ok


class Run:
    def __init__(self, args):
        self.a = args
        self.dir = args.out or tempfile.mkdtemp(prefix="mandrill-chaos-")
        os.makedirs(self.dir, exist_ok=True)
        self.data = os.path.join(self.dir, "data")
        os.makedirs(self.data, exist_ok=True)
        self.procs = []
        self.workers, self.pubs = [], []
        self.broker = None
        self.net = None
        self.tmpfs = False
        self.slowdisk_lib = self.slowdisk_ctl = None
        self.ctx = zmq.Context()
        self.faults = open(os.path.join(self.dir, "faults.jsonl"), "a", encoding="utf-8")
        self.threads = []
        self.stop_file = os.path.join(self.dir, "publishers.stop")

    # ---- recording --------------------------------------------------------
    def fault(self, kind, phase, **extra):
        rec = dict(t=time.time_ns(), kind=kind, phase=phase, **extra)
        self.faults.write(json.dumps(rec) + "\n")
        self.faults.flush()

    # ---- processes -------------------------------------------------------
    def setup(self):
        a = self.a
        bins = a.bin_dir
        self.progs = {
            "broker": s_program(bins, "MANDRILL_BROKER", "broker/mandrill-broker"),
            "worker": s_program(bins, "MANDRILL_WORKER", "worker/mandrill-worker"),
            "ctl": s_program(bins, "MANDRILL_CTL", "cli/mandrill-ctl"),
        }
        if "disk_full" in self.kinds:
            s_sh(["mount", "-t", "tmpfs", "-o", "size=%dm" % a.tmpfs_mb, "tmpfs", self.data])
            self.tmpfs = True
        fe, be, ev = s_free_ports(3)
        bind = "0.0.0.0" if a.hosts else "127.0.0.1"
        self.ep = {k: "tcp://127.0.0.1:%d" % p for k, p in (("fe", fe), ("be", be), ("ev", ev))}
        argv = [self.progs["broker"], "--frontend", "tcp://%s:%d" % (bind, fe),
                "--backend", "tcp://%s:%d" % (bind, be), "--events", "tcp://%s:%d" % (bind, ev),
                "--data-dir", self.data, "--durability", a.durability,
                "--ack-deadline", "%gs" % a.ack_deadline, "--heartbeat", "%gs" % a.heartbeat,
                "--max-attempts", str(a.max_attempts), "--backoff-base", "100ms",
                "--backoff-max", "1s", "--restart-timeout", "%gs" % a.restart_timeout]
        if a.group:
            argv += ["--policy", self.write_policy()]
        if a.hosts:
            argv.append("--insecure")
        env = None
        if "slow_disk" in self.kinds:
            self.slowdisk_ctl = os.path.join(self.dir, "slowdisk.ms")
            s_write_atomic(self.slowdisk_ctl, "0\n")
            env = s_slowdisk_env(self.slowdisk_lib, self.slowdisk_ctl)
        self.broker = Proc("broker", argv, os.path.join(self.dir, "broker.log"), env)
        self.procs.append(self.broker)
        if a.hosts:
            self.net = Net(a.hosts, "%d" % (os.getpid() % 100000))
            self.net.setup()
        hist = os.path.join(self.dir, "restarts.log")
        db = "sqlite:" + os.path.join(self.dir, "rows.db")
        for i in range(a.workers):
            name = "w%d" % i
            host_be = "tcp://%s:%d" % (self.net.addr(i % a.hosts, 1), be) if a.hosts else self.ep["be"]
            cmd = "sh %s %s %s {message_id} {hostname}%s" % (
                os.path.join(HERE, "chaos_restart.sh"), hist, name, " fast" if a.flood else "")
            argv = [self.progs["worker"], "--broker", host_be, "--name", name, "--db", db,
                    "--restart", "exec", "--restart-cmd", cmd, "--credit", str(a.credit),
                    "--extend-every", "1s", "--restart-timeout", "%gs" % a.restart_timeout,
                    "--grace", "5s"]
            if a.verify:
                argv += ["--verify-cmd", "sh %s %s {message_id}" % (
                    os.path.join(HERE, "chaos_verify.sh"), hist)]
            if a.hosts:
                argv = self.net.wrap(i, argv)
            p = Proc(name, argv, os.path.join(self.dir, "%s.log" % name))
            self.workers.append(p)
            self.procs.append(p)
        for i in range(a.publishers):
            host_fe = "tcp://%s:%d" % (self.net.addr(i % a.hosts, 1), fe) if a.hosts else self.ep["fe"]
            argv = [sys.executable, os.path.join(HERE, "chaos_publisher.py"), "--endpoint", host_fe,
                    "--log", os.path.join(self.dir, "pub-%d.jsonl" % i), "--stop-file", self.stop_file,
                    "--rate", str(a.rate), "--batch", str(a.batch),
                    "--host-pool", str(a.host_pool)]
            if a.hosts:
                argv = self.net.wrap(i, argv)
            p = Proc("p%d" % i, argv, os.path.join(self.dir, "p%d.log" % i))
            self.pubs.append(p)
            self.procs.append(p)

    def write_policy(self):
        """The --group specs as a policy file (docs/POLICY.md) in the history
        directory: coalescing off, so that every request is restarted on its
        own and the checker can count it; each group's restart_timeout the
        run's. Returns its path."""
        a = self.a
        lines = ["#   mandrill-chaos policy", "policy", "    coalesce = 0", "groups"]
        for name, glob_, cap in chaos_plan.parse_groups(a.group):
            lines += ["    %s" % name, '        match = "%s"' % glob_, "        max = %d" % cap,
                      "        restart_timeout = %dms" % int(a.restart_timeout * 1000)]
        path = os.path.join(self.dir, "policy.cfg")
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")
        return path

    def stats(self, timeout=1.0):
        """One STATS round trip on a fresh DEALER; None when no answer."""
        s = self.ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        try:
            s.connect(self.ep["fe"])
            s.send_multipart([b"MMP1", b"STATS", b"{}"])
            if s.poll(int(timeout * 1000)):
                f = s.recv_multipart()
                if len(f) == 3 and f[1] == b"STATS":
                    return json.loads(f[2])
            return None
        finally:
            s.close()

    def start_broker(self):
        self.broker.start()
        self.fault("broker_start", "note", pid=self.broker.pid)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if not self.broker.alive():
                raise RuntimeError("the broker exited with %s (see %s)"
                                   % (self.broker.popen.returncode, self.broker.log_path))
            if self.stats(0.5) is not None:
                return
        raise RuntimeError("the broker did not answer STATS within 30 s")

    # ---- faults ----------------------------------------------------------
    def s_wait(self, seconds):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            time.sleep(min(0.1, max(0.0, end - time.monotonic())))
            self.s_watch()

    def s_watch(self):
        """A worker or publisher that died by itself is started again (and
        said so): the run goes on, the log keeps why."""
        for p in self.workers + self.pubs:
            if p.popen is not None and not p.down and not p.alive() \
                    and not os.path.exists(self.stop_file):
                s_log("%s exited by itself (code %s), starting it again" % (p.name, p.popen.returncode))
                self.fault("exited", "note", name=p.name, code=p.popen.returncode)
                p.start()

    def inject(self, f):
        kind, hold, target = f["kind"], f["hold"], f["target"]
        s_log("fault %s target %d hold %.2fs" % (kind, target, hold))
        if kind == "kill_broker":
            self.fault(kind, "begin", pid=self.broker.pid)
            self.broker.kill9()
            self.s_wait(hold)
            self.start_broker()
            self.fault(kind, "end")
        elif kind in ("kill_worker", "kill_publisher"):
            p = (self.workers if kind == "kill_worker" else self.pubs)[target]
            self.fault(kind, "begin", name=p.name, pid=p.pid)
            p.down = True
            p.kill9()
            self.s_wait(hold)
            p.start()
            self.fault(kind, "end", name=p.name)
        elif kind in ("stop_worker_hb", "stop_worker_deadline", "stop_broker"):
            p = self.broker if kind == "stop_broker" else self.workers[target]
            self.fault(kind, "begin", name=p.name, pid=p.pid)
            p.signal(signal.SIGSTOP)
            p.stopped = True
            self.s_wait(hold)
            p.signal(signal.SIGCONT)
            p.stopped = False
            self.fault(kind, "end", name=p.name)
        elif kind == "cut_host":
            link = self.net.link(target)
            self.fault(kind, "begin", host=target)
            s_sh(["ip", "link", "set", link, "down"])
            self.s_wait(hold)
            s_sh(["ip", "link", "set", link, "up"])
            self.fault(kind, "end", host=target)
        elif kind == "netem_host":
            link = self.net.link(target)
            self.fault(kind, "begin", host=target)
            s_sh(["tc", "qdisc", "add", "dev", link, "root", "netem", "loss", "30%", "delay", "100ms"])
            self.s_wait(hold)
            s_sh(["tc", "qdisc", "del", "dev", link, "root"], check=False)
            self.fault(kind, "end", host=target)
        elif kind == "disk_full":
            fill = os.path.join(self.data, "chaos.fill")
            self.fault(kind, "begin")
            subprocess.run(["dd", "if=/dev/zero", "of=" + fill, "bs=1M"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.s_wait(hold)
            os.unlink(fill)
            self.fault(kind, "end")
        elif kind == "slow_disk":
            self.fault(kind, "begin", delay_ms=f["delay_ms"])
            s_write_atomic(self.slowdisk_ctl, "%d\n" % f["delay_ms"])
            self.s_wait(hold)
            s_write_atomic(self.slowdisk_ctl, "0\n")
            self.fault(kind, "end")

    # ---- the run ---------------------------------------------------------
    def settle(self):
        """Stops the publishers' new work, waits for their retries, then for
        the broker to hold nothing; True when it settled in time."""
        open(self.stop_file, "w").close()
        deadline = time.monotonic() + self.a.settle_timeout
        for p in self.pubs:
            while p.alive() and time.monotonic() < deadline:
                time.sleep(0.1)
            if p.alive():
                s_log("%s did not finish its retries; stopping it" % p.name)
                p.term(2)
        while time.monotonic() < deadline:
            st = self.stats(1.0)
            if st and all(st.get(k, 0) == 0 for k in ("ready", "delayed", "in_flight", "held")):
                return True
            time.sleep(0.2)
        return False

    def collect(self):
        for name, argv in (("stats.json", ["stats", "--json"]),
                           ("deadletters.json", ["deadletters", "--json"])):
            r = subprocess.run([self.progs["ctl"], "--broker", self.ep["fe"], "--timeout", "5s"] + argv,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            if r.returncode == 0:
                with open(os.path.join(self.dir, name), "w") as f:
                    f.write(r.stdout)
            else:
                s_log("mandrill-ctl %s failed: %s" % (argv[0], r.stderr.strip()))
        for w in self.workers:
            w.term(10)
        # Restart scripts of killed workers may still be finishing
        hist = os.path.join(self.dir, "restarts.log")
        last, quiet = -1, time.monotonic()
        while time.monotonic() - quiet < 1.0:
            size = os.path.getsize(hist) if os.path.exists(hist) else 0
            if size != last:
                last, quiet = size, time.monotonic()
            time.sleep(0.1)
        import sqlite3
        db = os.path.join(self.dir, "rows.db")
        with open(os.path.join(self.dir, "rows.jsonl"), "w") as out:
            if os.path.exists(db):
                con = sqlite3.connect(db)
                try:
                    for mid, worker, attempt, saves in con.execute(
                            "SELECT message_id, worker, attempt, saves FROM restarts"):
                        out.write(json.dumps({"message_id": mid, "worker": worker,
                                              "attempt": attempt, "saves": saves}) + "\n")
                finally:
                    con.close()

    def cleanup(self):
        for p in self.procs:
            if p.alive():
                p.kill9()
        for t in self.threads:
            t.done.set()
        for t in self.threads:
            t.join(2)
        if self.net:
            self.net.cleanup()
        if self.tmpfs:
            # Keep the journal for reading: copy it out before the unmount
            shutil.copytree(self.data, self.data + ".saved", dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("chaos.fill"))
            s_sh(["umount", "-l", self.data], check=False)
            self.tmpfs = False
        self.ctx.destroy(linger=0)

    def main(self):
        a = self.a
        self.kinds = list(a.faults)
        if "disk_full" in self.kinds and os.geteuid() != 0:
            s_log("disk_full needs root (a tmpfs under the journal): left out of this run")
            self.kinds.remove("disk_full")
        if a.hosts and "netem_host" in self.kinds and not s_netem_possible():
            s_log("tc netem is not available in this kernel (sch_netem): netem_host left out")
            self.kinds.remove("netem_host")
        if "slow_disk" in self.kinds:
            try:
                self.slowdisk_lib = s_program(a.bin_dir, "MANDRILL_CHAOS_SLOWDISK", SLOWDISK_LIB,
                                              os.R_OK)
            except RuntimeError as e:
                s_log("slow_disk needs its preload library (%s): left out of this run" % e)
                self.kinds.remove("slow_disk")
        if not a.hosts:
            for k in chaos_plan.HOST_KINDS:
                if k in self.kinds:
                    self.kinds.remove(k)
        faults = chaos_plan.plan(a.seed, a.duration, self.kinds, a.workers, a.publishers,
                                 a.hosts, a.heartbeat, a.ack_deadline) if self.kinds else []
        meta = {"seed": a.seed, "durability": a.durability, "duration_s": a.duration,
                "workers": a.workers, "publishers": a.publishers, "hosts": a.hosts,
                "ack_deadline_s": a.ack_deadline, "heartbeat_s": a.heartbeat,
                "kinds": self.kinds, "rss_limit_mb": a.rss_limit_mb, "flood": a.flood,
                "start_ns": time.time_ns(), "plan": faults, "host_pool": a.host_pool,
                "groups": [list(g) for g in chaos_plan.parse_groups(a.group)], "verify": a.verify}
        with open(os.path.join(self.dir, "meta.json"), "w") as f:
            json.dump(meta, f, indent=1)
        s_log("history %s" % self.dir)
        s_log("seed %d (--seed %d replays this plan), durability %s, %d workers, %d publishers%s"
              % (a.seed, a.seed, a.durability, a.workers, a.publishers,
                 ", %d hosts" % a.hosts if a.hosts else ""))
        for f in faults:
            s_log("plan  %7.2fs %-22s target %d hold %.2fs%s" % (
                f["at"], f["kind"], f["target"], f["hold"],
                " delay %d ms" % f["delay_ms"] if "delay_ms" in f else ""))
        self.setup()
        self.start_broker()
        rec = Recorder(self.ctx, self.ep["ev"], os.path.join(self.dir, "events.jsonl"))
        rss = RssSampler(self.broker, os.path.join(self.dir, "rss.jsonl"))
        self.threads = [rec, rss]
        rec.start()
        rss.start()
        if a.flood:
            # A subscriber that never reads: the broker must not grow for it
            sub = Proc("sleepy-sub", [sys.executable, "-c",
                                      "import zmq,time,sys; s=zmq.Context().socket(zmq.SUB); "
                                      "s.setsockopt(zmq.RCVBUF, 4096); s.setsockopt(zmq.RCVHWM, 1); "
                                      "s.setsockopt(zmq.SUBSCRIBE, b''); s.connect(sys.argv[1]); "
                                      "time.sleep(86400)", self.ep["ev"]],
                       os.path.join(self.dir, "sleepy-sub.log"))
            sub.start()
            self.procs.append(sub)
        for p in self.workers + self.pubs:
            p.start()
        t0 = time.monotonic()
        for f in faults:
            self.s_wait(max(0.0, f["at"] - (time.monotonic() - t0)))
            self.inject(f)
        self.s_wait(max(0.0, a.duration - (time.monotonic() - t0)))
        s_log("plan done after %.1fs; settling" % (time.monotonic() - t0))
        if not self.settle():
            s_log("the broker did not settle within %gs" % a.settle_timeout)
        self.collect()
        self.broker.term(10)
        s_log("%d events recorded" % rec.count)


def run(args):
    """Runs one plan; returns the exit code (0 pass, 1 violation or failure,
    77 skipped)."""
    if args.hosts and not s_netns_possible():
        print("mandrill-chaos: --hosts needs root and `ip netns` (network namespaces); "
              "cannot make them here: skipped", file=sys.stderr)
        return 77
    r = Run(args)

    def s_stop(signum, _frame):
        raise KeyboardInterrupt("signal %d" % signum)

    old = {s: signal.signal(s, s_stop) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP,
                                             signal.SIGALRM)}
    if args.timeout:
        signal.alarm(int(args.timeout))
    try:
        r.main()
    except KeyboardInterrupt as e:
        s_log("interrupted (%s): cleaning up; history kept in %s" % (e or "Ctrl-C", r.dir))
        r.cleanup()
        return 1
    except (RuntimeError, OSError) as e:
        s_log("failed: %s; history kept in %s" % (e, r.dir))
        r.cleanup()
        return 1
    finally:
        signal.alarm(0)
        for s, h in old.items():
            signal.signal(s, h)
    r.cleanup()
    return chaos_check.check(r.dir, known_open=args.known_open, rss_limit_mb=args.rss_limit_mb)
