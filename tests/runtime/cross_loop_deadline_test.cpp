// Deadlines across loops: a task waiting on one loop under a deadline whose clock is another
// loop's (or the real clock's thread) times out on its own loop, which fires the deadline
// itself (a foreign timer), whatever the deadline's own loop is doing.
#include "context/detail/node.hpp"
#include "context/manual_clock.hpp"
#include "context/with_cancel.hpp"
#include "context/with_deadline.hpp"
#include "runtime/channel.hpp"
#include "runtime/io.hpp"
#include "runtime/loop.hpp"
#include "runtime/runtime.hpp"
#include "runtime/sleep.hpp"
#include "runtime/spawn.hpp"
#include "tests/runtime/sync_support.hpp"
#include "tests/support/pipe_fds.hpp"
#include "tests/support/test_util.hpp"

#include <doctest/doctest.h>

#include <array>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <fcntl.h>
#include <mutex>
#include <optional>
#include <sys/ioctl.h>
#include <system_error>
#include <thread>
#include <unistd.h>

using namespace tether;
using namespace tether::test;
using namespace std::chrono_literals;

namespace {

// The cause the deadlines below report.
const std::error_code timeout_cause = std::make_error_code(std::errc::connection_aborted);

std::size_t foreign_timers() noexcept {
    return detail::foreign_timer_count();
}

// Waits (up to a minute) until no foreign timer is left: one that a cancel could not
// unschedule is freed by its own firing, on its loop's thread, a moment later.
bool foreign_timers_drain() {
    for (int i = 0; i < 60000 && foreign_timers() != 0; ++i) {
        std::this_thread::sleep_for(1ms);
    }
    return foreign_timers() == 0;
}

// Cancels `h` after `limit` unless disarmed first: a wait that the deadline fails to end
// ends canceled, and the test fails instead of hanging.
class watchdog {
public:
    watchdog(const cancel_handle& h, duration limit)
        : t_([this, &h, limit] {
              std::unique_lock lk(mu_);
              if (!cv_.wait_for(lk, limit, [this] { return disarmed_; })) {
                  h.cancel();
              }
          }) {}
    watchdog(const watchdog&) = delete;
    watchdog& operator=(const watchdog&) = delete;
    ~watchdog() {
        {
            std::lock_guard lk(mu_);
            disarmed_ = true;
        }
        cv_.notify_one();
    }

private:
    std::mutex mu_;
    std::condition_variable cv_;
    bool disarmed_ = false;
    std::jthread t_; // last: joined first
};

int pipe_bytes(int fd) {
    int n = -1;
    REQUIRE(::ioctl(fd, FIONREAD, &n) == 0);
    return n;
}

task<result<void>> sleep_long() {
    co_return co_await sleep_for(1h);
}

task<result<std::size_t>> read_into(int fd, std::span<std::byte> buf) {
    co_return co_await tether::read(fd, buf);
}

// Runs `l` until `done()` or a minute has passed.
template <class F>
void run_until(loop& l, F done) {
    auto until = std::chrono::steady_clock::now() + 60s;
    while (!done() && std::chrono::steady_clock::now() < until) {
        l.run_once(10ms);
    }
}

} // namespace

TEST_CASE("a deadline of a loop that never runs ends a sleep on another loop, with its cause") {
    loop a; // never runs: its clock fires nothing
    auto [parent, stop] = with_cancel(a.background());
    watchdog guard(stop, 30s);
    auto t0 = std::chrono::steady_clock::now();
    auto [ctx, cancel] = with_timeout_cause(parent, 50ms, timeout_cause);
    loop b;
    result<void> r = b.block_on(ctx, sleep_long());
    auto took = std::chrono::steady_clock::now() - t0;
    REQUIRE_FALSE(r);
    CHECK(r.error() == errc::deadline_exceeded);
    CHECK(ctx.err() == errc::deadline_exceeded);
    CHECK(cause(ctx) == timeout_cause);
    CHECK_FALSE(parent.err()); // the deadline's node, not the watchdog's
    CHECK(took >= 50ms);
    CHECK(foreign_timers() == 0); // it fired, and was freed
}

