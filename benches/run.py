#!/usr/bin/env python3
"""benches/run.py: tether's benchmark suite against its peers (what `./dev bench` runs).

    benches/run.py [--build DIR] [--quick] [--json FILE] [--rounds N] [--seconds S]
                   [--areas context,runtime,echo,http,multiloop] [--servers a,b,...]
                   [--http-cases CONNSxDEPTH,...]

Areas, each printed as one table with tether and every peer side by side:
  context    benches/context_bench --go (Go's context benchmark next to tether's)
  runtime    benches/runtime_bench (Go's goroutines next to tether's tasks)
  echo       examples/echo_server against raw io_uring, raw epoll, Boost.Asio on io_uring and
             on epoll, Go and Tokio, under benches/peers/c/echo_load: 64 connections ping-ponging
             64 B and 1 KiB, and the RSS of 10,000 idle connections
  http       benches/http_server (with and without middleware) against raw io_uring, raw epoll,
             Boost.Asio (both backends), Go net/http, Tokio and nginx under wrk: 64 and 1,000
             connections, with and without pipelining (16 requests per write)
  multiloop  benches/multiloop_bench, if it is built; then the HTTP server on 2 loops
             (benches/http_server --loops 2) against nginx with 2 workers and Go net/http with
             GOMAXPROCS=2 under wrk -t2, none of them pinned: servers and load client share
             the machine's two cores

Method: each server runs pinned to CPU 0 (as `taskset -c 0` would) in its own process group,
the load client pinned to CPU 1. Every case runs A B A B...: round after round, every server
once per round (each round starts one server later, so no server always runs first), so
that the drift of a shared machine hits them alike; tables show medians and the spread
(min..max). A ratio between two servers (the tables' "tether ÷ it" columns and the targets)
is the median over the rounds of the ratio within a round, where the two ran close together
in time, not the ratio of the medians. Server CPU is utime+stime of the server's process
group (summed from /proc/PID/task/*/schedstat, in nanoseconds; /proc/PID/stat's clock ticks
where schedstat is missing), sampled around the measured load, divided by the requests
served; the load client's CPU per request is its utime+stime over the run, likewise (with
the client at its core's ceiling, what it spends per response decides the rate). "Other
load" is how much of the run other processes kept the two pinned CPUs busy
(each CPU's busy time in /proc/stat, less the server's or the client's own CPU time): on a
shared machine a round where it is high measured the neighbours too (a server that waits
for its core answers late, and the client idles), so the tables count such rounds
(contended: over 10% on either CPU) and the targets add the ratio over the quiet rounds
alone. The machine (CPU, cores, kernel, load) and the date head the report.

--json FILE writes every result (medians and each round's sample) as JSON, and FILE with
.svg instead of .json: a chart of throughput and p99 latency per server. Without --json
they go to DIR/bench-results.json and .svg. --quick runs everything in under two minutes
(one short round). A peer that is not built or installed is skipped with a note.
"""

import argparse
import datetime
import json
import os
import platform
import re
import resource
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEERS = os.path.join(ROOT, "benches", "peers")


def say(text=""):
    print(text, flush=True)


# ---- the machine ------------------------------------------------------------------------


def machine_info():
    model = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        load = " ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:
        load = "unknown"
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "os": platform.platform(),
        "loadavg_at_start": load,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


# ---- processes --------------------------------------------------------------------------


def cpu_sets():
    """The server's and the client's CPU (None: do not pin)."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) >= 2:
        return cpus[0], cpus[1]
    return None, None


def preexec(cpu):
    def run():
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass

    return run


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def accepts(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def group_pids(pgid):
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            if os.getpgid(int(name)) == pgid:
                pids.append(int(name))
        except OSError:
            pass
    return pids


def process_cpu_seconds(pid):
    """utime + stime of `pid` (every thread), in seconds: from the threads' schedstat
    (nanoseconds) when the kernel has it, else from /proc/PID/stat (clock ticks, 10 ms)."""
    try:
        total = 0
        for tid in os.listdir(f"/proc/{pid}/task"):
            total += int(open(f"/proc/{pid}/task/{tid}/schedstat").read().split()[0])
        return total / 1e9
    except (OSError, ValueError, IndexError):
        pass
    try:
        stat = open(f"/proc/{pid}/stat").read()
    except OSError:
        return 0
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def group_cpu_seconds(pgid):
    """CPU time of every process of the group (nginx's master and worker), in seconds."""
    return sum(process_cpu_seconds(pid) for pid in group_pids(pgid))


def group_rss_kib(pgid):
    total = 0
    for pid in group_pids(pgid):
        try:
            for line in open(f"/proc/{pid}/status"):
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


class Server:
    """One running server process, in its own process group, pinned to the server CPU."""

    def __init__(self, argv, env, port, cpu, prints_port):
        self.proc = subprocess.Popen(
            argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, start_new_session=True, preexec_fn=preexec(cpu))
        self.port = port
        deadline = time.monotonic() + 15
        if prints_port:
            self.port = self._read_port(deadline)
        while self.port and time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            if accepts(self.port):
                return
            time.sleep(0.02)
        self.stop()
        raise RuntimeError("did not start")

    def _read_port(self, deadline):
        line = b""
        fd = self.proc.stdout.fileno()
        while not line.endswith(b"\n") and time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.2)
            if ready:
                chunk = os.read(fd, 1)
                if not chunk:
                    break
                line += chunk
        m = re.search(rb"listening on .*:(\d+)", line)
        return int(m.group(1)) if m else 0

    @property
    def pgid(self):
        return self.proc.pid

    def cpu(self):
        return group_cpu_seconds(self.pgid)

    def rss_kib(self):
        return group_rss_kib(self.pgid)

    def stop(self):
        if self.proc.poll() is None:
            try:
                os.killpg(self.pgid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(self.pgid, signal.SIGKILL)
                self.proc.wait()
        # nginx's worker, a Go program's children: nothing of the group may outlive the run.
        for pid in group_pids(self.pgid):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        if self.proc.stdout:
            self.proc.stdout.close()


def run_client(argv, cpu, timeout):
    r = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       timeout=timeout, preexec_fn=preexec(cpu))
    return r.stdout + r.stderr


