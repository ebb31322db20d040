// runtime_bench: tether's runtime (spawn, await, timers, cancellation, memory per task) against
// the same workloads written in Go (benches/peers/go/runtime_bench), on one core.
//
//   runtime_bench               every case, 5 rounds, Go side by side when `go` is in PATH
//   runtime_bench --quick       3 rounds, 50 ms per timed case, 100,000 sleepers
//   runtime_bench --no-go       tether only
//   runtime_bench --go          Go side by side, and fail if it can't be run
//   runtime_bench --json FILE   also write the results (medians and every sample) as JSON
//   runtime_bench --cpu N       pin this process, and the Go program it runs, to CPU N
//   runtime_bench --clock wall  time by the wall clock instead of the process's CPU time
//   runtime_bench --case NAME   only the case NAME (--list prints them)
//
// The machine this runs on is shared and noisy, so every case runs once per round, tether and
// then Go, and the table shows the median over the rounds. Timed cases run like Go's
// testing.B: n = 1, then n predicted from the last run, until one run lasts the bench time.
// Go runs with GOMAXPROCS=1; tether runs one loop on one thread.

#include "benches/support/process.hpp"
#include "context/context.hpp"
#include "context/detail/node.hpp"
#include "context/detail/timer_heap.hpp"
#include "context/with_cancel.hpp"
#include "runtime/async_fd.hpp"
#include "runtime/channel.hpp"
#include "runtime/detail/frame_allocator.hpp"
#include "runtime/detail/op.hpp"
#include "runtime/loop.hpp"
#include "runtime/sleep.hpp"
#include "runtime/spawn.hpp"
#include "runtime/task.hpp"

#include <liburing.h>

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <coroutine>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <fcntl.h>
#include <functional>
#include <map>
#include <optional>
#include <sched.h>
#include <span>
#include <string>
#include <string_view>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <utility>
#include <variant>
#include <vector>

#ifndef TETHER_RUNTIME_BENCH_GO_DIR
#define TETHER_RUNTIME_BENCH_GO_DIR "benches/peers/go/runtime_bench"
#endif

extern char** environ;

// ---- the frame probe -----------------------------------------------------------------------
//
// The sleepers' coroutine takes a `frame_probe` argument so that its promise, a task<void>
// promise that also records the size the compiler asks for, measures the exact frame.

namespace {

using tether::bench::build_go_program;
using tether::bench::go_program;
using tether::bench::json_escape;
using tether::bench::median;
using tether::bench::run_command;
struct frame_probe {};
std::size_t probed_frame_size = 0;

struct probed_promise : tether::detail::task_promise<void> {
    static void* operator new(std::size_t n) {
        probed_frame_size = n;
        return tether::detail::allocate_frame(n);
    }
    static void operator delete(void* p, std::size_t n) noexcept {
        tether::detail::deallocate_frame(p, n);
    }
};
} // namespace

template <class... Args>
struct std::coroutine_traits<tether::task<void>, frame_probe, Args...> {
    using promise_type = probed_promise;
};