TEST_CASE("a deadline of a loop that never runs ends a read on another loop in the kernel") {
    loop a;
    auto [parent, stop] = with_cancel(a.background());
    watchdog guard(stop, 30s);
    pipe_fds p;
    REQUIRE(::write(p.w, "x", 1) == 1);
    std::array<std::byte, 1> first{};
    loop b;
    // Takes the byte, so that the next read finds the pipe empty.
    REQUIRE(b.block_on(read_into(p.r, first)).value() == 1);
    auto [ctx, cancel] = with_timeout_cause(parent, 30ms, timeout_cause);
    std::array<std::byte, 16> buf{};
    result<std::size_t> r = b.block_on(ctx, read_into(p.r, buf));
    REQUIRE_FALSE(r);
    CHECK(r.error() == errc::deadline_exceeded);
    CHECK(cause(ctx) == timeout_cause);
    CHECK_FALSE(parent.err());
    REQUIRE(::write(p.w, "yz", 2) == 2);
    CHECK(pipe_bytes(p.r) == 2); // the canceled read took nothing
}

TEST_CASE("co_await done() of another loop's deadline ends when that loop never runs") {
    loop a;
    auto [parent, stop] = with_cancel(a.background());
    watchdog guard(stop, 30s);
    auto [target, cancel] = with_timeout_cause(parent, 30ms, timeout_cause);
    loop b;
    // b's own context has no deadline: the signal it waits for is target's.
    result<void> r =
        b.block_on([](context t) -> task<result<void>> { co_return co_await t.done(); }(target));
    CHECK(r.has_value());
    CHECK(target.err() == errc::deadline_exceeded);
    CHECK(cause(target) == timeout_cause);
    CHECK_FALSE(parent.err());
    CHECK(foreign_timers() == 0);
}

TEST_CASE("a deadline made on a loop whose thread is blocked ends a wait on another loop") {
    runtime rt(runtime::options{.loops = 2});
    std::mutex mu;
    std::condition_variable cv;
    bool ended = false;
    bool ended_in_time = false;
    result<result<void>> r = rt.block_on([&]() -> task<result<result<void>>> {
        auto [ctx, cancel] = with_timeout_cause(co_await this_coro::context, 1s, timeout_cause);
        auto waiter = [&]() -> task<result<void>> {
            result<void> s = co_await sleep_for(1h);
            {
                std::lock_guard lk(mu);
                ended = true;
            }
            cv.notify_one();
            co_return s;
        };
        auto h = co_await with_context(ctx, spawn_on(rt.loop(1), waiter()));
        // Until the waiter is parked on loop 1 (the spawn leaves with this loop's next turn).
        while (foreign_timers() == 0 && !ctx.err()) {
            co_await sleep_for(1ms);
        }
        REQUIRE(foreign_timers() == 1);
        {
            // Loop 0, whose clock holds the deadline's own timer, sits in a blocking call
            // until the waiter has ended: loop 1 must fire the deadline itself.
            std::unique_lock lk(mu);
            ended_in_time = cv.wait_for(lk, 60s, [&] { return ended; });
        }
        CHECK(cause(ctx) == timeout_cause);
        co_return co_await h;
    }());
    CHECK(ended_in_time);
    REQUIRE(r.has_value());
    REQUIRE_FALSE(*r);
    CHECK(r->error() == errc::deadline_exceeded);
}

TEST_CASE("a deadline made on a foreign thread ends a wait on a loop") {
    auto [parent, stop] = with_cancel(background()); // the real clock's
    watchdog guard(stop, 30s);
    auto [ctx, cancel] = with_timeout_cause(parent, 20ms, timeout_cause);
    loop b;
    result<void> r = b.block_on(ctx, sleep_long());
    REQUIRE_FALSE(r);
    CHECK(r.error() == errc::deadline_exceeded);
    CHECK(cause(ctx) == timeout_cause);
    CHECK(foreign_timers_drain());
}