# ---- the servers ------------------------------------------------------------------------


class Spec:
    def __init__(self, name, argv, env=None, prints_port=False, setup=None):
        self.name = name
        self.argv = argv  # "{PORT}" and "{PREFIX}" are replaced
        self.env = env or {}
        self.prints_port = prints_port
        self.setup = setup  # returns a scratch directory for {PREFIX}, or None

    def start(self, cpu):
        port = 0 if self.prints_port else free_port()
        prefix = self.setup(port) if self.setup else ""
        argv = [a.replace("{PORT}", str(port)).replace("{PREFIX}", prefix) for a in self.argv]
        env = dict(os.environ)
        env.update(self.env)
        try:
            return Server(argv, env, port, cpu, self.prints_port)
        finally:
            if prefix:
                # nginx has opened what it needs; the prefix goes when the run ends.
                TEMP_DIRS.append(prefix)


TEMP_DIRS = []


def exe(build, *parts):
    path = os.path.join(build, *parts)
    return path if os.path.isfile(path) and os.access(path, os.X_OK) else None


def build_go(build, notes):
    go = shutil.which("go")
    if not go:
        notes.append("go: not installed (apt install golang-go): the Go peers are skipped")
        return None
    out = os.path.join(build, "benches", "go-servers")
    os.makedirs(out, exist_ok=True)
    binary = os.path.join(out, "servers")
    env = {k: v for k, v in os.environ.items() if not k.startswith("GO")}
    env.update(GO111MODULE="off", GOFLAGS="", GOCACHE=os.path.join(out, "cache"),
               GOPATH=os.path.join(out, "gopath"), GOTOOLCHAIN="local", CGO_ENABLED="0")
    r = subprocess.run([go, "build", "-o", binary, "."], cwd=os.path.join(PEERS, "go", "servers"),
                       env=env, capture_output=True, text=True)
    if r.returncode != 0:
        notes.append(f"go: `go build` failed, the Go peers are skipped: {r.stderr.strip()}")
        return None
    return binary


TOKIO_REGISTRY = "/usr/share/cargo/registry"
# The Tokio peer's binary once built (main), for find_servers.
TOKIO_BINARY = {}


def build_tokio(build, notes):
    """Builds benches/peers/tokio offline against Debian's packaged crates; returns the
    binary, or None (with a note) when cargo or librust-tokio-dev is missing."""
    cargo = "/usr/bin/cargo" if os.access("/usr/bin/cargo", os.X_OK) else shutil.which("cargo")
    if not cargo or not os.path.isdir(os.path.join(TOKIO_REGISTRY)) or not any(
            d.startswith("tokio-1.") for d in os.listdir(TOKIO_REGISTRY)):
        notes.append("tokio: cargo or librust-tokio-dev is not installed "
                     "(apt install cargo librust-tokio-dev): the Tokio peer is skipped")
        return None
    out = os.path.join(build, "benches", "tokio")
    src = os.path.join(out, "src-copy")  # cargo writes Cargo.lock next to Cargo.toml
    shutil.rmtree(src, ignore_errors=True)
    shutil.copytree(os.path.join(PEERS, "tokio"), src)
    home = os.path.join(out, "cargo-home")
    os.makedirs(home, exist_ok=True)
    with open(os.path.join(home, "config.toml"), "w") as f:
        f.write('[source.crates-io]\nreplace-with = "debian"\n'
                f'[source.debian]\ndirectory = "{TOKIO_REGISTRY}"\n'
                "[net]\noffline = true\n")
    env = dict(os.environ, CARGO_HOME=home)
    r = subprocess.run([cargo, "build", "--release", "--offline", "--quiet",
                        "--target-dir", os.path.join(out, "target")],
                       cwd=src, env=env, capture_output=True, text=True)
    binary = os.path.join(out, "target", "release", "tether-bench-tokio")
    if r.returncode != 0 or not os.access(binary, os.X_OK):
        notes.append(f"tokio: `cargo build` failed, the Tokio peer is skipped: "
                     f"{r.stderr.strip()[-400:]}")
        return None
    return binary


def nginx_setup(port, workers=1):
    prefix = tempfile.mkdtemp(prefix="tether-bench-nginx-")
    conf = open(os.path.join(PEERS, "nginx", "nginx.conf")).read()
    conf = conf.replace("@PORT@", str(port)).replace("@PREFIX@", prefix)
    conf = conf.replace("@WORKERS@", str(workers))
    with open(os.path.join(prefix, "nginx.conf"), "w") as f:
        f.write(conf)
    return prefix


def nginx_spec(notes, workers=1):
    """nginx serving the canned response with `workers` worker processes, or None (noted)."""
    nginx = shutil.which("nginx") or exe("/usr/sbin", "nginx")
    if not nginx:
        notes.append("nginx: not installed (apt install nginx-light): skipped")
        return None
    return Spec("nginx", [nginx, "-p", "{PREFIX}", "-e", "{PREFIX}/error.log",
                          "-c", "{PREFIX}/nginx.conf", "-g", "daemon off;"],
                setup=lambda port: nginx_setup(port, workers))


def go_spec(go_binary, mode, procs=1):
    """The Go server of `mode` with GOMAXPROCS=`procs`, or None without a Go binary."""
    if not go_binary:
        return None
    return Spec("go", [go_binary, "-mode", mode, "-addr", "127.0.0.1:{PORT}"],
                env={"GOMAXPROCS": str(procs)})


def tether_http_specs(build, notes, loops=None, middleware=True):
    """benches/http_server (on `loops` loops if given), and with middleware if asked."""
    tether = exe(build, "benches", "http_server")
    if not tether:
        notes.append("tether: benches/http_server is not built")
        return []
    argv = [tether, "--port", "0"] + (["--loops", str(loops)] if loops else [])
    specs = [Spec("tether", argv, prints_port=True)]
    if middleware:
        specs.append(Spec("tether+mw", argv + ["--middleware"], prints_port=True))
    return specs