namespace {

using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;
using tether::context;
using tether::join_handle;
using tether::task;

// Makes the optimizer assume `*p` is read and written by someone it can't see.
template <class T>
void escape(T* p) {
    asm volatile("" : : "g"(p) : "memory");
}

// What the cases time: the process's CPU time (default), or the wall clock. On a shared
// machine the CPU time is what a case costs on one core, whatever else runs; Go is timed the
// same way (its GC and other threads included).
bool wall_clock = false;

double now_ns() {
    timespec ts{};
    ::clock_gettime(wall_clock ? CLOCK_MONOTONIC : CLOCK_PROCESS_CPUTIME_ID, &ts);
    return static_cast<double>(ts.tv_sec) * 1e9 + static_cast<double>(ts.tv_nsec);
}

/// Measures from its construction.
struct stopwatch {
    double start = now_ns();
    double ns() const { return now_ns() - start; }
};

long rss_bytes() {
    std::FILE* f = std::fopen("/proc/self/statm", "r");
    if (f == nullptr) {
        return 0;
    }
    long size = 0;
    long resident = 0;
    int got = std::fscanf(f, "%ld %ld", &size, &resident);
    std::fclose(f);
    return got == 2 ? resident * ::sysconf(_SC_PAGESIZE) : 0;
}

// ---- settings and results ------------------------------------------------------------------

struct settings {
    int rounds = 5;
    steady::duration benchtime = 200ms;
    std::size_t sleepers = 1'000'000;
    std::size_t fanout = 100'000;
    std::size_t fanout_fds = 10'000; // RLIMIT_NOFILE is often 20,000 and can't be raised
    int cpu = -1;
};

/// Every sample of every metric, by "<case>.<metric>" (the metric names the unit).
using samples = std::map<std::string, std::vector<double>>;

// Runs the workload `n` times and returns the nanoseconds it took, like Go's testing.B:
// n = 1, then 1.2x what the last run predicts (at most 100x, at least one more), until a
// run lasts `bt`. Returns ns/op.
double measure(const std::function<double(std::int64_t)>& run, steady::duration bt) {
    std::int64_t n = 1;
    double ns = run(n);
    const double goal = static_cast<double>(std::chrono::nanoseconds(bt).count());
    while (ns < goal && n < 1'000'000'000) {
        std::int64_t last = n;
        auto next = static_cast<std::int64_t>(goal * static_cast<double>(n) / std::max(ns, 1.0));
        next += next / 5;
        next = std::min(next, 100 * last);
        next = std::max(next, last + 1);
        n = std::min<std::int64_t>(next, 1'000'000'000);
        ns = run(n);
    }
    return ns / static_cast<double>(n);
}

// ---- spawn+join, co_await, timeout churn ---------------------------------------------------

task<void> noop() {
    co_return;
}

[[gnu::noinline]] task<int> ready_task(int x) {
    co_return x + 1;
}

// task<T> without the context: the same frame allocator, result storage, final awaiter and
// symmetric transfer, but no context pointer to initialize or to copy from the awaiter. The
// difference between awaiting it and awaiting a task<T> is the cost of carrying the context.
template <class T>
class plain_task {
public:
    struct promise_type {
        std::coroutine_handle<> continuation_;
        std::variant<std::monostate, T, std::exception_ptr> r_;

        static void* operator new(std::size_t n) { return tether::detail::allocate_frame(n); }
        static void operator delete(void* p, std::size_t n) noexcept {
            tether::detail::deallocate_frame(p, n);
        }
        plain_task get_return_object() noexcept {
            return plain_task{std::coroutine_handle<promise_type>::from_promise(*this)};
        }
        std::suspend_always initial_suspend() const noexcept { return {}; }
        struct final_awaiter {
            bool await_ready() const noexcept { return false; }
            std::coroutine_handle<> await_suspend(std::coroutine_handle<promise_type> h) noexcept {
                std::coroutine_handle<> c = h.promise().continuation_;
                return c ? c : std::noop_coroutine();
            }
            void await_resume() const noexcept {}
        };
        final_awaiter final_suspend() const noexcept { return {}; }
        template <class U>
        void return_value(U&& v) {
            r_.template emplace<1>(std::forward<U>(v));
        }
        void unhandled_exception() noexcept { r_.template emplace<2>(std::current_exception()); }
    };
    using handle_type = std::coroutine_handle<promise_type>;

    explicit plain_task(handle_type h) noexcept : h_(h) {}
    plain_task(plain_task&& o) noexcept : h_(std::exchange(o.h_, {})) {}
    plain_task& operator=(plain_task&&) = delete;
    ~plain_task() {
        if (h_) {
            h_.destroy();
        }
    }

    struct awaiter {
        handle_type h;
        bool await_ready() const noexcept { return false; }
        std::coroutine_handle<> await_suspend(std::coroutine_handle<> parent) noexcept {
            h.promise().continuation_ = parent;
            return h;
        }
        T await_resume() {
            auto& r = h.promise().r_;
            if (r.index() == 2) {
                std::rethrow_exception(std::get<2>(r));
            }
            return std::move(std::get<1>(r));
        }
    };
    awaiter operator co_await() && noexcept { return awaiter{h_}; }

private:
    handle_type h_;
};

[[gnu::noinline]] plain_task<int> plain_ready_task(int x) {
    co_return x + 1;
}

task<double> spawn_join_loop(std::int64_t n) {
    stopwatch t0;
    for (std::int64_t i = 0; i < n; ++i) {
        join_handle<void> h = co_await tether::spawn(noop());
        if (tether::result<void> r = co_await h; !r) {
            std::abort();
        }
    }
    co_return t0.ns();
}

// n awaits of an already finished task made by `Make` (ready_task or plain_ready_task).
template <auto Make>
task<double> await_loop(std::int64_t n) {
    int sum = 0;
    stopwatch t0;
    for (std::int64_t i = 0; i < n; ++i) {
        sum += co_await Make(static_cast<int>(i));
    }
    double ns = t0.ns();
    escape(&sum);
    co_return ns;
}

// Go's chan_pingpong: a value sent to a task and back over two unbuffered channels; the
// echoing task ends when `ping` is closed.
task<void> pong_task(tether::channel<int>* ping, tether::channel<int>* pong) {
    for (;;) {
        tether::result<int> v = co_await ping->receive();
        if (!v) {
            co_return;
        }
        if (!co_await pong->send(*v)) {
            co_return;
        }
    }
}

task<double> chan_pingpong_loop(std::int64_t n) {
    tether::channel<int> ping;
    tether::channel<int> pong;
    join_handle<void> echo = co_await tether::spawn(pong_task(&ping, &pong));
    stopwatch t0;
    for (std::int64_t i = 0; i < n; ++i) {
        if (!co_await ping.send(static_cast<int>(i))) {
            std::abort();
        }
        tether::result<int> v = co_await pong.receive();
        if (!v || *v != static_cast<int>(i)) {
            std::abort();
        }
    }
    double ns = t0.ns();
    ping.close();
    (void)co_await echo;
    co_return ns;
}

// A call bounded by a deadline that is never reached: one context deadline scheduled on the
// loop's timers and unscheduled per op (Go: WithTimeout, call, cancel).
task<double> timeout_churn_loop(std::int64_t n) {
    int sum = 0;
    stopwatch t0;
    for (std::int64_t i = 0; i < n; ++i) {
        sum += co_await tether::with_timeout(1h, ready_task(static_cast<int>(i)));
    }
    double ns = t0.ns();
    escape(&sum);
    co_return ns;
}

// ---- 1,000,000 sleeping tasks --------------------------------------------------------------
//
// Run in a child process of its own (`--child sleepers N`), so that its RSS delta is not
// hidden by memory that earlier cases freed to malloc.

task<void> sleeper(frame_probe) {
    (void)co_await tether::sleep_for(1h);
}

struct sleepers_out {
    double create_ns = 0;
    double cancel_ns = 0;
    long rss_delta = 0;
    std::size_t not_joined = 0;
};

task<void> sleepers_main(std::size_t n, sleepers_out* out) {
    context parent = co_await tether::this_coro::context;
    auto [ctx, cancel] = tether::with_cancel(parent);
    std::vector<join_handle<void>> hs(n); // touched now, not counted below
    long before = rss_bytes();
    stopwatch t0;
    for (auto& h : hs) {
        h = tether::spawn(ctx, sleeper(frame_probe{}));
    }
    {
        // Queued after every sleeper: when it has run, they have all reached their sleep.
        join_handle<void> marker = tether::spawn(ctx, noop());
        (void)co_await marker;
    }
    out->create_ns = t0.ns();
    out->rss_delta = rss_bytes() - before;
    t0 = stopwatch{};
    cancel();
    for (auto& h : hs) {
        if (tether::result<void> r = co_await h; !r) {
            ++out->not_joined;
        }
    }
    out->cancel_ns = t0.ns();
}

int run_sleepers_child(std::size_t n) {
    tether::loop l;
    sleepers_out out;
    l.block_on(sleepers_main(n, &out));
    if (out.not_joined != 0) {
        fmt::print(stderr, "runtime_bench: {} sleepers were not joined\n", out.not_joined);
        return 1;
    }
    double dn = static_cast<double>(n);
    fmt::print("result sleepers.create_ns_per_task {:.3f}\n", out.create_ns / dn);
    fmt::print("result sleepers.bytes_per_task {:.3f}\n", static_cast<double>(out.rss_delta) / dn);
    fmt::print("result sleepers.cancel_ns_per_task {:.3f}\n", out.cancel_ns / dn);
    fmt::print("result sleepers.frame_bytes {}\n", probed_frame_size);
    return 0;
}

// ---- cancellation fan-out ------------------------------------------------------------------

// A read of an fd as an io_uring operation awaited under the task's context: the runtime's
// uring_op, which is canceled in the kernel (IORING_OP_ASYNC_CANCEL) when the context is done.
class read_op : public tether::detail::uring_op {
public:
    read_op(int fd, void* buf, unsigned len) noexcept : fd_(fd), buf_(buf), len_(len) {
        prep = [](uring_op* op, void* sqe) noexcept {
            auto* self = static_cast<read_op*>(op);
            io_uring_prep_read(static_cast<io_uring_sqe*>(sqe), self->fd_, self->buf_, self->len_,
                               0);
        };
    }
    bool await_ready() const noexcept { return false; }
    template <class P>
    bool await_suspend(std::coroutine_handle<P> h) noexcept {
        return start(tether::detail::context_of(h), h);
    }
    tether::result<int> await_resume() const noexcept { return outcome(); }

private:
    int fd_;
    void* buf_;
    unsigned len_;
};

task<void> blocked_reader(int fd, std::size_t* canceled) {
    std::uint64_t v = 0;
    tether::result<int> r = co_await read_op(fd, &v, sizeof v);
    if (!r && r.error() == tether::errc::canceled) {
        ++*canceled;
    }
}

// The same read through an async_fd: the task waits in user space on the fd's one poll, and
// a cancel unlinks it with no syscall.
task<void> blocked_fd_reader(tether::async_fd& fd, std::size_t* canceled) {
    std::uint64_t v = 0;
    tether::result<std::size_t> r = co_await fd.read_some(std::as_writable_bytes(std::span(&v, 1)));
    if (!r && r.error() == tether::errc::canceled) {
        ++*canceled;
    }
}

task<void> done_waiter(std::size_t* canceled) {
    context mine = co_await tether::this_coro::context;
    // Waiting for its own context: resumes with success when the root is canceled.
    if (tether::result<void> r = co_await mine.done(); r) {
        ++*canceled;
    }
}

// What the fan-out's tasks wait on.
enum class fanout_wait {
    io,   // an io_uring read each, canceled in the kernel
    fd,   // a read through an async_fd each, queued in user space on the fd's poll
    done, // ctx.done()
};

// n tasks suspended (on reads of `fds` eventfds that are never written, or on ctx.done()),
// spawned under one root; returns the nanoseconds from canceling the root until every task
// has resumed and been joined.
task<double> fanout_main(std::size_t n, std::vector<int> fds, fanout_wait how) {
    context parent = co_await tether::this_coro::context;
    auto [ctx, cancel] = tether::with_cancel(parent);
    std::vector<join_handle<void>> hs(n);
    std::size_t canceled = 0;
    std::vector<tether::async_fd> afds;
    if (how == fanout_wait::fd) {
        afds.reserve(fds.size());
        for (int fd : fds) {
            afds.emplace_back(fd);
        }
    }
    for (std::size_t i = 0; i < n; ++i) {
        switch (how) {
        case fanout_wait::io:
            hs[i] = tether::spawn(ctx, blocked_reader(fds[i % fds.size()], &canceled));
            break;
        case fanout_wait::fd:
            hs[i] = tether::spawn(ctx, blocked_fd_reader(afds[i % afds.size()], &canceled));
            break;
        case fanout_wait::done:
            hs[i] = tether::spawn(ctx, done_waiter(&canceled));
            break;
        }
    }
    for (int turn = 0; turn < 2; ++turn) {
        // The first marker runs after every task has suspended; the second after the loop
        // has entered the kernel once, so every read has been submitted.
        join_handle<void> marker = tether::spawn(ctx, noop());
        (void)co_await marker;
    }
    stopwatch t0;
    cancel();
    for (auto& h : hs) {
        (void)co_await h;
    }
    double ns = t0.ns();
    if (canceled != n) {
        fmt::print(stderr, "runtime_bench: {} of {} tasks resumed canceled\n", canceled, n);
        std::abort();
    }
    for (tether::async_fd& a : afds) {
        (void)a.release(); // the caller closes the eventfds; the polls are canceled
    }
    co_return ns;
}

// ---- IORING_OP_ASYNC_CANCEL vs IORING_OP_LINK_TIMEOUT --------------------------------------
//
// Two ways to bound a read by a deadline, on a ring of their own with raw liburing:
// - link: each read is linked to an IORING_OP_LINK_TIMEOUT; the kernel arms a timer per read
//   and cancels the read when it fires (two SQEs and two CQEs per read, always);
// - cancel: the deadline is a user-space timer (tether's timer heap), and when it passes an
//   IORING_OP_ASYNC_CANCEL is submitted for the read (one SQE and one CQE per read that
//   completes in time; one more of each for a read that is canceled).
// Measured for reads that complete in time (data already in a pipe) and for reads whose
// deadline passes (an eventfd never written; the deadline is already due), per read.

class raw_ring {
public:
    explicit raw_ring(unsigned entries) {
        io_uring_params p{};
        p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_CQSIZE;
        p.cq_entries = entries * 4;
        if (io_uring_queue_init_params(entries, &ring_, &p) != 0) {
            p = {};
            p.flags = IORING_SETUP_CQSIZE;
            p.cq_entries = entries * 4;
            int r = io_uring_queue_init_params(entries, &ring_, &p);
            if (r != 0) {
                throw std::system_error(-r, std::system_category(), "io_uring_queue_init");
            }
        }
    }
    raw_ring(const raw_ring&) = delete;
    raw_ring& operator=(const raw_ring&) = delete;
    ~raw_ring() { io_uring_queue_exit(&ring_); }
    io_uring* get() noexcept { return &ring_; }

    // Submits what is queued and reaps `want` CQEs; returns how many had res < 0.
    unsigned submit_and_reap(unsigned want) {
        unsigned got = 0;
        unsigned negative = 0;
        io_uring_submit_and_wait(&ring_, want);
        while (got < want) {
            io_uring_cqe* cqe = nullptr;
            if (io_uring_wait_cqe(&ring_, &cqe) != 0) {
                std::abort();
            }
            unsigned head;
            unsigned seen = 0;
            io_uring_for_each_cqe(&ring_, head, cqe) {
                negative += cqe->res < 0 ? 1 : 0;
                ++seen;
            }
            io_uring_cq_advance(&ring_, seen);
            got += seen;
        }
        return negative;
    }

private:
    io_uring ring_{};
};

constexpr unsigned deadline_batch = 256;

struct deadline_results {
    double link_in_time = 0;
    double cancel_in_time = 0;
    double link_expired = 0;
    double cancel_expired = 0;
};

deadline_results measure_deadlines(steady::duration bt) {
    raw_ring ring(4 * deadline_batch);
    io_uring* r = ring.get();
    int p[2];
    if (::pipe2(p, O_CLOEXEC) != 0) {
        throw std::system_error(errno, std::system_category(), "pipe");
    }
    int efd = ::eventfd(0, EFD_CLOEXEC); // blocking: io_uring polls it; never written
    std::array<std::uint64_t, deadline_batch> bufs{};
    std::array<tether::detail::timer_node, deadline_batch> timers{};
    tether::detail::timer_heap heap;
    const std::array<char, deadline_batch * 8> data{};
    __kernel_timespec long_ts{.tv_sec = 3600, .tv_nsec = 0};
    __kernel_timespec due_ts{.tv_sec = 0, .tv_nsec = 1}; // the deadline has passed

    auto link_batch = [&](bool in_time, int fd) {
        for (unsigned i = 0; i < deadline_batch; ++i) {
            io_uring_sqe* sqe = io_uring_get_sqe(r);
            io_uring_prep_read(sqe, fd, &bufs[i], 8, 0);
            sqe->flags |= IOSQE_IO_LINK;
            io_uring_sqe_set_data64(sqe, i + 1);
            sqe = io_uring_get_sqe(r);
            io_uring_prep_link_timeout(sqe, in_time ? &long_ts : &due_ts, 0);
            io_uring_sqe_set_data64(sqe, 0);
        }
        ring.submit_and_reap(2 * deadline_batch);
    };
    auto cancel_batch = [&](bool in_time, int fd) {
        auto now = steady::now();
        for (unsigned i = 0; i < deadline_batch; ++i) {
            timers[i].when = in_time ? now + 1h : now;
            heap.push(&timers[i]);
            io_uring_sqe* sqe = io_uring_get_sqe(r);
            io_uring_prep_read(sqe, fd, &bufs[i], 8, 0);
            io_uring_sqe_set_data64(sqe, i + 1);
        }
        if (in_time) {
            ring.submit_and_reap(deadline_batch);
            for (auto& t : timers) {
                heap.remove(&t);
            }
            return;
        }
        io_uring_submit(r);
        // The deadlines are due: cancel each read, then reap the reads and the cancels.
        while (tether::detail::timer_node* t = heap.pop_due(steady::now())) {
            auto i = static_cast<std::uint64_t>(t - timers.data());
            io_uring_sqe* sqe = io_uring_get_sqe(r);
            io_uring_prep_cancel64(sqe, i + 1, 0);
            io_uring_sqe_set_data64(sqe, 0);
        }
        ring.submit_and_reap(2 * deadline_batch);
    };
    auto run = [&](auto&& batch, bool in_time) {
        return measure(
                   [&](std::int64_t n) {
                       stopwatch t0;
                       for (std::int64_t i = 0; i < n; ++i) {
                           if (in_time && ::write(p[1], data.data(), data.size()) < 0) {
                               std::abort();
                           }
                           batch(in_time, in_time ? p[0] : efd);
                       }
                       return t0.ns();
                   },
                   bt) /
               deadline_batch;
    };
    deadline_results out;
    out.link_in_time = run(link_batch, true);
    out.cancel_in_time = run(cancel_batch, true);
    out.link_expired = run(link_batch, false);
    out.cancel_expired = run(cancel_batch, false);
    ::close(p[0]);
    ::close(p[1]);
    ::close(efd);
    return out;
}

} // namespace

namespace {

// ---- child processes -----------------------------------------------------------------------

// Runs `argv` with `env`, calling `on_line` for each line of its stdout and stderr. Returns its
// exit status, or -1 if it couldn't be started.
// Parses "result <key> <value>", the lines both the Go program and `--child` print.
std::optional<std::pair<std::string, double>> parse_result(const std::string& line) {
    constexpr std::string_view prefix = "result ";
    if (!line.starts_with(prefix)) {
        return std::nullopt;
    }
    std::size_t sp = line.find(' ', prefix.size());
    if (sp == std::string::npos) {
        return std::nullopt;
    }
    char* end = nullptr;
    double v = std::strtod(line.c_str() + sp + 1, &end);
    if (end == line.c_str() + sp + 1) {
        return std::nullopt;
    }
    return std::pair{line.substr(prefix.size(), sp - prefix.size()), v};
}

std::string self_exe() {
    std::array<char, 4096> buf{};
    ssize_t len = ::readlink("/proc/self/exe", buf.data(), buf.size() - 1);
    return len > 0 ? std::string(buf.data(), static_cast<std::size_t>(len)) : std::string();
}

std::vector<std::string> environment() {
    std::vector<std::string> env;
    for (char** e = environ; *e != nullptr; ++e) {
        env.emplace_back(*e);
    }
    return env;
}

// ---- the Go side ---------------------------------------------------------------------------

// The Go side: its program (built by build_go_program) and the Go version it reports.
struct go_side : go_program {
    std::string version;
};

go_side build_go() {
    return {build_go_program(TETHER_RUNTIME_BENCH_GO_DIR, "runtime-bench", "runtime_bench_go", 1),
            {}};
}

// ---- the cases -----------------------------------------------------------------------------

const std::vector<std::string> case_names = {
    "spawn_join",       "await_ready",      "chan_pingpong",      "timeout_churn",  "sleepers",
    "cancel_fanout_io", "cancel_fanout_fd", "cancel_fanout_done", "uring_deadline",
};

bool channel_available() {
    return true;
}

int go_flags_ms(steady::duration d) {
    return static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(d).count());
}

// Runs one case of the Go program and adds its results to `go`; returns false if it failed.
bool run_go_case(const go_side& g, const std::string& name, const settings& s, samples& go) {
    std::vector<std::string> argv{g.binary,
                                  "-case",
                                  name,
                                  "-benchtime",
                                  fmt::format("{}ms", go_flags_ms(s.benchtime)),
                                  "-sleepers",
                                  std::to_string(s.sleepers),
                                  "-fanout",
                                  std::to_string(s.fanout),
                                  "-fanout-fds",
                                  std::to_string(s.fanout_fds),
                                  "-clock",
                                  wall_clock ? "wall" : "cpu"};
    std::vector<std::string> tail;
    int st = run_command(argv, g.env, [&](const std::string& line) {
        if (auto r = parse_result(line)) {
            go[r->first].push_back(r->second);
        } else {
            tail.push_back(line);
        }
    });
    if (st != 0) {
        fmt::print(stderr, "runtime_bench: Go's {} failed (status {}):\n  {}\n", name, st,
                   fmt::join(tail, "\n  "));
        return false;
    }
    return true;
}

std::vector<int> open_eventfds(std::size_t n) {
    std::vector<int> fds;
    for (std::size_t i = 0; i < n; ++i) {
        int fd = ::eventfd(0, EFD_CLOEXEC);
        if (fd < 0) {
            throw std::system_error(errno, std::system_category(), "eventfd");
        }
        fds.push_back(fd);
    }
    return fds;
}

void run_tether_case(const std::string& name, const settings& s, tether::loop& l, samples& t) {
    auto timed = [&](auto make) {
        return measure([&](std::int64_t n) { return l.block_on(make(n)); }, s.benchtime);
    };
    if (name == "spawn_join") {
        t["spawn_join.ns_per_op"].push_back(timed(spawn_join_loop));
    } else if (name == "await_ready") {
        // Two of each, alternated, keeping the lower: the difference is a nanosecond or two.
        double a = timed(await_loop<ready_task>);
        double p = timed(await_loop<plain_ready_task>);
        a = std::min(a, timed(await_loop<ready_task>));
        p = std::min(p, timed(await_loop<plain_ready_task>));
        t["await_ready.ns_per_op"].push_back(a);
        t["await_plain.ns_per_op"].push_back(p);
        t["context_carry.ns"].push_back(a - p);
    } else if (name == "chan_pingpong") {
        t["chan_pingpong.ns_per_op"].push_back(timed(chan_pingpong_loop));
    } else if (name == "timeout_churn") {
        t["timeout_churn.ns_per_op"].push_back(timed(timeout_churn_loop));
    } else if (name == "sleepers") {
        std::vector<std::string> tail;
        int st = run_command({self_exe(), "--child", "sleepers", std::to_string(s.sleepers),
                              wall_clock ? "wall" : "cpu"},
                             environment(), [&](const std::string& line) {
                                 if (auto r = parse_result(line)) {
                                     t[r->first].push_back(r->second);
                                 } else {
                                     tail.push_back(line);
                                 }
                             });
        if (st != 0) {
            fmt::print(stderr, "runtime_bench: the sleepers child failed (status {}):\n  {}\n", st,
                       fmt::join(tail, "\n  "));
            std::exit(1);
        }
    } else if (name == "cancel_fanout_io" || name == "cancel_fanout_fd" ||
               name == "cancel_fanout_done") {
        fanout_wait how = name == "cancel_fanout_io"   ? fanout_wait::io
                          : name == "cancel_fanout_fd" ? fanout_wait::fd
                                                       : fanout_wait::done;
        std::vector<int> fds =
            how != fanout_wait::done ? open_eventfds(s.fanout_fds) : std::vector<int>{};
        double ns = l.block_on(fanout_main(s.fanout, fds, how));
        l.run_until_idle(); // the canceled polls of the async_fd case complete
        for (int fd : fds) {
            ::close(fd);
        }
        t[name + ".ms"].push_back(ns / 1e6);
        t[name + ".ns_per_task"].push_back(ns / static_cast<double>(s.fanout));
    } else if (name == "uring_deadline") {
        deadline_results d = measure_deadlines(s.benchtime);
        t["uring_deadline.link_in_time_ns"].push_back(d.link_in_time);
        t["uring_deadline.cancel_in_time_ns"].push_back(d.cancel_in_time);
        t["uring_deadline.link_expired_ns"].push_back(d.link_expired);
        t["uring_deadline.cancel_expired_ns"].push_back(d.cancel_expired);
    }
}

// ---- output --------------------------------------------------------------------------------

std::optional<double> median_of(const samples& s, const std::string& key) {
    auto it = s.find(key);
    if (it == s.end() || it->second.empty()) {
        return std::nullopt;
    }
    return median(it->second);
}

/// The smallest and the largest sample of `key`, the spread of its rounds.
struct spread {
    double min = 0;
    double max = 0;
};

std::optional<spread> spread_of(const samples& s, const std::string& key) {
    auto it = s.find(key);
    if (it == s.end() || it->second.empty()) {
        return std::nullopt;
    }
    auto [lo, hi] = std::minmax_element(it->second.begin(), it->second.end());
    return spread{*lo, *hi};
}

enum class target { none, faster_3x, under_2ns, at_most_256 };

struct row_def {
    std::string label;
    std::string key; // tether's sample key
    std::string unit;
    target goal;
    bool go_has_it = true;
    std::string go_key = {}; // Go's sample key, if not the same
    const std::string& go_sample_key() const { return go_key.empty() ? key : go_key; }
};

struct row {
    row_def def;
    std::optional<double> tether; // medians
    std::optional<double> go;
    std::optional<spread> tether_spread;
    std::optional<spread> go_spread;
    std::optional<double> ratio() const {
        if (tether && go && *tether > 0) {
            return *go / *tether;
        }
        return std::nullopt;
    }
    // Returns whether the target is met, or nullopt where there is nothing to judge.
    std::optional<bool> met() const {
        switch (def.goal) {
        case target::faster_3x:
            if (auto q = ratio()) {
                return *q >= 3.0;
            }
            return std::nullopt;
        case target::under_2ns:
            return tether ? std::optional<bool>(*tether < 2.0) : std::nullopt;
        case target::at_most_256:
            return tether ? std::optional<bool>(*tether <= 256.0) : std::nullopt;
        case target::none:
            break;
        }
        return std::nullopt;
    }
};

std::string format_value(double v) {
    double a = std::abs(v);
    if (a >= 100) {
        return fmt::format("{:.0f}", v);
    }
    if (a >= 10) {
        return fmt::format("{:.1f}", v);
    }
    return fmt::format("{:.2f}", v);
}

std::string target_text(target t) {
    switch (t) {
    case target::faster_3x:
        return ">= 3x";
    case target::under_2ns:
        return "< 2 ns";
    case target::at_most_256:
        return "<= 256 B";
    case target::none:
        break;
    }
    return "";
}

std::vector<row_def> row_defs(const settings& s) {
    auto count = [](std::size_t n) {
        return n % 1'000'000 == 0 ? fmt::format("{}M", n / 1'000'000)
               : n % 1000 == 0    ? fmt::format("{}k", n / 1000)
                                  : std::to_string(n);
    };
    std::string sl = count(s.sleepers);
    std::string fo = count(s.fanout);
    return {
        {"spawn + join (Go: go + WaitGroup)", "spawn_join.ns_per_op", "ns/op", target::faster_3x},
        {"co_await ready task (Go: call f(ctx))", "await_ready.ns_per_op", "ns/op",
         target::faster_3x},
        {"  same, task without context", "await_plain.ns_per_op", "ns/op", target::none, false},
        {"  context carry per await", "context_carry.ns", "ns", target::under_2ns, false},
        {"channel ping-pong, round trip", "chan_pingpong.ns_per_op", "ns/op", target::faster_3x},
        {"timer churn: with_timeout(1h, call)", "timeout_churn.ns_per_op", "ns/op",
         target::faster_3x},
        {sl + " sleepers: create", "sleepers.create_ns_per_task", "ns/task", target::faster_3x},
        {sl + " sleepers: RSS per task", "sleepers.bytes_per_task", "B/task", target::faster_3x},
        {"  coroutine frame", "sleepers.frame_bytes", "B", target::none, false},
        {"  beyond the frame", "sleepers.overhead_bytes", "B/task", target::at_most_256, false},
        {sl + " sleepers: cancel all", "sleepers.cancel_ns_per_task", "ns/task", target::faster_3x},
        {"cancel fan-out, " + fo + " reads on I/O, kernel cancel each", "cancel_fanout_io.ms", "ms",
         target::none},
        {"cancel fan-out, " + fo + " reads on I/O, async_fd", "cancel_fanout_fd.ms", "ms",
         target::faster_3x, true, "cancel_fanout_io.ms"},
        {"cancel fan-out, " + fo + " in ctx.done()", "cancel_fanout_done.ms", "ms",
         target::faster_3x},
    };
}

// "min..max" of a row's rounds, "-" without samples.
std::string format_spread(const std::optional<spread>& s) {
    return s ? format_value(s->min) + ".." + format_value(s->max) : "-";
}

void print_table(const std::vector<row>& rows) {
    std::size_t w = 4;
    std::size_t sw = 8; // the spread columns
    for (const auto& r : rows) {
        w = std::max(w, r.def.label.size());
        sw = std::max(
            {sw, format_spread(r.tether_spread).size(), format_spread(r.go_spread).size()});
    }
    fmt::print("\n{:<{}} | {:>10} | {:>{}} | {:>10} | {:>{}} | {:<7} | {:>9} | {}\n", "case", w,
               "tether", "min..max", sw, "Go", "min..max", sw, "unit", "Go/tether", "target");
    fmt::print("{:-<{}}-|-{:->10}-|-{:->{}}-|-{:->10}-|-{:->{}}-|-{:-<7}-|-{:->9}-|-{:-<16}\n", "",
               w, "", "", sw, "", "", sw, "", "", "");
    for (const auto& r : rows) {
        std::string t = r.tether ? format_value(*r.tether) : "n/a";
        std::string g = r.go ? format_value(*r.go) : "-";
        std::string q = r.ratio() ? fmt::format("{:.1f}x", *r.ratio()) : "-";
        std::string verdict;
        if (r.def.goal != target::none) {
            auto m = r.met();
            verdict = fmt::format("{}: {}", target_text(r.def.goal),
                                  !m   ? "n/a"
                                  : *m ? "met"
                                       : "MISSED");
        }
        fmt::print("{:<{}} | {:>10} | {:>{}} | {:>10} | {:>{}} | {:<7} | {:>9} | {}\n", r.def.label,
                   w, t, format_spread(r.tether_spread), sw, g, format_spread(r.go_spread), sw,
                   r.def.unit, q, verdict);
    }
}

std::string json_samples(const samples& s, const std::string& key) {
    auto it = s.find(key);
    if (it == s.end()) {
        return "[]";
    }
    std::vector<std::string> v;
    for (double x : it->second) {
        v.push_back(fmt::format("{:.3f}", x));
    }
    return fmt::format("[{}]", fmt::join(v, ", "));
}

std::string json_number(std::optional<double> v) {
    return v ? fmt::format("{:.3f}", *v) : "null";
}

bool write_json(const std::string& file, const settings& s, const std::vector<row>& rows,
                const samples& t, const samples& go, const go_side& g,
                const std::vector<std::string>& notes) {
    std::string out = "{\n";
    out += fmt::format("  \"rounds\": {}, \"benchtime_ms\": {}, \"sleepers\": {}, \"fanout\": {}, "
                       "\"fanout_fds\": {}, \"cpu\": {}, \"clock\": \"{}\",\n",
                       s.rounds, go_flags_ms(s.benchtime), s.sleepers, s.fanout, s.fanout_fds,
                       s.cpu, wall_clock ? "wall" : "cpu");
    out += fmt::format("  \"go\": {{\"ran\": {}, \"version\": \"{}\", \"note\": \"{}\"}},\n",
                       g.ready ? "true" : "false", json_escape(g.version), json_escape(g.note));
    out += "  \"cases\": [\n";
    for (std::size_t i = 0; i < rows.size(); ++i) {
        const row& r = rows[i];
        auto m = r.met();
        out += fmt::format(
            "    {{\"name\": \"{}\", \"key\": \"{}\", \"unit\": \"{}\", \"tether\": {}, "
            "\"go\": {}, \"ratio\": {}, \"target\": \"{}\", \"met\": {}, "
            "\"tether_samples\": {}, \"go_samples\": {}}}{}\n",
            json_escape(r.def.label), r.def.key, r.def.unit, json_number(r.tether),
            json_number(r.go), json_number(r.ratio()), target_text(r.def.goal),
            m ? (*m ? "true" : "false") : "null", json_samples(t, r.def.key),
            json_samples(go, r.def.go_sample_key()), i + 1 < rows.size() ? "," : "");
    }
    out += "  ],\n  \"uring_deadline\": {";
    std::vector<std::string> d;
    for (const char* k :
         {"link_in_time_ns", "cancel_in_time_ns", "link_expired_ns", "cancel_expired_ns"}) {
        std::string key = std::string("uring_deadline.") + k;
        d.push_back(fmt::format("\"{}\": {}", k, json_number(median_of(t, key))));
    }
    out += fmt::format("{}}},\n  \"notes\": [", fmt::join(d, ", "));
    for (std::size_t i = 0; i < notes.size(); ++i) {
        out += fmt::format("{}\"{}\"", i ? ", " : "", json_escape(notes[i]));
    }
    out += "]\n}\n";
    std::FILE* f = std::fopen(file.c_str(), "w");
    if (f == nullptr) {
        fmt::print(stderr, "runtime_bench: can't write {}: {}\n", file, std::strerror(errno));
        return false;
    }
    bool ok = std::fwrite(out.data(), 1, out.size(), f) == out.size();
    ok = std::fclose(f) == 0 && ok;
    if (!ok) {
        fmt::print(stderr, "runtime_bench: can't write {}\n", file);
    }
    return ok;
}

void usage(std::FILE* to) {
    fmt::print(to,
               "usage: runtime_bench [--quick] [--rounds N] [--benchtime MS] [--go | --no-go]\n"
               "                     [--clock cpu|wall] [--cpu N] [--case NAME]\n"
               "                     [--json FILE] [--list]\n"
               "  --quick          3 rounds, 50 ms per timed case, 100,000 sleepers\n"
               "  --rounds N       run every case N times (default 5) and report medians\n"
               "  --benchtime MS   milliseconds per timed case (default 200)\n"
               "  --sleepers N     tasks in the sleepers case (default 1,000,000)\n"
               "  --fanout N       tasks in the cancel fan-out cases (default 100,000)\n"
               "  --go             run Go's side and fail if it can't (default: run it when\n"
               "                   `go` is in PATH, and say so when it isn't)\n"
               "  --no-go          tether only\n"
               "  --clock C        time cases by the process's CPU time (cpu, the default) or by\n"
               "                   the wall clock (wall)\n"
               "  --cpu N          pin to CPU N (the Go program inherits it)\n"
               "  --case NAME      only NAME (see --list)\n"
               "  --json FILE      also write medians and samples to FILE\n"
               "  --list           print the case names and exit\n");
}

// Raises the soft open-file limit to the hard one (the fan-out opens thousands of eventfds).
void raise_nofile() {
    rlimit rl{};
    if (::getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        ::setrlimit(RLIMIT_NOFILE, &rl);
    }
}

std::size_t nofile_limit() {
    rlimit rl{};
    return ::getrlimit(RLIMIT_NOFILE, &rl) == 0 ? static_cast<std::size_t>(rl.rlim_cur) : 1024;
}

} // namespace

