// multiloop_bench: tether's loops talking to each other (issue 6), against Go channels
// between two goroutines with GOMAXPROCS=2 (benches/peers/go/multiloop_bench).
//
//   multiloop_bench               every case, 5 rounds, Go side by side when `go` is in PATH
//   multiloop_bench --quick       3 rounds, 50 ms per timed case
//   multiloop_bench --no-go       tether only
//   multiloop_bench --case GROUP  one group: pingpong, switch, stream or compute
//   multiloop_bench --json FILE   also write the results as JSON
//
// Cases:
//   pingpong   a round trip between a task on loop 0 and one on loop 1 over two unbuffered
//              channels (Go: two goroutines over two unbuffered channels). Go's pair mostly
//              runs on one P (a send makes the receiver the sender's `runnext`), so its round
//              trip rarely crosses threads while tether's always does; two more peers show
//              both sides of that: Go with each goroutine locked to its own OS thread (every
//              hop crosses threads, as tether's), and tether with both tasks on one loop.
//   *_spin     the same with loops that busy-poll 50 us before sleeping (loop::options::spin),
//              unpinned and pinned to CPUs 0 and 1 (runtime::options::pin). Unpinned, the
//              kernel often wakes a loop on the CPU of the loop that woke it, which then
//              spins there while the woken one waits for the CPU: spinning pays when pinned.
//   switch     a coroutine hopping loop 0 -> loop 1 -> loop 0 with switch_to (no Go peer:
//              the raw cross-loop wake, MSG_RING against the wake pipe), and next to it the
//              kernel's floor: two plain threads (no tether) waking each other through
//              MSG_RING on two rings, and through eventfds
//   stream     values from a producer on loop 0 to a consumer on loop 1 through a channel
//              of 1024 (Go: a buffered channel of 1024 between two goroutines)
//   compute    64 tasks of CPU work spread over 2 loops, against the same on 1 loop, and
//              the same work on 2 plain threads against 1: the speedup the machine allowed
//              at that moment (on a shared machine the kernel gives each session its share
//              of the CPUs however many threads it runs, and 2 threads may get 1 core)
//
// Each tether case runs with loops woken through IORING_OP_MSG_RING and again with the wake
// pipe (the path a foreign thread or an old kernel takes). The machine is shared and noisy:
// every group runs once per round, tether and then its peers, and the table shows medians
// with the load average at the start and the end.

#include "benches/support/process.hpp"
#include "runtime/channel.hpp"
#include "runtime/detail/loop_impl.hpp"
#include "runtime/loop.hpp"
#include "runtime/runtime.hpp"
#include "runtime/spawn.hpp"
#include "runtime/switch_to.hpp"
#include "runtime/task.hpp"

#include <liburing.h>

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fcntl.h>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <utility>
#include <vector>

extern char** environ;

using namespace tether;
using steady = std::chrono::steady_clock;