def find_servers(build, mode, notes, go_binary, tokio_binary=None):
    """The servers of `mode` ("echo" or "http"), tether's first."""
    specs = []
    if mode == "echo":
        tether = exe(build, "examples", "echo_server")
        if tether:
            specs.append(Spec("tether", [tether, "--port", "0"], prints_port=True))
        else:
            notes.append("tether: examples/echo_server is not built")
    else:
        specs += tether_http_specs(build, notes)
    for name, binary, hint in [
            ("raw-uring", "raw_uring", "needs a C compiler and liburing-dev"),
            ("raw-epoll", "raw_epoll", "needs a C compiler"),
            ("asio-uring", "asio_uring", "apt install libboost1.81-dev, then ./dev bench"),
            ("asio-epoll", "asio_epoll", "apt install libboost1.81-dev, then ./dev bench")]:
        path = exe(build, "benches", binary)
        if path:
            specs.append(Spec(name, [path, mode, "{PORT}"]))
        else:
            notes.append(f"{name}: benches/{binary} is not built ({hint})")
    specs.append(go_spec(go_binary, mode))
    tokio_binary = tokio_binary or TOKIO_BINARY.get("path")
    if tokio_binary:
        specs.append(Spec("tokio", [tokio_binary, mode, "{PORT}"]))
    if mode == "http":
        specs.append(nginx_spec(notes))
    return [s for s in specs if s]


def find_multiloop_http_servers(build, notes, go_binary, loops=2):
    """The HTTP servers on `loops` cores: tether --loops N, nginx with N workers, Go with
    GOMAXPROCS=N."""
    specs = tether_http_specs(build, notes, loops, middleware=False)
    specs += [nginx_spec(notes, loops), go_spec(go_binary, "http", loops)]
    return [s for s in specs if s]


# ---- statistics and tables --------------------------------------------------------------


def summarize(samples):
    """Medians of each field over the rounds, with min and max of the throughput."""
    out = {"rounds": len(samples), "samples": samples}
    for key in ("rps", "p50_us", "p99_us", "cpu_pct", "cpu_us_per_req", "client_cpu_us_per_req",
                "other_server_core_pct", "other_client_core_pct"):
        values = [s[key] for s in samples if s.get(key) is not None]
        out[key] = statistics.median(values) if values else None
    rps = [s["rps"] for s in samples]
    out["rps_min"], out["rps_max"] = (min(rps), max(rps)) if rps else (None, None)
    out["errors"] = sum(s.get("errors", 0) for s in samples)
    return out


def fmt_rate(v):
    if v is None:
        return "-"
    if v >= 1e6:
        return f"{v / 1e6:.2f}M"
    if v >= 1e3:
        return f"{v / 1e3:.1f}k"
    return f"{v:.0f}"


def fmt_num(v, digits=0):
    return "-" if v is None else f"{v:.{digits}f}"


def ratio(a, b):
    return None if not a or not b else a / b


def rotated(servers, rnd):
    """The servers in round `rnd`'s order: each round starts one server later."""
    k = rnd % len(servers) if servers else 0
    return servers[k:] + servers[:k]


def server_rounds(servers, rounds, server_cpu, name, notes):
    """Yields (round, spec, started server) for each of `rounds` rounds and each server in
    its turn (rotated); the server is stopped when the caller moves on. A server that fails
    to start gets a note and is skipped for that round."""
    for rnd in range(rounds):
        for spec in rotated(servers, rnd):
            try:
                srv = spec.start(server_cpu)
            except (RuntimeError, OSError) as e:
                notes.append(f"{spec.name}: {e} ({name}, round {rnd + 1})")
                continue
            try:
                yield rnd, spec, srv
            finally:
                srv.stop()


