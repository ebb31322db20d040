#include "context/manual_clock.hpp"
#include "context/with_cancel.hpp"
#include "runtime/loop.hpp"
#include "runtime/sleep.hpp"
#include "runtime/spawn.hpp"
#include "runtime/task.hpp"
#include "tests/support/test_util.hpp"

#include <doctest/doctest.h>

#include <stdexcept>

using namespace tether;
using namespace std::chrono_literals;

namespace {

task<int> answer() {
    co_return 42;
}

task<int> add_one(int depth) {
    if (depth == 0) {
        co_return 0;
    }
    co_return 1 + co_await add_one(depth - 1);
}

task<void> thrower() {
    throw std::runtime_error("boom");
    co_return;
}

task<context> read_context() {
    co_return co_await this_coro::context;
}

task<bool> nested_sees_same_context() {
    context mine = co_await this_coro::context;
    context child = co_await read_context();
    co_return mine == child;
}

} // namespace

TEST_CASE("task doesn't start until awaited") {
    bool started = false;
    auto make = [](bool* s) -> task<void> {
        *s = true;
        co_return;
    };
    {
        task<void> t = make(&started);
        CHECK_FALSE(started);
    }
    CHECK_FALSE(started);
}

TEST_CASE("block_on returns the task's value") {
    loop l;
    CHECK(l.block_on(answer()) == 42);
}

TEST_CASE("exceptions propagate to the awaiter") {
    loop l;
    CHECK_THROWS_AS(l.block_on(thrower()), std::runtime_error);
}

TEST_CASE("a chain of a million nested awaits does not overflow the stack") {
    // Symmetric transfer is a tail call; GCC's sanitizers instrument it away (every resume
    // then keeps its frame), so sanitizer builds check a depth that fits the stack anyway.
    const int depth = test::under_sanitizer() ? 10'000 : 1'000'000;
    loop l;
    CHECK(l.block_on(add_one(depth)) == depth);
}

TEST_CASE("an awaited task runs under its awaiter's context") {
    loop l;
    CHECK(l.block_on(nested_sees_same_context()));
    auto [ctx, cancel] = with_cancel(l.background());
    CHECK(l.block_on(ctx, read_context()) == ctx);
}

TEST_CASE("with_context runs an awaitable under another context") {
    loop l;
    auto [ctx, cancel] = with_cancel(l.background());
    context seen = l.block_on(with_context(ctx, read_context()));
    CHECK(seen == ctx);
}

TEST_CASE("sleep_for resumes at the deadline on a manual clock") {
    manual_clock clk;
    loop l({.clock = &clk});
    bool done = false;
    // Drive by hand: spawn under the loop's background, advance the clock.
    struct driver {
        static task<void> run(bool* d) {
            auto r = co_await sleep_for(100ms);
            *d = r.has_value();
        }
    };
    auto t = l.block_on([](bool* d) -> task<join_handle<void>> {
        co_return co_await spawn(driver::run(d));
    }(&done));
    l.run_until_idle();
    clk.advance(99ms);
    l.run_until_idle();
    CHECK_FALSE(done);
    clk.advance(1ms);
    l.run_until_idle();
    CHECK(done);
    CHECK(t.done());
}

TEST_CASE("sleep under a canceled context fails at once; cancel wakes a sleeper") {
    manual_clock clk;
    loop l({.clock = &clk});
    auto [ctx, cancel] = with_cancel(l.background());
    struct d {
        static task<result<void>> sleep_long() { co_return co_await sleep_for(1h); }
    };
    auto h = l.block_on(ctx, [](void) -> task<join_handle<result<void>>> {
        co_return co_await spawn(d::sleep_long());
    }());
    l.run_until_idle();
    CHECK_FALSE(h.done());
    cancel();
    l.run_until_idle();
    REQUIRE(h.done());
    auto r = l.block_on([](join_handle<result<void>> jh) -> task<result<void>> {
        auto x = co_await jh;
        co_return *x;
    }(std::move(h)));
    CHECK(r.error() == errc::canceled);
    // Sticky: a new sleep under the canceled context fails without waiting.
    auto r2 = l.block_on(ctx, d::sleep_long());
    CHECK(r2.error() == errc::canceled);
}

TEST_CASE("a deadline on the loop clock wakes a sleeper with deadline_exceeded") {
    manual_clock clk;
    loop l({.clock = &clk});
    auto [ctx, cancel] = with_timeout(l.background(), 50ms);
    struct d {
        static task<result<void>> sleep_long() { co_return co_await sleep_for(1h); }
    };
    auto h = l.block_on(ctx, []() -> task<join_handle<result<void>>> {
        co_return co_await spawn(d::sleep_long());
    }());
    l.run_until_idle();
    clk.advance(49ms);
    l.run_until_idle();
    CHECK_FALSE(h.done());
    clk.advance(1ms);
    l.run_until_idle();
    REQUIRE(h.done());
}

TEST_CASE("a spawned task's context: a child that ends with the task and outlives it in copies") {
    loop l;
    auto [parent, cancel] = with_cancel_cause(l.background());
    struct d {
        static task<int> keep(context* out) {
            *out = co_await this_coro::context;
            co_return 7;
        }
        static task<int> spawn_keep_join(context* out, const context* parent, bool* linked) {
            join_handle<int> h = co_await spawn(keep(out));
            *linked = detail::registration_count(*parent) == 1 && !(h.task_context() == *parent) &&
                      !h.task_context().is_done();
            auto v = co_await h;
            co_return *v;
        }
    };
    context kept;
    bool linked = false;
    CHECK(l.block_on(parent, d::spawn_keep_join(&kept, &parent, &linked)) == 7);
    CHECK(linked);
    // The handle and the frame are gone; the task's copy still names its context, which the
    // task's end canceled and unlinked from the parent.
    REQUIRE(kept.node() != nullptr);
    CHECK(kept.is_done());
    CHECK(kept.err() == errc::canceled);
    CHECK_FALSE(parent.is_done());
    CHECK(detail::registration_count(parent) == 0);
    kept = context{}; // the node's last reference (ASan checks the free)

    // Under a parent that is done already, the task's context is born done with its cause.
    cancel(std::make_error_code(std::errc::timed_out));
    context born = l.block_on([](const context* p) -> task<context> {
        join_handle<int> h = spawn(*p, answer());
        context c = h.task_context();
        auto r = co_await h; // under background: waits for answer() to finish
        (void)r;
        co_return c;
    }(&parent));
    CHECK(born.is_done());
    CHECK(born.err() == errc::canceled);
    CHECK(cause(born) == std::errc::timed_out);
}

TEST_CASE("co_await ctx.done() resumes when the context is canceled from another thread") {
    loop l;
    auto [ctx, cancel] = with_cancel(l.background());
    std::thread th([&] {
        std::this_thread::sleep_for(10ms);
        cancel();
    });
    auto r = l.block_on(ctx, []() -> task<result<void>> {
        context c = co_await this_coro::context;
        co_return co_await c.done();
    }());
    th.join();
    CHECK(r.has_value());
}