TEST_CASE("on a shared manual clock, the waiting loop fires the deadline when time reaches it") {
    manual_clock clk;
    loop a{{.clock = &clk}}; // never runs
    loop b{{.clock = &clk}};
    auto [ctx, cancel] = with_timeout_cause(a.background(), 10s, timeout_cause);
    std::optional<result<void>> first, second;
    auto s1 = start(b, ctx, await_into(&first, sleep_long()));
    auto s2 = start(b, ctx, await_into(&second, sleep_long()));
    b.run_until_idle();
    CHECK_FALSE(first);
    CHECK(foreign_timers() == 1); // one per deadline and loop, however many wait
    clk.advance(9s);
    b.run_until_idle();
    CHECK_FALSE(first);
    CHECK_FALSE(ctx.err());
    clk.advance(1s);
    b.run_until_idle();
    REQUIRE(first);
    REQUIRE(second);
    CHECK(first->error() == errc::deadline_exceeded);
    CHECK(second->error() == errc::deadline_exceeded);
    CHECK(ctx.err() == errc::deadline_exceeded);
    CHECK(cause(ctx) == timeout_cause);
    CHECK(foreign_timers() == 0);
}

TEST_CASE("the deadline is found above cancel nodes, a later deadline and the task's own node") {
    manual_clock clk;
    loop a{{.clock = &clk}};
    loop b{{.clock = &clk}};
    auto [dl, cancel] = with_timeout_cause(a.background(), 5s, timeout_cause);
    auto [mid, mid_cancel] = with_cancel(dl);
    // A later deadline below: its node is a plain cancel node (the earlier one rules).
    auto [ctx, ctx_cancel] = with_timeout(mid, 1h);
    std::optional<result<void>> r;
    auto s = start(b, ctx, await_into(&r, sleep_long()));
    b.run_until_idle();
    CHECK(foreign_timers() == 1);
    clk.advance(5s);
    b.run_until_idle();
    REQUIRE(r);
    CHECK(r->error() == errc::deadline_exceeded);
    CHECK(cause(ctx) == timeout_cause);
    CHECK(dl.err() == errc::deadline_exceeded);
}

TEST_CASE("a deadline of the waiting loop's own clock adds no foreign timer") {
    manual_clock clk;
    loop b{{.clock = &clk}};
    auto [ctx, cancel] = with_timeout(b.background(), 1s);
    std::optional<result<void>> r;
    auto s = start(b, ctx, await_into(&r, sleep_long()));
    b.run_until_idle();
    CHECK(foreign_timers() == 0);
    clk.advance(1s);
    b.run_until_idle();
    REQUIRE(r);
    CHECK(r->error() == errc::deadline_exceeded);
}

TEST_CASE("a deadline on another time base adds no foreign timer, and still fires") {
    manual_clock clk; // the deadline's time; the loop runs on the real clock
    loop b;
    auto [ctx, cancel] = with_timeout(background(clk), 1s);
    std::optional<result<void>> r;
    auto s = start(b, ctx, await_into(&r, sleep_long()));
    b.run_until_idle();
    CHECK(foreign_timers() == 0);
    clk.advance(1s); // fires the node's own timer here, which queues the wait on b
    run_until(b, [&] { return r.has_value(); });
    REQUIRE(r);
    CHECK(r->error() == errc::deadline_exceeded);
}

TEST_CASE("a deadline canceled first frees the waiting loop's timer at once") {
    manual_clock clk;
    loop a{{.clock = &clk}};
    loop b{{.clock = &clk}};
    auto [ctx, cancel] = with_timeout(a.background(), 10s);
    std::optional<result<void>> r;
    auto s = start(b, ctx, await_into(&r, sleep_long()));
    b.run_until_idle();
    CHECK(foreign_timers() == 1);
    cancel.cancel();
    CHECK(foreign_timers() == 0); // unscheduled by the cancel, from this thread
    b.run_until_idle();
    REQUIRE(r);
    CHECK(r->error() == errc::canceled);
    clk.advance(1h);
    b.run_until_idle(); // nothing left to fire
}

