#include "context/manual_clock.hpp"
#include "context/with_cancel.hpp"
#include "context/without_cancel.hpp"
#include "runtime/loop.hpp"
#include "runtime/sleep.hpp"
#include "runtime/spawn.hpp"
#include "runtime/when_any.hpp"
#include "tests/runtime/fanout_support.hpp"
#include "tests/support/test_util.hpp"

#include <doctest/doctest.h>

#include <atomic>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <variant>
#include <vector>

using namespace tether;
using namespace tether::test;
using namespace std::chrono_literals;

namespace {

task<int> answer() {
    co_return 42;
}
task<void> nothing() {
    co_return;
}

task<int> count_start(int* started, int v) {
    ++*started;
    co_return v;
}

task<std::string> word_after(duration d) {
    (void)co_await sleep_for(d);
    co_return "tether";
}

task<result<void>> sleep_task(duration d) {
    co_return co_await sleep_for(d);
}

// Sleeps 1h; when canceled, sleeps `cleanup` more under without_cancel before returning.
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

using int_or_word = result<std::pair<std::size_t, std::variant<result<int>, std::string>>>;

} // namespace

TEST_CASE("the first child to finish wins; the losers are canceled and awaited") {
    manual_clock clk;
    loop l({.clock = &clk});
    trace loser;
    outcome<int_or_word> o;
    auto h = start(l, l.background(), &o, when_any(slow_to_stop(5ms, &loser), word_after(10ms)));
    l.run_until_idle();
    clk.advance(9ms);
    l.run_until_idle();
    CHECK_FALSE(o.done);
    clk.advance(1ms);
    l.run_until_idle();
    CHECK_FALSE(o.done); // the loser is still cleaning up: no orphans
    clk.advance(5ms);
    l.run_until_idle();
    REQUIRE(o.done);
    CHECK(loser.finished);
    CHECK(loser.error == errc::canceled);
    REQUIRE(o.value->has_value());
    auto& [index, value] = **o.value;
    CHECK(index == 1);
    CHECK(std::get<1>(value) == "tether");
    CHECK(h.done());
}

TEST_CASE("when_any tells apart children of the same type by index") {
    manual_clock clk;
    loop l({.clock = &clk});
    trace a, b, c;
    outcome<result<std::pair<std::size_t, std::variant<result<int>, result<int>, result<int>>>>> o;
    auto h = start(l, l.background(), &o,
                   when_any(sleeper(30ms, 0, &a), sleeper(10ms, 1, &b), sleeper(20ms, 2, &c)));
    l.run_until_idle();
    clk.advance(10ms);
    l.run_until_idle();
    REQUIRE(o.done);
    REQUIRE(o.value->has_value());
    CHECK((*o.value)->first == 1);
    CHECK((*o.value)->second.index() == 1);
    CHECK(*std::get<1>((*o.value)->second) == 1);
    CHECK(a.error == errc::canceled);
    CHECK(c.error == errc::canceled);
}

TEST_CASE("a child returning an error wins like any other value") {
    manual_clock clk;
    loop l({.clock = &clk});
    outcome<int_or_word> o;
    auto h = start(l, l.background(), &o, when_any(fail_after(5ms, io_error()), word_after(1h)));
    l.run_until_idle();
    clk.advance(5ms);
    l.run_until_idle();
    REQUIRE(o.done);
    REQUIRE(o.value->has_value());
    CHECK((*o.value)->first == 0);
    CHECK(std::get<0>((*o.value)->second).error() == io_error());
}

TEST_CASE("the winner's exception is rethrown once the losers have finished") {
    manual_clock clk;
    loop l({.clock = &clk});
    trace loser;
    outcome<result<std::pair<std::size_t, std::variant<int, result<int>>>>> o;
    auto h =
        start(l, l.background(), &o, when_any(throw_after(5ms, "boom"), slow_to_stop(1ms, &loser)));
    l.run_until_idle();
    clk.advance(5ms);
    l.run_until_idle();
    CHECK_FALSE(o.done);
    clk.advance(1ms);
    l.run_until_idle();
    REQUIRE(o.done);
    CHECK(loser.finished);
    REQUIRE(o.exception);
    CHECK_THROWS_WITH_AS(std::rethrow_exception(o.exception), "boom", std::runtime_error);
}

TEST_CASE("a loser's exception is dropped") {
    manual_clock clk;
    loop l({.clock = &clk});
    outcome<result<std::pair<std::size_t, std::variant<int, std::string>>>> o;
    // The loser throws when canceled.
    auto h = start(l, l.background(), &o, when_any(throw_after(1h, "loser"), word_after(1ms)));
    l.run_until_idle();
    clk.advance(1ms);
    l.run_until_idle();
    REQUIRE(o.done);
    CHECK_FALSE(o.exception);
    CHECK((*o.value)->first == 1);
}

