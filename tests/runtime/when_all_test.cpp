#include "context/manual_clock.hpp"
#include "context/with_cancel.hpp"
#include "context/without_cancel.hpp"
#include "runtime/loop.hpp"
#include "runtime/sleep.hpp"
#include "runtime/spawn.hpp"
#include "runtime/when_all.hpp"
#include "tests/runtime/fanout_support.hpp"
#include "tests/support/test_util.hpp"

#include <doctest/doctest.h>

#include <atomic>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

using namespace tether;
using namespace tether::test;
using namespace std::chrono_literals;

namespace {

task<int> answer() {
    co_return 42;
}
task<std::string> word() {
    co_return "tether";
}
task<void> nothing() {
    co_return;
}
task<result<int>> ok(int v) {
    co_return v;
}
task<result<void>> ok_void() {
    co_return result<void>{};
}
task<result<int>> failing(std::error_code e) {
    co_return e;
}

task<int> count_start(int* started, int v) {
    ++*started;
    co_return v;
}

task<context> read_context() {
    co_return co_await this_coro::context;
}

// sleep_for's awaitable can't be moved into with_context: wrap it.
task<result<void>> sleep_task(duration d) {
    co_return co_await sleep_for(d);
}

// Sleeps 1h; when canceled, sleeps `cleanup` more under without_cancel before returning, so
// that a when_all that returned early would be caught.
task<result<int>> slow_to_stop(duration cleanup, trace* t) {
    result<void> r = co_await sleep_for(1h);
    context ctx = co_await this_coro::context;
    (void)co_await with_context(without_cancel(ctx), sleep_task(cleanup));
    t->finished = true;
    t->error = r.error();
    if (!r) {
        co_return r.error();
    }
    co_return 1;
}

task<result<std::tuple<int, int>>> two_sleepers(trace* a, trace* b) {
    co_return co_await when_all(sleeper(100ms, 1, a), sleeper(100ms, 2, b));
}

} // namespace

TEST_CASE("when_all returns every child's value, in argument order") {
    loop l;
    auto r = l.block_on(when_all(answer(), word(), nothing()));
    REQUIRE(r.has_value());
    auto& [a, w, n] = *r;
    CHECK(a == 42);
    CHECK(w == "tether");
    CHECK(n == std::monostate{});
}

TEST_CASE("when_all unwraps children that return result") {
    loop l;
    auto r = l.block_on(when_all(ok(7), ok_void(), answer()));
    REQUIRE(r.has_value());
    CHECK(std::get<0>(*r) == 7);
    CHECK(std::get<2>(*r) == 42);
}

TEST_CASE("when_all with no children returns an empty tuple") {
    loop l;
    auto r = l.block_on(when_all());
    CHECK(r.has_value());
}

TEST_CASE("when_all runs its children concurrently") {
    manual_clock clk;
    loop l({.clock = &clk});
    trace a, b;
    outcome<result<std::tuple<int, int>>> o;
    auto h = start(l, l.background(), &o, two_sleepers(&a, &b));
    l.run_until_idle();
    SUBCASE("both are still sleeping 1 ms before") {
        clk.advance(99ms);
        l.run_until_idle();
        CHECK_FALSE(o.done);
        CHECK_FALSE(a.finished);
        CHECK_FALSE(b.finished);
        clk.advance(1ms); // let them finish
        l.run_until_idle();
    }
    SUBCASE("both are done after one sleep's time, not two") {
        clk.advance(100ms);
        l.run_until_idle();
        REQUIRE(o.done);
        REQUIRE(o.value->has_value());
        CHECK(**o.value == std::tuple{1, 2});
    }
    CHECK(h.done());
}

TEST_CASE("a child's error cancels its sleeping siblings and is returned after they finish") {
    manual_clock clk;
    loop l({.clock = &clk});
    trace a, b;
    outcome<result<std::tuple<int, int, int>>> o;
    auto h = start(l, l.background(), &o,
                   when_all(sleeper(1h, 1, &a), fail_after(10ms, io_error()), sleeper(1h, 3, &b)));
    l.run_until_idle();
    clk.advance(9ms);
    l.run_until_idle();
    CHECK_FALSE(o.done);
    clk.advance(1ms);
    l.run_until_idle();
    REQUIRE(o.done);
    CHECK(o.value->error() == io_error());
    for (trace* t : {&a, &b}) {
        CHECK(t->finished);
        CHECK(t->error == errc::canceled);
        CHECK(t->cause == io_error()); // canceled with the first error as the cause, as errgroup
    }
    CHECK(h.done());
}