namespace {

using tether::bench::build_go_program;
using tether::bench::go_program;
using tether::bench::json_escape;
using tether::bench::median;
using tether::bench::run_command;

struct settings {
    int rounds = 5;
    steady::duration benchtime = std::chrono::milliseconds(300);
    bool go = true;
    bool require_go = false;
    std::string json_file;
    std::string only; // --case: run only the cases whose name starts with this
    int compute_tasks = 64;
    int compute_work = 2'000'000;
};

// After a run of `n` ops took `d`: 0 once a run lasts the bench time `bt` (or n reached
// 2^30), otherwise the next n, aiming 20% past `bt` and at most 100 times n (as Go's
// testing.B grows b.N).
std::int64_t next_count(std::int64_t n, steady::duration d, steady::duration bt) {
    if (d >= bt || n >= (std::int64_t{1} << 30)) {
        return 0;
    }
    double ns = static_cast<double>(std::chrono::nanoseconds(d).count());
    double target = static_cast<double>(std::chrono::nanoseconds(bt).count());
    std::int64_t next = ns <= 0 ? n * 100 : static_cast<std::int64_t>(n * 1.2 * target / ns);
    return std::clamp(next, n + 1, n * 100);
}

// Runs fn(n) with n growing until one run lasts the bench time (as Go's testing.B); returns
// nanoseconds per op.
double measure(const std::function<void(std::int64_t)>& fn, steady::duration bt) {
    std::int64_t n = 1;
    for (;;) {
        auto t0 = steady::now();
        fn(n);
        auto d = steady::now() - t0;
        std::int64_t next = next_count(n, d, bt);
        if (next == 0) {
            return static_cast<double>(std::chrono::nanoseconds(d).count()) /
                   static_cast<double>(n);
        }
        n = next;
    }
}

enum class wake { msg_ring, pipe, spin, spin_pinned };

// Two loops woken through MSG_RING, through their pipes, or spinning 50 us before sleeping
// (and pinned to CPUs 0 and 1: each spins on a core of its own).
runtime::options two_loops(wake w) {
    runtime::options o{.loops = 2};
    o.loop_options.msg_ring = w != wake::pipe;
    if (w == wake::spin || w == wake::spin_pinned) {
        o.loop_options.spin = std::chrono::microseconds(50);
    }
    o.pin = w == wake::spin_pinned;
    return o;
}

// ---- pingpong ----------------------------------------------------------------------------

task<void> echo(channel<int>* in, channel<int>* out) {
    while (result<int> v = co_await in->receive()) {
        if (result<void> sent = co_await out->send(*v); !sent) {
            co_return;
        }
    }
    out->close();
}

// The echo task runs on loop `echo_loop`: 1 for the cross-loop round trip, 0 for both tasks
// on one loop (what Go's pair mostly does).
double pingpong(wake w, steady::duration bt, std::size_t echo_loop = 1) {
    runtime rt(two_loops(w));
    return rt.block_on([&]() -> task<double> {
        channel<int> ping;
        channel<int> pong;
        auto h = co_await spawn_on(rt.loop(echo_loop), echo(&ping, &pong));
        auto body = [&](std::int64_t n) -> task<void> {
            for (std::int64_t i = 0; i < n; ++i) {
                (void)co_await ping.send(static_cast<int>(i));
                (void)co_await pong.receive();
            }
        };
        // measure() drives the loop through nested awaits: run its timing here instead.
        double ns = 0;
        std::int64_t n = 1;
        for (;;) {
            auto t0 = steady::now();
            co_await body(n);
            auto d = steady::now() - t0;
            ns = static_cast<double>(std::chrono::nanoseconds(d).count());
            std::int64_t next = next_count(n, d, bt);
            if (next == 0) {
                break;
            }
            n = next;
        }
        ping.close();
        (void)co_await h;
        co_return ns / static_cast<double>(n);
    }());
}

// ---- switch --------------------------------------------------------------------------------

double switch_round_trip(wake w, steady::duration bt) {
    runtime rt(two_loops(w));
    return rt.block_on([&]() -> task<double> {
        double ns = 0;
        std::int64_t n = 1;
        for (;;) {
            auto t0 = steady::now();
            for (std::int64_t i = 0; i < n; ++i) {
                co_await switch_to(rt.loop(1));
                co_await switch_to(rt.loop(0));
            }
            auto d = steady::now() - t0;
            ns = static_cast<double>(std::chrono::nanoseconds(d).count());
            std::int64_t next = next_count(n, d, bt);
            if (next == 0) {
                break;
            }
            n = next;
        }
        co_return ns / static_cast<double>(n);
    }());
}

// ---- stream --------------------------------------------------------------------------------

task<std::int64_t> drain(channel<int>* ch) {
    std::int64_t sum = 0;
    while (result<int> v = co_await ch->receive()) {
        sum += *v;
    }
    co_return sum;
}

double stream(wake w, steady::duration bt) {
    runtime rt(two_loops(w));
    return measure(
        [&](std::int64_t n) {
            rt.block_on([&]() -> task<void> {
                channel<int> ch(1024);
                auto h = co_await spawn_on(rt.loop(1), drain(&ch));
                for (std::int64_t i = 0; i < n; ++i) {
                    (void)co_await ch.send(static_cast<int>(i));
                }
                ch.close();
                (void)co_await h;
            }());
        },
        bt);
}

// ---- compute -------------------------------------------------------------------------------

std::uint64_t spin(int iters, std::uint64_t seed) {
    std::uint64_t x = seed;
    for (int i = 0; i < iters; ++i) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    return x;
}

task<std::uint64_t> crunch(int iters, std::uint64_t seed) {
    co_return spin(iters, seed);
}

// Wall time of `tasks` tasks of work spread over the first `loops` loops of a 2-loop runtime.
double compute(runtime& rt, std::size_t loops, const settings& s) {
    return rt.block_on([&]() -> task<double> {
        auto t0 = steady::now();
        std::vector<join_handle<std::uint64_t>> hs;
        for (int t = 0; t < s.compute_tasks; ++t) {
            hs.push_back(
                co_await spawn_on(rt.loop(static_cast<std::size_t>(t) % loops),
                                  crunch(s.compute_work, static_cast<std::uint64_t>(t) + 1)));
        }
        std::uint64_t sum = 0;
        for (auto& h : hs) {
            sum += (co_await h).value();
        }
        auto d = steady::now() - t0;
        if (sum == 42) {
            std::fputs("", stdout); // keep the work
        }
        co_return static_cast<double>(std::chrono::nanoseconds(d).count());
    }());
}

// The machine's own ceiling, measured next to `compute`: the same work on `threads` plain
// threads (no tether). On a machine shared with other processes two threads rarely get two
// cores (the kernel's autogroup gives each session its share, however many threads it runs):
// 2 loops can't be faster than 2 threads, and this row says how much the machine allowed.
double compute_threads(int threads, const settings& s) {
    auto t0 = steady::now();
    std::vector<std::thread> ts;
    std::vector<std::uint64_t> sums(static_cast<std::size_t>(threads));
    for (int th = 0; th < threads; ++th) {
        ts.emplace_back([&, th] {
            std::uint64_t sum = 0;
            for (int t = th; t < s.compute_tasks; t += threads) {
                sum += spin(s.compute_work, static_cast<std::uint64_t>(t) + 1);
            }
            sums[static_cast<std::size_t>(th)] = sum;
        });
    }
    for (auto& t : ts) {
        t.join();
    }
    auto d = steady::now() - t0;
    std::uint64_t sum = 0;
    for (auto v : sums) {
        sum += v;
    }
    if (sum == 42) {
        std::fputs("", stdout); // keep the work
    }
    return static_cast<double>(std::chrono::nanoseconds(d).count());
}

// ---- floor: the kernel's own cross-thread wake, without tether -----------------------------

// A round trip between two plain threads that block in the kernel: each wakes the other by
// writing an eventfd the other blocks reading. What a wake costs on this machine (on a VM,
// mostly the hypervisor waking an idle vCPU): no runtime that sleeps in the kernel beats it.
double raw_eventfd(steady::duration bt) {
    int to_peer = ::eventfd(0, EFD_CLOEXEC);
    int to_main = ::eventfd(0, EFD_CLOEXEC);
    std::thread peer([&] {
        for (;;) {
            std::uint64_t v = 0;
            if (::read(to_peer, &v, sizeof v) != sizeof v || v > 1) {
                return; // 2: stop
            }
            [[maybe_unused]] ssize_t w = ::write(to_main, &v, sizeof v);
        }
    });
    double ns = measure(
        [&](std::int64_t n) {
            for (std::int64_t i = 0; i < n; ++i) {
                std::uint64_t v = 1;
                [[maybe_unused]] ssize_t w = ::write(to_peer, &v, sizeof v);
                [[maybe_unused]] ssize_t r = ::read(to_main, &v, sizeof v);
            }
        },
        bt);
    std::uint64_t stop = 2;
    [[maybe_unused]] ssize_t w = ::write(to_peer, &stop, sizeof stop);
    peer.join();
    ::close(to_peer);
    ::close(to_main);
    return ns;
}

// The same with two rings (SINGLE_ISSUER | DEFER_TASKRUN, as a loop's) on two threads, each
// waking the other with one IORING_OP_MSG_RING and waiting in io_uring_enter for the reply.
struct raw_ring {
    io_uring ring{};
    bool ok = false;
    raw_ring() {
        io_uring_params p{};
        p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
        ok = io_uring_queue_init_params(8, &ring, &p) == 0;
    }
    ~raw_ring() {
        if (ok) {
            io_uring_queue_exit(&ring);
        }
    }
    void send(int target_fd, int value) {
        io_uring_sqe* sqe = io_uring_get_sqe(&ring);
        io_uring_prep_msg_ring(sqe, target_fd, static_cast<unsigned>(value), 1, 0);
        io_uring_sqe_set_data64(sqe, 0);
        io_uring_sqe_set_flags(sqe, IOSQE_CQE_SKIP_SUCCESS);
    }
    // Submits what is queued and waits for a message; returns its value.
    int wait() {
        for (;;) {
            io_uring_cqe* cqe = nullptr;
            io_uring_submit_and_wait(&ring, 1);
            int value = -1;
            unsigned head;
            unsigned n = 0;
            io_uring_for_each_cqe(&ring, head, cqe) {
                if (cqe->user_data == 1) {
                    value = cqe->res;
                }
                ++n;
            }
            io_uring_cq_advance(&ring, n);
            if (value >= 0) {
                return value;
            }
        }
    }
};

std::optional<double> raw_msg_ring(steady::duration bt) {
    std::atomic<int> peer_fd{-1};
    std::atomic<bool> peer_ok{true};
    raw_ring mine;
    if (!mine.ok) {
        return std::nullopt;
    }
    std::thread peer([&] {
        raw_ring r; // built on its thread: SINGLE_ISSUER binds it to the creator
        if (!r.ok) {
            peer_ok = false;
            peer_fd = 0;
            return;
        }
        peer_fd = r.ring.ring_fd;
        while (r.wait() == 1) {
            r.send(mine.ring.ring_fd, 1);
        }
    });
    while (peer_fd.load() < 0) {
        std::this_thread::yield();
    }
    if (!peer_ok) {
        peer.join();
        return std::nullopt;
    }
    double ns = measure(
        [&](std::int64_t n) {
            for (std::int64_t i = 0; i < n; ++i) {
                mine.send(peer_fd, 1);
                mine.wait();
            }
        },
        bt);
    mine.send(peer_fd, 2);
    io_uring_submit(&mine.ring);
    peer.join();
    return ns;
}

// ---- Go ------------------------------------------------------------------------------------

using go_side = go_program;

go_side build_go() {
    return build_go_program(TETHER_MULTILOOP_BENCH_GO_DIR, "multiloop-bench", "multiloop_bench_go",
                            2);
}

// Runs one Go case; returns its "result <key> <value>" lines as a map.
std::map<std::string, double> run_go(const go_side& g, const std::string& name, const settings& s) {
    std::map<std::string, double> out;
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(s.benchtime).count();
    std::vector<std::string> argv{g.binary,
                                  "-case",
                                  name,
                                  "-benchtime",
                                  fmt::format("{}ms", ms),
                                  "-tasks",
                                  std::to_string(s.compute_tasks),
                                  "-work",
                                  std::to_string(s.compute_work)};
    std::vector<std::string> tail;
    int st = run_command(argv, g.env, [&](const std::string& line) {
        constexpr std::string_view prefix = "result ";
        if (line.starts_with(prefix)) {
            std::size_t sp = line.find(' ', prefix.size());
            if (sp != std::string::npos) {
                out[line.substr(prefix.size(), sp - prefix.size())] =
                    std::strtod(line.c_str() + sp + 1, nullptr);
                return;
            }
        }
        tail.push_back(line);
    });
    if (st != 0) {
        fmt::print(stderr, "multiloop_bench: Go's {} failed (status {}):\n  {}\n", name, st,
                   fmt::join(tail, "\n  "));
    }
    return out;
}

// ---- table ---------------------------------------------------------------------------------

// The 1, 5 and 15 minute load averages: how busy the shared machine was.
std::string loadavg() {
    std::string out;
    if (std::FILE* f = std::fopen("/proc/loadavg", "r")) {
        char buf[128] = {};
        if (std::fgets(buf, sizeof buf, f) != nullptr) {
            std::string_view v(buf);
            // The first three fields.
            std::size_t end = 0;
            for (int field = 0; field < 3 && end != std::string_view::npos; ++field) {
                end = v.find(' ', end + (field > 0 ? 1 : 0));
            }
            out = std::string(v.substr(0, end));
        }
        std::fclose(f);
    }
    return out.empty() ? "unknown" : out;
}

// "min..max" of a case's rounds, "-" without any.
std::string spread(const std::vector<double>& v) {
    if (v.empty()) {
        return "-";
    }
    auto [lo, hi] = std::minmax_element(v.begin(), v.end());
    return fmt::format("{:.1f}..{:.1f}", *lo, *hi);
}

struct row {
    std::string name;
    std::string tether_label;
    std::string peer_label;
    std::string unit;
    std::vector<double> tether;
    std::vector<double> peer;
    std::string target; // e.g. ">= 3.0x"
    double goal = 0;    // the ratio the target asks for, 0 for none
    /// peer / tether: how many times faster (or, for compute, the speedup) tether is.
    std::optional<double> ratio() const {
        double t = median(tether);
        double p = median(peer);
        if (tether.empty() || peer.empty() || t <= 0) {
            return std::nullopt;
        }
        return p / t;
    }
};

bool write_json(const std::string& file, const std::vector<row>& rows) {
    std::string out = "{\"area\": \"multiloop\", \"cases\": [\n";
    for (std::size_t i = 0; i < rows.size(); ++i) {
        const row& r = rows[i];
        auto num = [](std::optional<double> v) {
            return v ? fmt::format("{:.3f}", *v) : std::string("null");
        };
        std::optional<double> t;
        std::optional<double> p;
        if (!r.tether.empty()) {
            t = median(r.tether);
        }
        if (!r.peer.empty()) {
            p = median(r.peer);
        }
        auto list = [](const std::vector<double>& v) {
            return fmt::format("[{:.3f}]", fmt::join(v, ", "));
        };
        out += fmt::format("  {{\"name\": \"{}\", \"tether\": {}, \"peer\": {}, \"unit\": \"{}\", "
                           "\"ratio\": {}, \"peer_name\": \"{}\", \"target\": \"{}\", "
                           "\"tether_samples\": {}, \"peer_samples\": {}}}{}\n",
                           json_escape(r.name), num(t), num(p), r.unit, num(r.ratio()),
                           json_escape(r.peer_label), r.target, list(r.tether), list(r.peer),
                           i + 1 < rows.size() ? "," : "");
    }
    out += "]}\n";
    std::FILE* f = std::fopen(file.c_str(), "w");
    if (f == nullptr) {
        fmt::print(stderr, "multiloop_bench: cannot write {}\n", file);
        return false;
    }
    std::fputs(out.c_str(), f);
    std::fclose(f);
    return true;
}

void usage() {
    fmt::print("usage: multiloop_bench [--quick] [--rounds N] [--benchtime MS] [--go | --no-go]\n"
               "                       [--case pingpong|switch|stream|compute] [--json FILE]\n");
}

} // namespace