TEST_CASE("a loop destroyed with a foreign timer scheduled releases it; the deadline lives on") {
    manual_clock clk;
    loop a{{.clock = &clk}};
    auto [ctx, cancel] = with_timeout_cause(a.background(), 10s, timeout_cause);
    {
        loop b{{.clock = &clk}};
        std::optional<result<void>> r;
        auto s = start(b, ctx, await_into(&r, sleep_long()));
        b.run_until_idle();
        CHECK(foreign_timers() == 1);
        // s cancels its task (not the deadline) and finishes it; then b goes.
    }
    CHECK(foreign_timers() == 0);
    CHECK_FALSE(ctx.err());
    clk.advance(10s);
    a.run_until_idle(); // the node's own timer, on its own loop
    CHECK(ctx.err() == errc::deadline_exceeded);
    CHECK(cause(ctx) == timeout_cause);
}

TEST_CASE("cross-loop deadlines race completions and cancels thousands of times") {
    // Loop 0 makes a short deadline, loop 1 waits under it (a sleep or a channel receive)
    // about as long, and loop 0 or a foreign thread sometimes cancels, or loop 0 sends:
    // whichever comes first wins, each waiter resumes once, on its own loop, and every
    // foreign timer is freed.
    runtime rt(runtime::options{.loops = 2});
    std::size_t deadlines = 0;
    std::size_t other = 0;
    rt.block_on([&]() -> task<void> {
        channel<int> ch(1);
        // Thousands of rounds under TSan too (a round costs it about a millisecond).
        std::size_t rounds = under_tsan() ? 3000 : 5000;
        for (std::size_t i = 0; i < rounds; ++i) {
            auto d = std::chrono::microseconds(i % 97);
            auto [ctx, cancel] = with_timeout_cause(co_await this_coro::context, d, timeout_cause);
            bool use_channel = i % 2 == 1;
            auto waiter = [&rt, &ch, use_channel, d]() -> task<int> {
                bool home = co_await this_coro::loop == &rt.loop(1);
                std::error_code e;
                if (use_channel) {
                    result<int> v = co_await ch.receive();
                    e = v ? std::error_code{} : v.error();
                } else {
                    result<void> s = co_await sleep_for(d);
                    e = s ? std::error_code{} : s.error();
                }
                if (!home || co_await this_coro::loop != &rt.loop(1)) {
                    co_return -1;
                }
                if (!e) {
                    co_return 0;
                }
                if (e == errc::deadline_exceeded) {
                    co_return 1;
                }
                co_return e == errc::canceled ? 2 : -2;
            };
            auto h = co_await with_context(ctx, spawn_on(rt.loop(1), waiter()));
            std::jthread canceler;
            if (i % 5 == 2) {
                cancel.cancel();
            } else if (i % 7 == 3) {
                canceler = std::jthread([&cancel] { cancel.cancel(); }); // a foreign thread's
            }
            if (use_channel && i % 3 == 0) {
                co_await ch.send(static_cast<int>(i));
            }
            result<int> got = co_await h;
            REQUIRE(got);
            REQUIRE(*got >= 0);
            if (*got == 1) {
                ++deadlines;
                REQUIRE(cause(ctx) == timeout_cause);
            } else {
                ++other;
            }
            if (use_channel && i % 3 == 0 && *got != 0) {
                // The send went through but the waiter timed out: take the value back.
                result<int> v = co_await ch.receive();
                REQUIRE(v);
            }
        }
    }());
    MESSAGE("deadline_exceeded: " << deadlines << ", completed or canceled: " << other);
    CHECK(deadlines > 0);
    CHECK(other > 0);
    CHECK(foreign_timers_drain());
}

TEST_CASE("a loop destroyed while another thread cancels the deadline: each timer freed once") {
    for (std::size_t round = 0; round < iterations(500); ++round) {
        loop a; // never runs
        auto [ctx, cancel] = with_timeout(a.background(), 1h);
        std::optional<loop> b(std::in_place);
        {
            std::optional<result<void>> r;
            auto s = start(*b, ctx, await_into(&r, sleep_long()));
            b->run_until_idle();
            REQUIRE(foreign_timers() == 1);
        } // the task is canceled on its own; b's timer for the deadline stays
        REQUIRE(foreign_timers() == 1);
        run_together(2, [&](std::size_t i) {
            if (i == 0) {
                b.reset();
            } else {
                cancel.cancel();
            }
        });
        REQUIRE(foreign_timers() == 0);
        REQUIRE(ctx.err() == errc::canceled);
    }
}