TEST_CASE("a child that finishes synchronously wins, and later ones never start") {
    loop l;
    int started = 0;
    auto r = l.block_on(when_any(count_start(&started, 1), count_start(&started, 2)));
    REQUIRE(r.has_value());
    CHECK(r->first == 0);
    CHECK(std::get<0>(r->second) == 1);
    CHECK(started == 1);
}

TEST_CASE("a void child wins with std::monostate") {
    loop l;
    auto r = l.block_on(when_any(nothing(), answer()));
    REQUIRE(r.has_value());
    CHECK(r->first == 0);
    CHECK(std::holds_alternative<std::monostate>(r->second));
}

TEST_CASE("when_any under an already-canceled context returns its error and starts nothing") {
    loop l;
    auto [ctx, cancel] = with_cancel(l.background());
    cancel();
    int started = 0;
    auto r = l.block_on(ctx, when_any(count_start(&started, 1), count_start(&started, 2)));
    CHECK(r.error() == errc::canceled);
    CHECK(started == 0);
}

TEST_CASE("canceling the awaiting context cancels every child; the first to finish wins") {
    manual_clock clk;
    loop l({.clock = &clk});
    auto [ctx, cancel] = with_cancel(l.background());
    trace a, b;
    outcome<result<std::pair<std::size_t, std::variant<result<int>, result<int>>>>> o;
    auto h = start(l, ctx, &o, when_any(slow_to_stop(10ms, &a), slow_to_stop(5ms, &b)));
    l.run_until_idle();
    cancel();
    l.run_until_idle();
    clk.advance(5ms);
    l.run_until_idle();
    CHECK(b.finished);
    CHECK_FALSE(o.done); // a is still cleaning up
    clk.advance(5ms);
    l.run_until_idle();
    REQUIRE(o.done);
    REQUIRE(o.value->has_value());
    CHECK((*o.value)->first == 1);
    CHECK(std::get<1>((*o.value)->second).error() == errc::canceled);
}

TEST_CASE("when_any over a range returns the winner's index and value") {
    manual_clock clk;
    loop l({.clock = &clk});
    std::vector<trace> traces(4);
    std::vector<task<result<int>>> tasks;
    for (int i = 0; i < 4; ++i) {
        tasks.push_back(sleeper(std::chrono::milliseconds(40 - 10 * i), 100 + i, &traces[i]));
    }
    outcome<result<std::pair<std::size_t, result<int>>>> o;
    auto h = start(l, l.background(), &o, when_any(std::move(tasks)));
    l.run_until_idle();
    clk.advance(9ms);
    l.run_until_idle();
    CHECK_FALSE(o.done);
    clk.advance(1ms);
    l.run_until_idle();
    REQUIRE(o.done);
    REQUIRE(o.value->has_value());
    CHECK((*o.value)->first == 3);
    CHECK(*(*o.value)->second == 103);
    for (int i = 0; i < 3; ++i) {
        CHECK(traces[i].error == errc::canceled);
    }
}

TEST_CASE("when_any over an empty range returns invalid_argument") {
    loop l;
    auto r = l.block_on(when_any(std::vector<task<int>>{}));
    CHECK(r.error() == std::errc::invalid_argument);
}

TEST_CASE("when_any destroys every child frame and value") {
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
        };
        outcome<result<std::pair<std::size_t, std::variant<counted, counted>>>> o;
        auto h = start(l, l.background(), &o, when_any(t::hold(1h), t::hold(1ms)));
        l.run_until_idle();
        clk.advance(1ms);
        l.run_until_idle();
        REQUIRE(o.done);
        CHECK((*o.value)->first == 1);
    }
    CHECK(counted::alive() == 0);
}

TEST_CASE("canceling the awaiting context from another thread while when_any waits") {
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
            static task<result<std::pair<std::size_t, std::variant<result<int>, result<int>>>>>
            run(std::atomic<bool>* go, trace* a, trace* b) {
                go->store(true, std::memory_order_release);
                co_return co_await when_any(sleeper(1h, 1, a), sleeper(1h, 2, b));
            }
        };
        auto r = l.block_on(ctx, t::run(&go, &a, &b));
        th.join();
        // Canceled before it started, or a child won with its cancellation.
        if (r.has_value()) {
            CHECK(std::visit([](const result<int>& v) { return v.error(); }, r->second) ==
                  errc::canceled);
        } else {
            CHECK(r.error() == errc::canceled);
        }
    }
}