int main(int argc, char** argv) {
    settings s;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        auto value = [&]() -> std::string {
            if (i + 1 >= argc) {
                usage();
                std::exit(2);
            }
            return argv[++i];
        };
        if (a == "--quick") {
            s.rounds = 3;
            s.benchtime = std::chrono::milliseconds(50);
            s.compute_work = 500'000;
        } else if (a == "--rounds") {
            s.rounds = std::max(1, std::atoi(value().c_str()));
        } else if (a == "--benchtime") {
            s.benchtime = std::chrono::milliseconds(std::atoi(value().c_str()));
        } else if (a == "--go") {
            s.require_go = true;
        } else if (a == "--no-go") {
            s.go = false;
        } else if (a == "--case") {
            s.only = value();
        } else if (a == "--json") {
            s.json_file = value();
        } else {
            usage();
            return a == "--help" ? 0 : 2;
        }
    }

    go_side g;
    if (s.go) {
        g = build_go();
        if (!g.ready) {
            fmt::print("{}\n", g.note);
            if (s.require_go) {
                return 1;
            }
        }
    }

    // Go's default pair hands each value over on one P: the receiver is made ready on the
    // sender's own P (runnext) and runs there, so the round trip rarely crosses threads.
    // tether's round trip always does (the tasks are on two loops, two threads). Go with both
    // goroutines locked to their own OS thread (runtime.LockOSThread) crosses threads on
    // every hop, as tether does.
    row pp{"pingpong_vs_go",
           "tether MSG_RING",
           "Go GOMAXPROCS=2",
           "ns/round trip",
           {},
           {},
           ">= 3.0x",
           3.0};
    row pp_spin{"pingpong_spin_vs_go",
                "tether spin 50us",
                "Go GOMAXPROCS=2",
                "ns/round trip",
                {},
                {},
                "",
                0};
    row pp_spin_pinned{"pingpong_spin_pinned_vs_go",
                       "spin 50us pinned",
                       "Go GOMAXPROCS=2",
                       "ns/round trip",
                       {},
                       {},
                       "",
                       0};
    row pp_locked{"pingpong_vs_go_threads",
                  "tether MSG_RING",
                  "Go locked thrds",
                  "ns/round trip",
                  {},
                  {},
                  "",
                  0};
    row pp_spin_locked{"pingpong_spin_vs_go_thrds",
                       "tether spin 50us",
                       "Go locked thrds",
                       "ns/round trip",
                       {},
                       {},
                       "",
                       0};
    row pp_one{"pingpong_one_loop_vs_go",
               "tether 1 loop",
               "Go GOMAXPROCS=2",
               "ns/round trip",
               {},
               {},
               "",
               0};
    row pp_pipe{"pingpong_pipe_vs_go",
                "tether pipe wake",
                "Go GOMAXPROCS=2",
                "ns/round trip",
                {},
                {},
                "",
                0};
    row sw{"switch_msg_ring_vs_pipe", "MSG_RING", "pipe wake", "ns/round trip", {}, {}, "", 0};
    row sw_spin{"switch_spin_vs_msg_ring", "spin 50us", "MSG_RING", "ns/round trip", {}, {}, "", 0};
    row fl_ring{"switch_vs_raw_msg_ring",
                "tether MSG_RING",
                "raw MSG_RING",
                "ns/round trip",
                {},
                {},
                "",
                0};
    row fl_efd{"switch_pipe_vs_raw_eventfd",
               "tether pipe wake",
               "raw eventfd",
               "ns/round trip",
               {},
               {},
               "",
               0};
    row st{"stream_vs_go", "tether MSG_RING", "Go GOMAXPROCS=2", "ns/message", {}, {}, "", 0};
    row st_pipe{
        "stream_pipe_vs_go", "tether pipe wake", "Go GOMAXPROCS=2", "ns/message", {}, {}, "", 0};
    row cp{"compute_2_loops_vs_1", "2 loops", "1 loop", "ms", {}, {}, ">= 1.9x", 1.9};
    row cp_machine{"compute_2_threads_vs_1", "2 threads", "1 thread", "ms", {}, {}, "", 0};
    row cp_go{"compute_vs_go", "tether 2 loops", "Go GOMAXPROCS=2", "ms", {}, {}, "", 0};

    bool msg_ring = false;
    {
        runtime probe(two_loops(wake::msg_ring));
        probe.block_on([&]() -> task<void> {
            for (int i = 0; i < 20; ++i) {
                co_await switch_to(probe.loop(1));
                co_await switch_to(probe.loop(0));
            }
        }());
        msg_ring = probe.loop(1).impl().msg_ring_received.load() > 0;
    }
    fmt::print("multiloop_bench: {} rounds, {} ms per case, {} cores, MSG_RING {}, load {}\n",
               s.rounds, std::chrono::duration_cast<std::chrono::milliseconds>(s.benchtime).count(),
               std::thread::hardware_concurrency(), msg_ring ? "used" : "unavailable (pipe)",
               loadavg());

    auto want = [&](std::string_view group) { return s.only.empty() || s.only == group; };
    runtime compute_rt(runtime::options{.loops = 2});
    for (int round = 0; round < s.rounds; ++round) {
        // Each group runs tether and its peers back to back, so that they share the moment's
        // load.
        std::map<std::string, double> go;
        auto run_go_case = [&](const char* name) {
            if (g.ready) {
                for (auto& [k, v] : run_go(g, name, s)) {
                    go[k] = v;
                }
            }
        };
        auto peer = [&](row& r, const char* key, double scale = 1) {
            if (auto it = go.find(key); it != go.end()) {
                r.peer.push_back(it->second / scale);
            }
        };
        if (want("pingpong")) {
            pp.tether.push_back(pingpong(wake::msg_ring, s.benchtime));
            pp_spin.tether.push_back(pingpong(wake::spin, s.benchtime));
            pp_spin_pinned.tether.push_back(pingpong(wake::spin_pinned, s.benchtime));
            pp_pipe.tether.push_back(pingpong(wake::pipe, s.benchtime));
            pp_one.tether.push_back(pingpong(wake::msg_ring, s.benchtime, 0));
            pp_locked.tether.push_back(pp.tether.back());
            pp_spin_locked.tether.push_back(pp_spin.tether.back());
            run_go_case("pingpong");
            run_go_case("pingpong_locked");
            for (row* r : {&pp, &pp_spin, &pp_spin_pinned, &pp_pipe, &pp_one}) {
                peer(*r, "pingpong.ns_per_round_trip");
            }
            for (row* r : {&pp_locked, &pp_spin_locked}) {
                peer(*r, "pingpong_locked.ns_per_round_trip");
            }
        }
        if (want("switch")) {
            sw.tether.push_back(switch_round_trip(wake::msg_ring, s.benchtime));
            sw.peer.push_back(switch_round_trip(wake::pipe, s.benchtime));
            sw_spin.tether.push_back(switch_round_trip(wake::spin, s.benchtime));
            sw_spin.peer.push_back(sw.tether.back());
            fl_ring.tether.push_back(sw.tether.back());
            if (std::optional<double> raw = raw_msg_ring(s.benchtime)) {
                fl_ring.peer.push_back(*raw);
            }
            fl_efd.tether.push_back(sw.peer.back());
            fl_efd.peer.push_back(raw_eventfd(s.benchtime));
        }
        if (want("stream")) {
            st.tether.push_back(stream(wake::msg_ring, s.benchtime));
            st_pipe.tether.push_back(stream(wake::pipe, s.benchtime));
            run_go_case("stream");
            peer(st, "stream.ns_per_message");
            peer(st_pipe, "stream.ns_per_message");
        }
        if (want("compute")) {
            cp.peer.push_back(compute(compute_rt, 1, s) / 1e6);
            cp.tether.push_back(compute(compute_rt, 2, s) / 1e6);
            cp_machine.peer.push_back(compute_threads(1, s) / 1e6);
            cp_machine.tether.push_back(compute_threads(2, s) / 1e6);
            cp_go.tether.push_back(cp.tether.back());
            run_go_case("compute");
            peer(cp_go, "compute.ns", 1e6);
        }
        std::fprintf(stderr, "round %d/%d done\n", round + 1, s.rounds);
    }

    std::vector<row> rows;
    for (row* r : {&pp, &pp_spin, &pp_spin_pinned, &pp_locked, &pp_spin_locked, &pp_one, &pp_pipe,
                   &sw, &sw_spin, &fl_ring, &fl_efd, &st, &st_pipe, &cp, &cp_machine, &cp_go}) {
        if (!r->tether.empty()) {
            rows.push_back(*r);
        }
    }
    fmt::print("\n| {:<26} | {:<16} | {:>10} | {:>19} | {:<16} | {:>10} | {:>19} | {:<13} | {:>7} "
               "| {:>7} |\n",
               "case", "tether", "median", "min..max", "peer", "median", "min..max", "unit",
               "ratio", "target");
    fmt::print("|{:-<28}|{:-<18}|{:->12}|{:->21}|{:-<18}|{:->12}|{:->21}|{:-<15}|{:->9}|{:->9}|\n",
               "", "", "", "", "", "", "", "", "", "");
    for (const row& r : rows) {
        auto q = r.ratio();
        std::string peer = r.peer.empty() ? "-" : fmt::format("{:.1f}", median(r.peer));
        fmt::print("| {:<26} | {:<16} | {:>10.1f} | {:>19} | {:<16} | {:>10} | {:>19} | {:<13} "
                   "| {:>7} | {:>7} |\n",
                   r.name, r.tether_label, median(r.tether), spread(r.tether), r.peer_label, peer,
                   spread(r.peer), r.unit, q ? fmt::format("{:.2f}x", *q) : "-",
                   r.target.empty() ? "-" : r.target);
    }
    fmt::print("\nratio: peer / tether (how many times faster tether is; for compute, the "
               "speedup of 2 loops over 1,\nand of 2 plain threads over 1: what the machine "
               "allowed meanwhile). Load at the end: {}.\n",
               loadavg());
    for (const row& r : rows) {
        if (r.goal > 0) {
            auto q = r.ratio();
            fmt::print("target {} {}: {}\n", r.name, r.target,
                       !q             ? "not measured"
                       : *q >= r.goal ? "met"
                                      : "NOT met");
        }
    }
    if (!s.json_file.empty() && !write_json(s.json_file, rows)) {
        return 1;
    }
    return 0;
}