TEST_CASE("a child's exception cancels its siblings and is rethrown after they finish") {
    manual_clock clk;
    loop l({.clock = &clk});
    trace a;
    outcome<result<std::tuple<int, int>>> o;
    auto h = start(l, l.background(), &o, when_all(sleeper(1h, 1, &a), throw_after(5ms, "boom")));
    l.run_until_idle();
    clk.advance(5ms);
    l.run_until_idle();
    REQUIRE(o.done);
    CHECK(a.finished);
    CHECK(a.error == errc::canceled);
    REQUIRE(o.exception);
    CHECK_THROWS_WITH_AS(std::rethrow_exception(o.exception), "boom", std::runtime_error);
}

TEST_CASE("when_all returns the first error; later errors and exceptions are dropped") {
    manual_clock clk;
    loop l({.clock = &clk});
    outcome<result<std::tuple<int, int, int>>> o;
    const std::error_code first = std::make_error_code(std::errc::io_error);
    const std::error_code second = std::make_error_code(std::errc::broken_pipe);
    // The later ones ignore cancellation: they fail anyway, after the first.
    auto h =
        start(l, l.background(), &o,
              when_all(throw_after(30ms, "late"), fail_after(10ms, first),
                       with_context(without_cancel(l.background()), fail_after(20ms, second))));
    l.run_until_idle();
    clk.advance(10ms);
    l.run_until_idle();
    CHECK_FALSE(o.done); // the without_cancel child still runs: no orphans
    clk.advance(20ms);
    l.run_until_idle();
    REQUIRE(o.done);
    CHECK_FALSE(o.exception);
    CHECK(o.value->error() == first);
}

TEST_CASE("children after one that fails synchronously never start") {
    loop l;
    int started = 0;
    auto r = l.block_on(
        when_all(count_start(&started, 1), failing(io_error()), count_start(&started, 3)));
    CHECK(r.error() == io_error());
    CHECK(started == 1);
}

TEST_CASE("canceling the awaiting context cancels the children, and when_all still waits") {
    manual_clock clk;
    loop l({.clock = &clk});
    auto [ctx, cancel] = with_cancel(l.background());
    trace a, b;
    outcome<result<std::tuple<int, int>>> o;
    auto h = start(l, ctx, &o, when_all(slow_to_stop(5ms, &a), slow_to_stop(10ms, &b)));
    l.run_until_idle();
    cancel();
    l.run_until_idle();
    CHECK_FALSE(o.done); // both are cleaning up
    clk.advance(5ms);
    l.run_until_idle();
    CHECK(a.finished);
    CHECK_FALSE(o.done); // b still is
    clk.advance(5ms);
    l.run_until_idle();
    REQUIRE(o.done);
    CHECK(b.finished);
    CHECK(o.value->error() == errc::canceled);
    CHECK(h.done());
}

TEST_CASE("a deadline on the awaiting context ends when_all with deadline_exceeded") {
    manual_clock clk;
    loop l({.clock = &clk});
    trace a, b;
    outcome<result<std::tuple<int, int>>> o;
    auto h = start(l, l.background(), &o,
                   with_timeout(50ms, when_all(sleeper(1h, 1, &a), sleeper(1h, 2, &b))));
    l.run_until_idle();
    clk.advance(49ms);
    l.run_until_idle();
    CHECK_FALSE(o.done);
    clk.advance(1ms);
    l.run_until_idle();
    REQUIRE(o.done);
    CHECK(o.value->error() == errc::deadline_exceeded);
    CHECK(a.error == errc::deadline_exceeded);
    CHECK(b.error == errc::deadline_exceeded);
}

TEST_CASE("when_all under an already-canceled context returns its error and starts nothing") {
    loop l;
    auto [ctx, cancel] = with_cancel(l.background());
    cancel();
    int started = 0;
    auto r = l.block_on(ctx, when_all(count_start(&started, 1), count_start(&started, 2)));
    CHECK(r.error() == errc::canceled);
    CHECK(started == 0);
    std::vector<task<int>> none;
    CHECK(l.block_on(ctx, when_all(std::move(none))).error() == errc::canceled);
}

TEST_CASE("children run under a child of the awaiting context, released afterwards") {
    loop l;
    auto [ctx, cancel] = with_cancel(l.background());
    auto r = l.block_on(ctx, when_all(read_context(), read_context()));
    REQUIRE(r.has_value());
    auto& [c1, c2] = *r;
    CHECK(c1 == c2);
    CHECK_FALSE(c1 == ctx);
    CHECK(c1.is_done()); // released (canceled) once when_all returned
    CHECK_FALSE(ctx.is_done());
    CHECK(detail::registration_count(ctx) == 0);
}