def cpu_busy_seconds(cpus):
    """Busy time of each CPU in `cpus` (/proc/stat: everything but idle and iowait, steal
    included), in seconds; None where it can't be read."""
    busy = {}
    try:
        for line in open("/proc/stat"):
            f = line.split()
            if f[0].startswith("cpu") and f[0][3:].isdigit() and int(f[0][3:]) in cpus:
                ticks = [int(x) for x in f[1:9]]
                busy[int(f[0][3:])] = (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf(
                    "SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        pass
    return busy


def children_cpu_seconds():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def wait_for_quiet(cpus, limit):
    """Waits up to `limit` seconds for half a second in which every CPU in `cpus` was busy
    under CONTENDED_PCT% of the time (the server under test idles meanwhile); returns the
    seconds waited."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        b0 = cpu_busy_seconds(cpus)
        time.sleep(0.5)
        b1 = cpu_busy_seconds(cpus)
        if len(b0) == len(b1) == len(cpus) and all(
                b1[c] - b0[c] <= 0.5 * CONTENDED_PCT / 100 for c in cpus):
            break
    return time.monotonic() - t0


def measured(srv, server_cpu, client_cpu, warmup, run, quiet=0):
    """Runs the load client's `warmup` (argv, timeout) if any, then its measured `run`
    (argv, timeout); returns the run's output, its wall time, the server's CPU seconds
    meanwhile, how busy other processes kept the server's and the client's CPUs (a
    fraction of the wall time each, None where they are not pinned): a shared machine's
    other work on those cores takes time from the server or the client, and a round where
    it did measures that, not the server), and the client's CPU seconds."""
    if warmup:
        run_client(warmup[0], client_cpu, warmup[1])
    pinned = server_cpu is not None and client_cpu is not None
    if pinned and quiet > 0:
        wait_for_quiet({server_cpu, client_cpu}, quiet)
    busy0 = cpu_busy_seconds({server_cpu, client_cpu}) if pinned else {}
    cpu0 = srv.cpu()
    child0 = children_cpu_seconds()
    t0 = time.monotonic()
    out = run_client(run[0], client_cpu, run[1])
    wall = time.monotonic() - t0
    cpu = srv.cpu() - cpu0
    client = children_cpu_seconds() - child0
    busy1 = cpu_busy_seconds({server_cpu, client_cpu}) if pinned else {}
    other = (None, None)
    if pinned and len(busy0) == len(busy1) == 2 and wall > 0:
        # Tick-granular, so clamped at 0; the kernel's own work for the pair (softirqs in
        # ksoftirqd, kworkers) counts as other load too, a few percent at most.
        other = tuple(max(0.0, (busy1[c] - busy0[c] - own) / wall)
                      for c, own in ((server_cpu, cpu), (client_cpu, client)))
    return out, wall, cpu, other, client


def sample(rnd, rps, p50_us, p99_us, errors, requests, wall, cpu, other=(None, None),
           client=None):
    """One round's figures for one server: `requests` served in `wall` seconds using `cpu`
    seconds of the server's CPU and `client` seconds of the load client's, while other
    processes kept the server's and the client's CPUs busy for the fractions `other` of the
    time."""
    return {"round": rnd, "rps": rps, "p50_us": p50_us, "p99_us": p99_us, "errors": errors,
            "cpu_pct": 100 * cpu / wall,
            "cpu_us_per_req": 1e6 * cpu / requests if requests else None,
            # With the client at its core's ceiling, what it spends per response decides the
            # rate: a server whose responses cost the client more is slower there.
            "client_cpu_us_per_req": 1e6 * client / requests if requests and client else None,
            "other_server_core_pct": None if other[0] is None else 100 * other[0],
            "other_client_core_pct": None if other[1] is None else 100 * other[1]}


# A round in which other processes kept the server's or the client's CPU busy for more than
# this share of the run (percent) is contended: it measured the machine's other work too.
CONTENDED_PCT = 10


def contended(sample):
    return any((sample.get(k) or 0) > CONTENDED_PCT
               for k in ("other_server_core_pct", "other_client_core_pct"))


def paired(a, b, key, quiet_only=False):
    """a's `key` ÷ b's: the median of the ratios of the rounds both ran (a shared machine
    drifts between rounds more than within one); the ratio of the medians where no round
    has both. `quiet_only`: only the rounds where neither run was contended, None if none
    was."""
    if not a or not b:
        return None
    theirs = {s.get("round"): s for s in b.get("samples", [])}
    rs = []
    for s in a.get("samples", []):
        t = theirs.get(s.get("round"))
        if not t or not s.get(key) or not t.get(key):
            continue
        if quiet_only and (contended(s) or contended(t)):
            continue
        rs.append(s[key] / t[key])
    if quiet_only:
        return statistics.median(rs) if rs else None
    return statistics.median(rs) if rs else ratio(a.get(key), b.get(key))


def quiet_rounds(a, b):
    """How many rounds both `a` and `b` ran uncontended, and how many both ran."""
    theirs = {s.get("round"): s for s in (b or {}).get("samples", [])}
    both = [(s, theirs[s.get("round")]) for s in (a or {}).get("samples", [])
            if s.get("round") in theirs]
    return sum(1 for s, t in both if not contended(s) and not contended(t)), len(both)


def quiet_note(a, b, key):
    """What the ratio of `key` is over the uncontended rounds, when some were contended."""
    quiet, both = quiet_rounds(a, b)
    if quiet == both:
        return ""
    q = paired(a, b, key, quiet_only=True)
    return (f" [{both - quiet} of {both} rounds contended (other load > {CONTENDED_PCT}% on "
            f"a pinned core); the {quiet} quiet: {fmt_num(q, 2)}]")


def add_ratios(results):
    """Each row's `vs_tether`: tether's throughput ÷ the row's, and tether's CPU per request
    ÷ the row's (under 1: tether is slower / uses less CPU), paired by round."""
    base = results.get("tether")
    for r in results.values():
        r["tether_rps_ratio"] = paired(base, r, "rps")
        r["tether_cpu_ratio"] = paired(base, r, "cpu_us_per_req")


def print_summary(cases, unit, extra=None):
    """One row per server, one column per case: throughput and CPU per request, each with
    tether's ratio to it."""
    names = []
    for case in cases:
        names += [n for n in case["results"] if n not in names]
    head = " | ".join(case["name"] for case in cases)
    extra_head = f" | {extra[0]}" if extra else ""
    say(f"{unit}/s (tether ÷ it), then server CPU us/{unit} (tether ÷ it):")
    say()
    say(f"| server | {head}{extra_head} |")
    say("|---|" + "---:|" * (len(cases) + (1 if extra else 0)))
    for name in names:
        cells = []
        for case in cases:
            r = case["results"].get(name)
            if not r:
                cells.append("-")
                continue
            cells.append(f"{fmt_rate(r['rps'])} ({fmt_num(r['tether_rps_ratio'], 2)}), "
                         f"{fmt_num(r['cpu_us_per_req'], 2)} us "
                         f"({fmt_num(r['tether_cpu_ratio'], 2)})")
        extra_cell = f" | {extra[1](name)}" if extra else ""
        say(f"| {name} | {' | '.join(cells)}{extra_cell} |")
    say()


def print_table(cases, unit):
    say(f"| case | server | {unit}/s | min..max | p50 us | p99 us | server CPU % "
        f"| CPU us/{unit} | tether ÷ it ({unit}/s) | tether ÷ it (CPU/{unit}) | errors "
        f"| client CPU us/{unit} | other load % | contended |")
    say("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for case in cases:
        for name, r in case["results"].items():
            spread = f"{fmt_rate(r['rps_min'])}..{fmt_rate(r['rps_max'])}"
            say(f"| {case['name']} | {name} | {fmt_rate(r['rps'])} | {spread} "
                f"| {fmt_num(r['p50_us'])} | {fmt_num(r['p99_us'])} | {fmt_num(r['cpu_pct'])} "
                f"| {fmt_num(r['cpu_us_per_req'], 2)} | {fmt_num(r['tether_rps_ratio'], 2)} "
                f"| {fmt_num(r['tether_cpu_ratio'], 2)} | {r['errors']} "
                f"| {fmt_num(r.get('client_cpu_us_per_req'), 2)} "
                f"| {fmt_num(r.get('other_server_core_pct'))}/"
                f"{fmt_num(r.get('other_client_core_pct'))} "
                f"| {sum(1 for x in r['samples'] if contended(x))}/{r['rounds']} |")
    say(f"client CPU us/{unit}: the load client's CPU per {unit}; "
        "other load %: the median share of the run that other processes kept the server's "
        "/ the client's pinned CPU busy; contended: the rounds where either exceeded "
        f"{CONTENDED_PCT}%.")
    say()


# ---- echo -------------------------------------------------------------------------------


def parse_kv(text):
    return {k: float(v) for k, v in re.findall(r"(\w+)=([\d.]+)", text)}


def echo_area(build, opts, go_binary):
    notes = []
    load = exe(build, "benches", "echo_load")
    if not load:
        return {"skipped": "benches/echo_load is not built (needs a C compiler)"}
    servers = find_servers(build, "echo", notes, go_binary)
    servers = [s for s in servers if not opts.servers or s.name in opts.servers]
    server_cpu, client_cpu = cpu_sets()
    cases = []
    for size in (64, 1024):
        name = f"{opts.conns} conns, " + (f"{size} B" if size < 1024 else f"{size // 1024} KiB")
        samples = {s.name: [] for s in servers}
        for rnd, spec, srv in server_rounds(servers, opts.rounds, server_cpu, name, notes):
            base = [load, "-p", str(srv.port), "-c", str(opts.conns), "-s", str(size), "-w", "0"]
            out, wall, cpu, other, client = measured(
                srv, server_cpu, client_cpu, (base + ["-d", str(opts.warmup)], opts.warmup + 30),
                (base + ["-d", str(opts.seconds)], opts.seconds + 30), opts.quiet)
            kv = parse_kv(out)
            if "rps" not in kv:
                notes.append(f"{spec.name}: echo_load said: {out.strip()}")
                continue
            samples[spec.name].append(sample(rnd, kv["rps"], kv["p50_us"], kv["p99_us"],
                                             int(kv.get("errors", 0)), kv.get("samples", 0),
                                             wall, cpu, other, client))
        results = {k: summarize(v) for k, v in samples.items() if v}
        add_ratios(results)
        cases.append({"name": name, "size": size, "conns": opts.conns, "results": results})
    idle = idle_memory(servers, load, opts, notes)
    return {"cases": cases, "idle": idle, "notes": notes}


def idle_memory(servers, load, opts, notes):
    server_cpu, client_cpu = cpu_sets()
    rows = {}
    for spec in servers:
        try:
            srv = spec.start(server_cpu)
        except (RuntimeError, OSError) as e:
            notes.append(f"{spec.name}: {e} (idle connections)")
            continue
        try:
            # Warm up as the throughput runs do (buffers, pools touched), then count only
            # what the idle connections add.
            run_client([load, "-p", str(srv.port), "-c", "64", "-s", "1024", "-w", "0",
                        "-d", "0.3"], client_cpu, 30)
            time.sleep(0.2)
            before = srv.rss_kib()
            client = subprocess.Popen([load, "-p", str(srv.port), "-i", str(opts.idle)],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                      preexec_fn=preexec(client_cpu))
            line = client.stdout.readline()
            time.sleep(0.3)
            after = srv.rss_kib()
            client.stdin.close()
            client.wait(30)
        finally:
            srv.stop()
        m = re.search(r"idle=(\d+)", line)
        ok = int(m.group(1)) if m else 0
        rows[spec.name] = {
            "connections": ok, "asked": opts.idle, "rss_before_kib": before,
            "rss_after_kib": after,
            "bytes_per_conn": 1024 * (after - before) / ok if ok else None}
    return rows


def check(lines, ok, text):
    lines.append(("met    " if ok else "MISSED ") + text)


def echo_targets(area):
    """Issue 4's targets, checked against the ratios paired by round."""
    lines = []
    for case in area.get("cases", []):
        res = case["results"]
        t, raw = res.get("tether"), res.get("raw-uring")
        if (q := paired(t, raw, "rps")) is not None:
            check(lines, q >= 0.97,
                  f"{case['name']}: tether {q:.2f}x raw-uring's round trips/s (target >= 0.97)"
                  + quiet_note(t, raw, "rps"))
        if (q := paired(t, raw, "cpu_us_per_req")) is not None:
            check(lines, q <= 1,
                  f"{case['name']}: tether {q:.2f}x raw-uring's server CPU per round trip "
                  f"(target <= 1)")
        if t and t["rps"]:
            others = [n for n, r in res.items() if n not in ("tether", "raw-uring") and r["rps"]
                      and (paired(t, r, "rps") or 0) < 1]
            check(lines, not others, f"{case['name']}: tether ahead of every other peer"
                  + (f" (behind {', '.join(others)})" if others else ""))
    t = (area.get("idle") or {}).get("tether")
    if t and t["bytes_per_conn"] is not None:
        check(lines, t["bytes_per_conn"] <= 1024,
              f"idle: {t['bytes_per_conn']:.0f} bytes per idle connection (target <= 1024)")
    return lines


def http_targets(area):
    """Issue 5's targets, checked against the ratios paired by round."""
    lines = []
    for case in area.get("cases", []):
        res = case["results"]
        t = res.get("tether")
        if not t or not t["rps"]:
            continue
        n = res.get("nginx")
        if (q := paired(t, n, "rps")) is not None:
            check(lines, q >= 1, f"{case['name']}: tether {q:.2f}x nginx's req/s (>= 1)"
                  + quiet_note(t, n, "rps"))
        if (q := paired(t, n, "cpu_us_per_req")) is not None:
            check(lines, q < 1, f"{case['name']}: tether {q:.2f}x nginx's CPU per request (< 1)"
                  + quiet_note(t, n, "cpu_us_per_req"))
        if (q := paired(t, res.get("go"), "rps")) is not None:
            # The issue measures this in requests per busy server-core-second: with wrk at
            # its core's ceiling, req/s alone can't show more than the client allows.
            c = paired(t, res.get("go"), "cpu_us_per_req")
            per_core = 1 / c if c else None
            check(lines, q >= 2 or (per_core or 0) >= 2,
                  f"{case['name']}: tether {q:.2f}x Go's req/s, "
                  f"{fmt_num(per_core, 2)}x its req per server-core-second (either >= 2)")
        raw = res.get("raw-uring")
        if (q := paired(t, raw, "rps")) is not None:
            check(lines, q >= 0.9, f"{case['name']}: tether {q:.2f}x raw-uring's req/s (>= 0.90)"
                  + quiet_note(t, raw, "rps"))
        if (q := paired(res.get("tether+mw"), raw, "rps")) is not None:
            check(lines, q >= 0.85,
                  f"{case['name']}: tether with middleware {q:.2f}x raw-uring's req/s (>= 0.85)"
                  + quiet_note(res.get("tether+mw"), raw, "rps"))
    return lines


def print_targets(title, lines):
    if not lines:
        return
    say(f"{title} (ratios paired by round; on a two-core machine the load client may be the "
        f"ceiling, so read CPU per request too):")
    for line in lines:
        say(f"  {line}")
    say()


def print_echo(area):
    say(f"echo: round trips/s (closed loop, every echo verified); the tether ÷ it columns are "
        f"tether's figure over the row's")
    say()
    print_table(area["cases"], "rt")
    if area.get("idle"):
        asked = next(iter(area["idle"].values()))["asked"]
        say(f"echo: server RSS growth for {asked} idle connections (after one 64 B round trip "
            f"each)")
        say()
        say("| server | RSS before KiB | RSS after KiB | connections | bytes per connection |")
        say("|---|---:|---:|---:|---:|")
        for name, r in area["idle"].items():
            say(f"| {name} | {r['rss_before_kib']} | {r['rss_after_kib']} | {r['connections']} "
                f"| {fmt_num(r['bytes_per_conn'])} |")
        say()
    idle = area.get("idle") or {}
    print_summary(area["cases"], "rt", (
        "idle B/conn", lambda n: fmt_num((idle.get(n) or {}).get("bytes_per_conn"))))
    area["targets"] = echo_targets(area)
    print_targets("targets of issue 4", area["targets"])


# ---- http -------------------------------------------------------------------------------


def to_us(value, unit):
    return float(value) * {"us": 1, "ms": 1e3, "s": 1e6, "m": 6e7}[unit]


def parse_wrk(text):
    out = {}
    m = re.search(r"Requests/sec:\s+([\d.]+)", text)
    if m:
        out["rps"] = float(m.group(1))
    m = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", text)
    if m:
        out["requests"] = int(m.group(1))
    for q, key in (("50", "p50_us"), ("99", "p99_us")):
        m = re.search(rf"^\s+{q}(?:\.000)?%\s+([\d.]+)(us|ms|s|m)", text, re.M)
        if m:
            out[key] = to_us(m.group(1), m.group(2))
    errors = 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if m:
        errors += sum(int(g) for g in m.groups())
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if m:
        errors += int(m.group(1))
    out["errors"] = errors
    return out


def http_area(build, opts, go_binary, multiloop=False):
    """wrk against each server. `multiloop`: the 2-core servers, unpinned, wrk -t2."""
    notes = []
    wrk = shutil.which("wrk")
    if not wrk:
        return {"skipped": "wrk is not installed (apt install wrk)"}
    if multiloop:
        servers = find_multiloop_http_servers(build, notes, go_binary)
        server_cpu, client_cpu = None, None
        threads = 2
        http_cases = opts.multiloop_http_cases
    else:
        servers = find_servers(build, "http", notes, go_binary)
        server_cpu, client_cpu = cpu_sets()
        threads = 1
        http_cases = opts.http_cases
    servers = [s for s in servers if not opts.servers or s.name in opts.servers]
    script = os.path.join(PEERS, "wrk", "pipeline.lua")
    cases = []
    for conns, depth in http_cases:
        name = f"{conns} conns" + (f", pipelined {depth}" if depth > 1 else "")
        samples = {s.name: [] for s in servers}
        for rnd, spec, srv in server_rounds(servers, opts.rounds, server_cpu, name, notes):
            url = f"http://127.0.0.1:{srv.port}/"
            base = [wrk, f"-t{threads}", f"-c{conns}", "--latency"]
            tail = ["-s", script, url, "--", str(depth)] if depth > 1 else [url]
            warm = (base + [f"-d{int(opts.warmup)}s"] + tail, 60) if opts.warmup >= 1 else None
            out, wall, cpu, other, client = measured(
                srv, server_cpu, client_cpu, warm,
                (base + [f"-d{int(opts.seconds)}s"] + tail, opts.seconds + 60), opts.quiet)
            w = parse_wrk(out)
            if "rps" not in w:
                notes.append(f"{spec.name}: wrk said: {out.strip()[:300]}")
                continue
            if depth > 1:
                # wrk measures a pipelined batch as one request: its percentiles are not
                # per-request latencies.
                w["p50_us"] = w["p99_us"] = None
            samples[spec.name].append(sample(rnd, w["rps"], w.get("p50_us"), w.get("p99_us"),
                                             w["errors"], w.get("requests") or 0, wall, cpu,
                                             other, client))
        results = {k: summarize(v) for k, v in samples.items() if v}
        add_ratios(results)
        cases.append({"name": name, "conns": conns, "pipeline": depth, "results": results})
    return {"cases": cases, "notes": notes}


def print_http(area):
    say("http: plaintext Hello, World! under wrk (-t1, keep-alive); tether+mw adds the "
        "request-ID and access-log middleware; p50/p99 are n/a pipelined")
    say()
    print_table(area["cases"], "req")
    print_summary(area["cases"], "req")
    area["targets"] = http_targets(area)
    print_targets("targets of issue 5", area["targets"])


def multiloop_http_targets(area):
    """Issue 6's target: the 2-loop HTTP server ahead of nginx with 2 workers."""
    lines = []
    for case in area.get("cases", []):
        q = paired(case["results"].get("tether"), case["results"].get("nginx"), "rps")
        if q is not None:
            check(lines, q >= 1,
                  f"{case['name']}: tether on 2 loops {q:.2f}x the req/s of nginx with 2 "
                  f"workers (>= 1)")
    return lines


def print_multiloop_http(area):
    say("multiloop http: plaintext Hello, World! under wrk -t2; tether --loops 2, nginx with "
        "2 workers, Go with GOMAXPROCS=2; nothing pinned (servers and wrk share both cores), "
        "server CPU summed over its threads")
    say()
    print_table(area["cases"], "req")
    print_summary(area["cases"], "req")
    area["targets"] = multiloop_http_targets(area)
    print_targets("targets of issue 6", area["targets"])


# ---- the benchmark programs -------------------------------------------------------------


def markdown_tables(text):
    """The markdown tables of a program's output, as lists of rows (header first)."""
    tables, current = [], []
    for line in text.splitlines():
        s = line.strip()
        if s.startswith("|") and s.endswith("|"):
            cells = [c.strip() for c in s.strip("|").split("|")]
            if not all(re.fullmatch(r":?-+:?", c) for c in cells):
                current.append(cells)
        elif current:
            tables.append(current)
            current = []
    if current:
        tables.append(current)
    return tables


def program_area(build, name, args, opts):
    binary = exe(build, "benches", name)
    if not binary:
        return {"skipped": f"benches/{name} is not built"}
    argv = [binary] + args
    json_file = None
    if opts.quick and "--quick" in help_text(binary):
        argv.append("--quick")
    if "--json" in help_text(binary):
        fd, json_file = tempfile.mkstemp(suffix=".json")
        os.close(fd)
        argv += ["--json", json_file]
    say(f"$ {' '.join(os.path.relpath(a) if a == binary else a for a in argv)}")
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in proc.stdout:
        sys.stdout.write(line)
        sys.stdout.flush()
        lines.append(line)
    proc.wait()
    out = "".join(lines)
    result = {"command": argv[:1] + [a for a in argv[1:] if a != json_file],
              "exit_code": proc.returncode, "output": out, "tables": markdown_tables(out)}
    if json_file:
        try:
            result["json"] = json.load(open(json_file))
        except (OSError, ValueError):
            pass
        os.unlink(json_file)
    say()
    return result


def help_text(binary):
    try:
        r = subprocess.run([binary, "--help"], capture_output=True, text=True, timeout=10)
        return r.stdout + r.stderr
    except (OSError, subprocess.TimeoutExpired):
        return ""


# ---- the chart --------------------------------------------------------------------------


def esc(s):
    return str(s).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def svg_chart(report):
    """Horizontal bars: throughput and p99 latency per server, one block per case of the echo,
    HTTP and multi-loop HTTP areas."""
    label_w, bar_w, gap, row_h = 170, 330, 40, 16
    width = label_w + 2 * bar_w + gap + 40
    parts, y = [], 40
    title = (f"tether benchmarks, {report['machine']['date']}: {report['machine']['cpu']}, "
             f"{report['machine']['cores']} cores, Linux {report['machine']['kernel']}")
    parts.append(f'<text x="10" y="22" font-size="14" font-weight="bold">{esc(title)}</text>')
    areas = report["areas"]
    for area_name, area in (("echo", areas.get("echo")), ("http", areas.get("http")),
                            ("http on 2 loops", (areas.get("multiloop") or {}).get("http"))):
        for case in (area or {}).get("cases", []):
            rows = case["results"]
            if not rows:
                continue
            y += 14
            parts.append(f'<text x="10" y="{y}" font-size="13" font-weight="bold">'
                         f'{esc(area_name)}: {esc(case["name"])}</text>')
            parts.append(f'<text x="{label_w}" y="{y}" font-size="11">throughput '
                         f'({"round trips" if area_name == "echo" else "requests"}/s)</text>')
            parts.append(f'<text x="{label_w + bar_w + gap}" y="{y}" font-size="11">p99 '
                         f'latency (us)</text>')
            y += 6
            top_rps = max(r["rps"] or 0 for r in rows.values()) or 1
            top_p99 = max(r["p99_us"] or 0 for r in rows.values()) or 1
            for name, r in rows.items():
                color = "#d9480f" if name.startswith("tether") else "#5c7cfa"
                parts.append(f'<text x="{label_w - 8}" y="{y + 12}" font-size="11" '
                             f'text-anchor="end">{esc(name)}</text>')
                w = bar_w * 0.8 * (r["rps"] or 0) / top_rps
                parts.append(f'<rect x="{label_w}" y="{y + 2}" width="{w:.1f}" '
                             f'height="{row_h - 4}" fill="{color}"/>')
                parts.append(f'<text x="{label_w + w + 4:.1f}" y="{y + 12}" font-size="10">'
                             f'{fmt_rate(r["rps"])}</text>')
                x2 = label_w + bar_w + gap
                if r["p99_us"]:
                    w = bar_w * 0.8 * r["p99_us"] / top_p99
                    parts.append(f'<rect x="{x2}" y="{y + 2}" width="{w:.1f}" '
                                 f'height="{row_h - 4}" fill="{color}" opacity="0.6"/>')
                    parts.append(f'<text x="{x2 + w + 4:.1f}" y="{y + 12}" font-size="10">'
                                 f'{r["p99_us"]:.0f}</text>')
                else:
                    parts.append(f'<text x="{x2}" y="{y + 12}" font-size="10">n/a</text>')
                y += row_h
            y += 10
    height = y + 10
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'font-family="sans-serif">\n<rect width="100%" height="100%" fill="white"/>\n'
            + "\n".join(parts) + "\n</svg>\n")


# ---- main -------------------------------------------------------------------------------


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--build", default=os.path.join(ROOT, "build-release"),
                   help="the release build directory (default: build-release)")
    p.add_argument("--quick", action="store_true", help="one short round: under two minutes")
    p.add_argument("--json", help="write the results here, and the chart next to it (.svg)")
    p.add_argument("--rounds", type=int, help="rounds per case (3; 1 with --quick)")
    p.add_argument("--seconds", type=float, help="measured seconds per run (5; 1 with --quick)")
    p.add_argument("--areas", default="context,runtime,echo,http,multiloop",
                   help="comma-separated: context,runtime,echo,http,multiloop")
    p.add_argument("--servers", default="",
                   help="comma-separated server names for echo and http (default: all)")
    p.add_argument("--http-cases", default="",
                   help="comma-separated CONNSxDEPTH cases for http, e.g. 64x16 (default: "
                        "64x1,1000x1,64x16,1000x16; 64x1,1000x1,64x16 with --quick)")
    p.add_argument("--quiet", type=float, default=0, metavar="SECS",
                   help="before each measured echo or HTTP run, wait up to SECS seconds for "
                        f"both pinned CPUs to be under {CONTENDED_PCT}%% busy for half a second "
                        "(a shared machine: fewer contended rounds; default 0: no wait)")
    opts = p.parse_args()
    opts.build = os.path.abspath(opts.build)
    opts.areas = [a for a in opts.areas.split(",") if a]
    opts.servers = [s for s in opts.servers.split(",") if s]
    if opts.quick:
        opts.rounds = opts.rounds or 1
        opts.seconds = opts.seconds or 1
        opts.warmup = 0.2
        opts.idle = 1000
    else:
        opts.rounds = opts.rounds or 3
        opts.seconds = opts.seconds or 5
        opts.warmup = 1
        opts.idle = 10000
    opts.seconds = max(1, opts.seconds)  # wrk takes whole seconds
    opts.conns = 64
    chosen = [c for c in opts.http_cases.split(",") if c]
    opts.http_cases = [(64, 1), (1000, 1), (64, 16), (1000, 16)]
    opts.multiloop_http_cases = [(64, 1), (1000, 1)]
    if opts.quick:
        opts.http_cases = [(64, 1), (1000, 1), (64, 16)]
        opts.multiloop_http_cases = [(64, 1)]
    if chosen:
        try:
            opts.http_cases = [tuple(int(n) for n in c.split("x", 1)) for c in chosen]
        except ValueError:
            p.error(f"--http-cases: expected CONNSxDEPTH, got {','.join(chosen)!r}")

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < opts.idle + 1000:
        opts.idle = max(100, hard - 1000)
        say(f"note: RLIMIT_NOFILE's hard limit is {hard}: {opts.idle} idle connections")

    machine = machine_info()
    server_cpu, client_cpu = cpu_sets()
    say(f"tether benchmarks, {machine['date']}")
    say(f"machine: {machine['cpu']}, {machine['cores']} cores, Linux {machine['kernel']}, "
        f"load average {machine['loadavg_at_start']} at start")
    if server_cpu is None:
        say("note: one CPU: servers and load clients are not pinned")
    else:
        say(f"servers on CPU {server_cpu}, load clients on CPU {client_cpu}; {opts.rounds} "
            f"round(s) of {opts.seconds:g} s per case after {opts.warmup:g} s of warm-up, "
            f"servers in turn (A B A B); medians")
    say()
    report = {"machine": machine, "quick": opts.quick,
              "settings": {"rounds": opts.rounds, "seconds": opts.seconds,
                           "warmup_seconds": opts.warmup, "server_cpu": server_cpu,
                           "client_cpu": client_cpu, "echo_conns": opts.conns,
                           "idle_conns": opts.idle},
              "areas": {}}
    go_binary = None
    if "echo" in opts.areas or "http" in opts.areas or "multiloop" in opts.areas:
        notes = []
        go_binary = build_go(opts.build, notes)
        if "echo" in opts.areas or "http" in opts.areas:
            TOKIO_BINARY["path"] = build_tokio(opts.build, notes)
        for n in notes:
            say(f"note: {n}")
        known = {"tether", "tether+mw", "raw-uring", "raw-epoll", "asio-uring", "asio-epoll",
                 "go", "tokio", "nginx"}
        for name in opts.servers:
            if name not in known:
                say(f"note: no server is called {name} (servers: {', '.join(sorted(known))})")
        if notes or set(opts.servers) - known:
            say()

    started = time.monotonic()
    for area in opts.areas:
        say(f"== {area}")
        area_started = time.monotonic()
        if area == "context":
            result = program_area(opts.build, "context_bench", ["--go"], opts)
        elif area == "runtime":
            result = program_area(opts.build, "runtime_bench", [], opts)
        elif area == "multiloop":
            result = program_area(opts.build, "multiloop_bench", [], opts)
            if "--loops" in help_text(exe(opts.build, "benches", "http_server") or "true"):
                result["http"] = http_area(opts.build, opts, go_binary, multiloop=True)
                if "cases" in result["http"]:
                    print_multiloop_http(result["http"])
                result.setdefault("notes", []).extend(result["http"].get("notes", []))
                if "skipped" in result["http"]:
                    result["notes"].append(f"multiloop http: {result['http']['skipped']}")
        elif area == "echo":
            result = echo_area(opts.build, opts, go_binary)
            if "cases" in result:
                print_echo(result)
        elif area == "http":
            result = http_area(opts.build, opts, go_binary)
            if "cases" in result:
                print_http(result)
        else:
            say(f"unknown area {area}")
            continue
        if "skipped" in result:
            say(f"note: {area} skipped: {result['skipped']}")
            say()
        for n in result.get("notes", []):
            say(f"note: {n}")
        if result.get("notes"):
            say()
        result["seconds"] = round(time.monotonic() - area_started, 1)
        say(f"({area}: {result['seconds']:.0f} s)")
        say()
        report["areas"][area] = result
    report["seconds"] = round(time.monotonic() - started, 1)

    json_path = os.path.abspath(opts.json or os.path.join(opts.build, "bench-results.json"))
    os.makedirs(os.path.dirname(json_path), exist_ok=True)
    with open(json_path, "w") as f:
        json.dump(report, f, indent=1)
    svg_path = os.path.splitext(json_path)[0] + ".svg"
    with open(svg_path, "w") as f:
        f.write(svg_chart(report))
    for d in TEMP_DIRS:
        shutil.rmtree(d, ignore_errors=True)
    say(f"results: {json_path}")
    say(f"chart:   {svg_path}")
    say(f"took {report['seconds']:.0f} s")
    failed = [a for a, r in report["areas"].items() if r.get("exit_code")]
    if failed:
        say(f"failed: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
