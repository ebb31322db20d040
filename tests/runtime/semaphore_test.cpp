#include "context/with_cancel.hpp"
#include "context/with_deadline.hpp"
#include "runtime/event.hpp"
#include "runtime/loop.hpp"
#include "runtime/semaphore.hpp"
#include "tests/runtime/sync_support.hpp"
#include "tests/support/manual_loop.hpp"
#include "tests/support/test_util.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <barrier>
#include <optional>
#include <thread>
#include <vector>

using namespace tether;
using namespace std::chrono_literals;
using tether::test::await_into;
using tether::test::start;
using tether::test::yield_now;

namespace {

using fixture = tether::test::manual_loop;

task<void> limited(event* go, semaphore* s, int* inside, int* max_inside, int* total) {
    if (result<void> started = co_await go->wait(); !started) {
        co_return;
    }
    result<void> r = co_await s->acquire();
    if (!r) {
        co_return;
    }
    ++*inside;
    *max_inside = std::max(*max_inside, *inside);
    co_await yield_now{};
    co_await yield_now{};
    --*inside;
    ++*total;
    s->release();
}

} // namespace

TEST_CASE("acquire takes available permits without waiting") {
    fixture f;
    semaphore s(3);
    std::optional<result<void>> r;
    auto h = start(f.l, f.l.background(), await_into(&r, s.acquire(2)));
    f.l.run_until_idle();
    REQUIRE(r);
    CHECK(r->has_value());
    CHECK(s.available() == 1);
    std::optional<result<void>> zero;
    auto hz = start(f.l, f.l.background(), await_into(&zero, s.acquire(0)));
    f.l.run_until_idle();
    REQUIRE(zero);
    CHECK(zero->has_value());
    CHECK(s.available() == 1);
}

TEST_CASE("acquire waits until enough permits are released") {
    fixture f;
    semaphore s(1);
    std::optional<result<void>> r;
    auto h = start(f.l, f.l.background(), await_into(&r, s.acquire(3)));
    f.l.run_until_idle();
    CHECK_FALSE(r);
    s.release();
    f.l.run_until_idle();
    CHECK_FALSE(r);
    CHECK(s.available() == 2);
    s.release();
    f.l.run_until_idle();
    REQUIRE(r);
    CHECK(r->has_value());
    CHECK(s.available() == 0);
}

TEST_CASE("a large request at the head holds back smaller ones behind it") {
    fixture f;
    semaphore s(1);
    std::optional<result<void>> big, small;
    auto hb = start(f.l, f.l.background(), await_into(&big, s.acquire(3)));
    f.l.run_until_idle();
    auto hs = start(f.l, f.l.background(), await_into(&small, s.acquire(1)));
    f.l.run_until_idle();
    CHECK_FALSE(big);
    CHECK_FALSE(small);           // one permit is free, but the big request came first
    CHECK_FALSE(s.try_acquire()); // try_acquire does not jump the queue either
    s.release(3);
    f.l.run_until_idle();
    REQUIRE(big);
    REQUIRE(small);
    CHECK(big->has_value());
    CHECK(small->has_value());
    CHECK(s.available() == 0);
}

TEST_CASE("canceling the waiter at the head lets those behind it through") {
    fixture f;
    semaphore s(1);
    auto [ctx, cancel] = with_cancel(f.l.background());
    std::optional<result<void>> big, small;
    auto hb = start(f.l, ctx, await_into(&big, s.acquire(5)));
    f.l.run_until_idle();
    auto hs = start(f.l, f.l.background(), await_into(&small, s.acquire(1)));
    f.l.run_until_idle();
    CHECK_FALSE(small);
    cancel();
    f.l.run_until_idle();
    REQUIRE(big);
    CHECK(big->error() == errc::canceled);
    REQUIRE(small);
    CHECK(small->has_value());
    CHECK(s.available() == 0);
}

TEST_CASE("acquire under an already-canceled context fails at once and takes nothing") {
    fixture f;
    semaphore s(4);
    auto [ctx, cancel] = with_cancel(f.l.background());
    cancel();
    std::optional<result<void>> r;
    auto h = start(f.l, ctx, await_into(&r, s.acquire(1)));
    f.l.run_until_idle();
    REQUIRE(r);
    CHECK(r->error() == errc::canceled);
    CHECK(s.available() == 4);
}

TEST_CASE("an acquire under with_timeout resumes with deadline_exceeded at the deadline") {
    fixture f;
    semaphore s;
    auto [ctx, cancel] = with_timeout(f.l.background(), 5ms);
    std::optional<result<void>> r;
    auto h = start(f.l, ctx, await_into(&r, s.acquire()));
    f.l.run_until_idle();
    f.clk.advance(4ms);
    f.l.run_until_idle();
    CHECK_FALSE(r);
    f.clk.advance(1ms);
    f.l.run_until_idle();
    REQUIRE(r);
    CHECK(r->error() == errc::deadline_exceeded);
    s.release();
    CHECK(s.available() == 1); // the permit was not handed to the departed waiter
}

TEST_CASE("permits granted before the cancel took effect are kept") {
    fixture f;
    semaphore s;
    auto [ctx, cancel] = with_cancel(f.l.background());
    std::optional<result<void>> r;
    auto h = start(f.l, ctx, await_into(&r, s.acquire(2)));
    f.l.run_until_idle();
    struct both {
        static task<void> run(semaphore* sem, cancel_handle* k) {
            sem->release(2); // grants the waiter
            (*k)();          // then cancels it, in the same turn
            co_return;
        }
    };
    f.l.block_on(both::run(&s, &cancel));
    f.l.run_until_idle();
    REQUIRE(r);
    CHECK(r->has_value()); // it holds the two permits
    CHECK(s.available() == 0);
}

TEST_CASE("a semaphore bounds how many tasks run a section at once") {
    fixture f;
    semaphore s(3);
    event go;
    int inside = 0;
    int max_inside = 0;
    int total = 0;
    std::vector<tether::test::started<void>> hs;
    for (int i = 0; i < 20; ++i) {
        hs.push_back(start(f.l, f.l.background(), limited(&go, &s, &inside, &max_inside, &total)));
    }
    f.l.run_until_idle();
    go.set(); // all at once
    f.l.run_until_idle();
    CHECK(total == 20);
    CHECK(max_inside == 3);
    CHECK(s.available() == 3);
}

TEST_CASE("an acquire canceled from another thread resumes with canceled") {
    loop l;
    semaphore s;
    for (std::size_t i = 0; i < tether::test::iterations(2000); ++i) {
        auto [ctx, cancel] = with_cancel(l.background());
        std::optional<result<void>> r;
        auto h = start(l, ctx, await_into(&r, s.acquire()));
        l.run_until_idle();
        REQUIRE_FALSE(r);
        std::barrier go(2);
        std::thread th([&] {
            go.arrive_and_wait();
            cancel();
        });
        go.arrive_and_wait();
        l.poll();
        s.release(); // races the cancel: granted, or left available
        while (!r) {
            l.run_once();
        }
        th.join();
        if (r->has_value()) {
            CHECK(s.available() == 0);
            s.release();
        } else {
            CHECK(r->error() == errc::canceled);
        }
        CHECK(s.available() == 1); // the permit is never lost
        CHECK(s.try_acquire());
    }
}