int main(int argc, char** argv) {
    if (argc == 5 && std::string_view(argv[1]) == "--child" &&
        std::string_view(argv[2]) == "sleepers") {
        wall_clock = std::string_view(argv[4]) == "wall";
        return run_sleepers_child(std::strtoull(argv[3], nullptr, 10));
    }
    settings s;
    std::string json_file;
    std::string only;
    enum class go_mode { if_found, required, off } gm = go_mode::if_found;
    for (int i = 1; i < argc; ++i) {
        std::string_view a = argv[i];
        auto value = [&](std::string_view flag) -> std::string {
            if (i + 1 >= argc) {
                fmt::print(stderr, "runtime_bench: {} needs a value\n", flag);
                std::exit(2);
            }
            return argv[++i];
        };
        auto number = [&](std::string_view flag) -> long {
            std::string v = value(flag);
            char* end = nullptr;
            long n = std::strtol(v.c_str(), &end, 10);
            if (end == v.c_str() || *end != '\0' || n < 0) {
                fmt::print(stderr, "runtime_bench: bad {} {}\n", flag, v);
                std::exit(2);
            }
            return n;
        };
        if (a == "--quick") {
            s.rounds = 3;
            s.benchtime = 50ms;
            s.sleepers = 100'000;
        } else if (a == "--rounds") {
            s.rounds = std::max(1, static_cast<int>(number(a)));
        } else if (a == "--benchtime") {
            s.benchtime = std::chrono::milliseconds(std::max(1L, number(a)));
        } else if (a == "--sleepers") {
            s.sleepers = static_cast<std::size_t>(std::max(1L, number(a)));
        } else if (a == "--fanout") {
            s.fanout = static_cast<std::size_t>(std::max(1L, number(a)));
        } else if (a == "--go") {
            gm = go_mode::required;
        } else if (a == "--no-go") {
            gm = go_mode::off;
        } else if (a == "--clock") {
            std::string v = value(a);
            if (v != "cpu" && v != "wall") {
                fmt::print(stderr, "runtime_bench: --clock is cpu or wall, not {}\n", v);
                return 2;
            }
            wall_clock = v == "wall";
        } else if (a == "--cpu") {
            s.cpu = static_cast<int>(number(a));
        } else if (a == "--case") {
            only = value(a);
            if (std::find(case_names.begin(), case_names.end(), only) == case_names.end()) {
                fmt::print(stderr, "runtime_bench: unknown case {} (see --list)\n", only);
                return 2;
            }
        } else if (a == "--json") {
            json_file = value(a);
        } else if (a == "--list") {
            for (const auto& n : case_names) {
                fmt::print("{}\n", n);
            }
            return 0;
        } else if (a == "--help" || a == "-h") {
            usage(stdout);
            return 0;
        } else {
            fmt::print(stderr, "runtime_bench: unknown argument {}\n", a);
            usage(stderr);
            return 2;
        }
    }

    if (s.cpu >= 0) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(s.cpu, &set);
        if (::sched_setaffinity(0, sizeof set, &set) != 0) {
            fmt::print(stderr, "runtime_bench: can't pin to CPU {}: {}\n", s.cpu,
                       std::strerror(errno));
            return 2;
        }
    }
    raise_nofile();
    // The fan-out shares its reads among eventfds; keep well under the open-file limit (the
    // Go side opens the same number).
    s.fanout_fds = std::min({s.fanout_fds, s.fanout, nofile_limit() / 2});

    std::optional<tether::loop> l;
    try {
        l.emplace();
    } catch (const tether::uring_unavailable& e) {
        fmt::print("runtime_bench: skipped: {}\n", e.what());
        return 77; // Meson: skipped
    }

    go_side g;
    if (gm != go_mode::off) {
        g = build_go();
        if (!g.ready && gm == go_mode::required) {
            fmt::print(stderr, "runtime_bench: {}\n", g.note);
            return 1;
        }
    }

    std::vector<std::string> cases;
    for (const auto& n : case_names) {
        if (only.empty() || only == n) {
            cases.push_back(n);
        }
    }
    fmt::print(stderr,
               "runtime_bench: {} rounds, {} ms per timed case, {} sleepers, fan-out {} over {} "
               "eventfds{}{}\n",
               s.rounds, go_flags_ms(s.benchtime), s.sleepers, s.fanout, s.fanout_fds,
               s.cpu >= 0 ? fmt::format(", pinned to CPU {}", s.cpu) : "",
               g.ready ? ", Go side by side (GOMAXPROCS=1)" : "");
    samples t;
    samples go;
    bool go_failed = false;
    for (int round = 1; round <= s.rounds; ++round) {
        for (const auto& name : cases) {
            if (name == "chan_pingpong" && !channel_available()) {
                if (g.ready && !go_failed) {
                    go_failed |= !run_go_case(g, name, s, go);
                }
                continue;
            }
            run_tether_case(name, s, *l, t);
            // The async_fd fan-out is compared with Go's fan-out on I/O, which runs once per
            // round for both rows.
            bool go_runs =
                name != "uring_deadline" &&
                (name != "cancel_fanout_fd" ||
                 std::find(cases.begin(), cases.end(), "cancel_fanout_io") == cases.end());
            if (g.ready && go_runs && !go_failed) {
                go_failed |= !run_go_case(
                    g, name == "cancel_fanout_fd" ? std::string("cancel_fanout_io") : name, s, go);
            }
            fmt::print(stderr, "  round {}/{}: {}\n", round, s.rounds, name);
        }
    }
    if (g.ready) {
        run_command({g.binary, "-case", "await_ready", "-benchtime", "1ms"}, g.env,
                    [&](const std::string& line) {
                        if (line.starts_with("info ")) {
                            g.version = line.substr(5);
                        }
                    });
    }

    // Derived: memory beyond the frame, per round.
    if (auto it = t.find("sleepers.bytes_per_task"); it != t.end()) {
        const auto& frames = t["sleepers.frame_bytes"];
        std::vector<double> over;
        for (std::size_t i = 0; i < it->second.size() && i < frames.size(); ++i) {
            over.push_back(it->second[i] - frames[i]);
        }
        t["sleepers.overhead_bytes"] = over;
    }

    std::vector<row> rows;
    for (auto& d : row_defs(s)) {
        bool wanted = only.empty() || d.key.starts_with(only + ".") ||
                      (only == "await_ready" &&
                       (d.key.starts_with("await_plain.") || d.key.starts_with("context_carry.")));
        if (!wanted) {
            continue;
        }
        row r{d, median_of(t, d.key), std::nullopt, spread_of(t, d.key), std::nullopt};
        if (d.go_has_it) {
            r.go = median_of(go, d.go_sample_key());
            r.go_spread = spread_of(go, d.go_sample_key());
        }
        rows.push_back(std::move(r));
    }

    std::vector<std::string> notes;
    notes.push_back(fmt::format(
        "median of {} rounds, min..max their spread; each round runs every case on tether, then on "
        "Go (GOMAXPROCS=1); "
        "one loop on one thread{}; times are {}",
        s.rounds, s.cpu >= 0 ? fmt::format(", both pinned to CPU {}", s.cpu) : "",
        wall_clock ? "wall-clock time"
                   : "the process's CPU time (user + system, every thread: Go's GC included), "
                     "which a busy machine inflates less than the wall clock"));
    notes.push_back("co_await ready task: Go has no lazy tasks; the same work there is a "
                    "call that takes ctx, which no coroutine frame can beat. The context's own "
                    "cost is the row below it: the same await with a task type that has no "
                    "context (best of two runs each per round)");
    if (!channel_available()) {
        notes.push_back("channel not available yet: runtime/channel.hpp has not landed, so the "
                        "ping-pong case shows Go's side only");
    }
    notes.push_back(fmt::format(
        "sleepers: each task is spawned (a child context of its own, so that it can be canceled "
        "alone) and sleeps 1h under it; RSS delta / tasks, measured in a fresh process. The "
        "frame is the sleeping coroutine's (its sleep awaiter included); beyond it: the child "
        "context's cancel state ({} B) with the spawn's fields ({} B) in one block, malloc "
        "headers, the timer heap slot and the ready queue the million spawns went through. "
        "Go: a goroutine in select on a 1h timer and ctx.Done()",
        sizeof(tether::detail::cancel_state),
        sizeof(tether::detail::spawn_base) - sizeof(tether::detail::cancel_state)));
    notes.push_back(fmt::format(
        "cancel fan-out on I/O: {} reads shared among {} eventfds that are never written (the "
        "open-file limit is {}). Kernel cancel each: every read is its own io_uring read, so "
        "canceling the root submits one IORING_OP_ASYNC_CANCEL per read and each task resumes "
        "on its read's own CQE (this row measures the kernel's price of ASYNC_CANCEL). "
        "async_fd: each eventfd is an async_fd with one poll in the kernel, its readers wait "
        "in user space and a cancel unlinks them with no syscall, as Go's poller does; the "
        ">= 3x target is this row's. Go (both rows): os.File reads through the poller; one "
        "goroutine per fd sets a past read deadline when the context is done",
        s.fanout, s.fanout_fds, nofile_limit()));

    print_table(rows);
    fmt::print("\n");

    auto lt = median_of(t, "uring_deadline.link_in_time_ns");
    auto ct = median_of(t, "uring_deadline.cancel_in_time_ns");
    auto le = median_of(t, "uring_deadline.link_expired_ns");
    auto ce = median_of(t, "uring_deadline.cancel_expired_ns");
    if (lt && ct && le && ce) {
        auto verdict = [](double link, double cancel) {
            return link < cancel ? fmt::format("LINK_TIMEOUT, {:.1f}x", cancel / link)
                                 : fmt::format("ASYNC_CANCEL, {:.1f}x", link / cancel);
        };
        fmt::print("deadline-bounded read (raw liburing, {} reads per batch) | LINK_TIMEOUT | "
                   "ASYNC_CANCEL | faster\n",
                   deadline_batch);
        fmt::print("{:-<56}-|-{:->12}-|-{:->12}-|-{:-<18}\n", "", "", "", "");
        fmt::print("{:<56} | {:>12} | {:>12} | {}\n", "read completes before its deadline, ns/read",
                   format_value(*lt), format_value(*ct), verdict(*lt, *ct));
        fmt::print("{:<56} | {:>12} | {:>12} | {}\n", "deadline passes, read canceled, ns/read",
                   format_value(*le), format_value(*ce), verdict(*le, *ce));
        fmt::print("\n");
        notes.push_back(
            "LINK_TIMEOUT: a timeout SQE linked to each read, so a kernel timer is armed and "
            "disarmed per read and every read costs two CQEs; ASYNC_CANCEL: the deadline is a "
            "user-space timer (tether's timer heap) and a cancel SQE is submitted only when it "
            "passes. tether uses ASYNC_CANCEL: one context deadline bounds any number of "
            "operations with one timer, and an explicit cancel needs ASYNC_CANCEL anyway");
    }

    for (const auto& n : notes) {
        fmt::print("note: {}\n", n);
    }
    if (gm != go_mode::off) {
        if (!g.ready) {
            fmt::print("note: {}\n", g.note);
        } else {
            fmt::print("go: {}\n", g.version);
        }
    }
    std::vector<std::string> missed;
    int judged = 0;
    for (const auto& r : rows) {
        if (auto m = r.met()) {
            ++judged;
            if (!*m) {
                missed.push_back(r.def.label);
            }
        }
    }
    fmt::print("targets: {} of {} met{}{}\n", judged - static_cast<int>(missed.size()), judged,
               missed.empty() ? "" : "; missed: ", fmt::join(missed, "; "));

    bool ok = !go_failed;
    if (!json_file.empty()) {
        ok = write_json(json_file, s, rows, t, go, g, notes) && ok;
    }
    return ok ? 0 : 1;
}