TEST_CASE("when_all accepts awaitables other than tasks") {
    loop l;
    struct t {
        static task<result<std::tuple<int, std::tuple<int, std::string>>>> run() {
            join_handle<int> h = co_await spawn(answer());
            co_return co_await when_all(std::move(h), when_all(answer(), word()));
        }
    };
    auto r = l.block_on(t::run());
    REQUIRE(r.has_value());
    CHECK(std::get<0>(*r) == 42);
    CHECK(std::get<1>(std::get<1>(*r)) == "tether");
}

TEST_CASE("when_all over a range returns the values in order") {
    manual_clock clk;
    loop l({.clock = &clk});
    std::vector<trace> traces(5);
    std::vector<task<result<int>>> tasks;
    for (int i = 0; i < 5; ++i) {
        tasks.push_back(sleeper(std::chrono::milliseconds(50 - 10 * i), i, &traces[i]));
    }
    outcome<result<std::vector<int>>> o;
    auto h = start(l, l.background(), &o, when_all(std::move(tasks)));
    l.run_until_idle();
    clk.advance(49ms);
    l.run_until_idle();
    CHECK_FALSE(o.done);
    clk.advance(1ms);
    l.run_until_idle();
    REQUIRE(o.done);
    REQUIRE(o.value->has_value());
    CHECK(**o.value == std::vector{0, 1, 2, 3, 4});
}

TEST_CASE("when_all over a range: empty, void, and the first error") {
    manual_clock clk;
    loop l({.clock = &clk});
    SUBCASE("an empty range gives an empty vector at once") {
        auto r = l.block_on(when_all(std::vector<task<int>>{}));
        REQUIRE(r.has_value());
        CHECK(r->empty());
    }
    SUBCASE("children returning void give result<void>") {
        std::vector<task<void>> tasks;
        tasks.push_back(nothing());
        tasks.push_back(nothing());
        result<void> r = l.block_on(when_all(std::move(tasks)));
        CHECK(r.has_value());
    }
    SUBCASE("the first error cancels the rest") {
        std::vector<trace> traces(3);
        std::vector<task<result<int>>> tasks;
        tasks.push_back(sleeper(1h, 0, &traces[0]));
        tasks.push_back(fail_after(10ms, io_error()));
        tasks.push_back(sleeper(1h, 2, &traces[2]));
        outcome<result<std::vector<int>>> o;
        auto h = start(l, l.background(), &o, when_all(std::move(tasks)));
        l.run_until_idle();
        clk.advance(10ms);
        l.run_until_idle();
        REQUIRE(o.done);
        CHECK(o.value->error() == io_error());
        CHECK(traces[0].error == errc::canceled);
        CHECK(traces[2].error == errc::canceled);
    }
}

TEST_CASE("when_all destroys every child frame and value") {
    counted::reset();
    {
        manual_clock clk;
        loop l({.clock = &clk});
        struct t {
            static task<counted> hold(duration d) {
                counted c;
                (void)co_await sleep_for(d);
                co_return c;
            }
            static task<result<int>> fail_soon() {
                counted c;
                (void)co_await sleep_for(1ms);
                co_return io_error();
            }
        };
        outcome<result<std::tuple<counted, counted, int>>> o;
        auto h = start(l, l.background(), &o, when_all(t::hold(1h), t::hold(2h), t::fail_soon()));
        l.run_until_idle();
        clk.advance(1ms);
        l.run_until_idle();
        REQUIRE(o.done);
        CHECK(o.value->error() == io_error());
    }
    CHECK(counted::alive() == 0);
}

TEST_CASE("canceling the awaiting context from another thread while when_all waits") {
    for (std::size_t i = 0; i < iterations(200); ++i) {
        loop l;
        auto [ctx, cancel] = with_cancel(l.background());
        trace a, b;
        std::atomic<bool> go{false};
        std::thread th([&go, c = &cancel] {
            while (!go.load(std::memory_order_acquire)) {
                std::this_thread::yield();
            }
            (*c)();
        });
        struct t {
            static task<result<std::tuple<int, int>>> run(std::atomic<bool>* go, trace* a,
                                                          trace* b) {
                go->store(true, std::memory_order_release);
                co_return co_await when_all(sleeper(1h, 1, a), sleeper(1h, 2, b));
            }
        };
        auto r = l.block_on(ctx, t::run(&go, &a, &b));
        th.join();
        CHECK(r.error() == errc::canceled);
    }
}
