#include "context/with_cancel.hpp"
#include "context/with_deadline.hpp"
#include "runtime/event.hpp"
#include "runtime/loop.hpp"
#include "runtime/mutex.hpp"
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

using lock_result = result<mutex::guard>;

task<void> lock_and_record(mutex* m, int id, std::vector<int>* order) {
    lock_result g = co_await m->lock();
    if (g) {
        order->push_back(id);
        co_await yield_now{};
    }
}

task<void> critical(event* go, mutex* m, int rounds, int* inside, int* max_inside, int* total) {
    if (result<void> started = co_await go->wait(); !started) {
        co_return;
    }
    for (int i = 0; i < rounds; ++i) {
        lock_result g = co_await m->lock();
        if (!g) {
            co_return;
        }
        ++*inside;
        *max_inside = std::max(*max_inside, *inside);
        co_await yield_now{}; // others run while we hold the lock
        ++*total;
        --*inside;
    }
}

} // namespace

TEST_CASE("lock on a free mutex takes it without waiting; the guard unlocks it") {
    fixture f;
    mutex m;
    std::optional<lock_result> g;
    auto h = start(f.l, f.l.background(), await_into(&g, m.lock()));
    f.l.run_until_idle();
    REQUIRE(g);
    REQUIRE(g->has_value());
    CHECK((*g)->owns_lock());
    CHECK(m.is_locked());
    g.reset();
    CHECK_FALSE(m.is_locked());
}

TEST_CASE("a second locker waits until the first unlocks") {
    fixture f;
    mutex m;
    std::optional<mutex::guard> first = m.try_lock();
    REQUIRE(first);
    CHECK_FALSE(m.try_lock());
    std::optional<lock_result> g;
    auto h = start(f.l, f.l.background(), await_into(&g, m.lock()));
    f.l.run_until_idle();
    CHECK_FALSE(g);
    first->unlock();
    CHECK(m.is_locked());      // handed straight to the waiter
    CHECK_FALSE(m.try_lock()); // so nobody can barge in before it runs
    f.l.run_until_idle();
    REQUIRE(g);
    CHECK(g->has_value());
    g.reset();
    CHECK_FALSE(m.is_locked());
}

TEST_CASE("waiters get the lock in arrival order") {
    fixture f;
    mutex m;
    std::optional<mutex::guard> first = m.try_lock();
    std::vector<int> order;
    std::vector<tether::test::started<void>> hs;
    for (int i = 0; i < 5; ++i) {
        hs.push_back(start(f.l, f.l.background(), lock_and_record(&m, i, &order)));
        f.l.run_until_idle();
    }
    CHECK(order.empty());
    first.reset();
    f.l.run_until_idle();
    CHECK(order == std::vector<int>{0, 1, 2, 3, 4});
    CHECK_FALSE(m.is_locked());
}

TEST_CASE("lock under an already-canceled context fails at once, even on a free mutex") {
    fixture f;
    mutex m;
    auto [ctx, cancel] = with_cancel(f.l.background());
    cancel();
    std::optional<lock_result> g;
    auto h = start(f.l, ctx, await_into(&g, m.lock()));
    f.l.run_until_idle();
    REQUIRE(g);
    CHECK(g->error() == errc::canceled);
    CHECK_FALSE(m.is_locked());
}

TEST_CASE("a canceled waiter leaves the queue and the lock goes to the next one") {
    fixture f;
    mutex m;
    std::optional<mutex::guard> first = m.try_lock();
    auto [ctx, cancel] = with_cancel(f.l.background());
    std::optional<lock_result> b, c;
    auto hb = start(f.l, ctx, await_into(&b, m.lock()));
    f.l.run_until_idle();
    auto hc = start(f.l, f.l.background(), await_into(&c, m.lock()));
    f.l.run_until_idle();
    cancel();
    f.l.run_until_idle();
    REQUIRE(b);
    CHECK(b->error() == errc::canceled);
    CHECK_FALSE(c);
    first.reset();
    f.l.run_until_idle();
    REQUIRE(c);
    CHECK(c->has_value());
    c.reset();
    CHECK_FALSE(m.is_locked());
}

TEST_CASE("a lock wait under with_timeout resumes with deadline_exceeded at the deadline") {
    fixture f;
    mutex m;
    std::optional<mutex::guard> first = m.try_lock();
    auto [ctx, cancel] = with_timeout(f.l.background(), 20ms);
    std::optional<lock_result> g;
    auto h = start(f.l, ctx, await_into(&g, m.lock()));
    f.l.run_until_idle();
    f.clk.advance(19ms);
    f.l.run_until_idle();
    CHECK_FALSE(g);
    f.clk.advance(1ms);
    f.l.run_until_idle();
    REQUIRE(g);
    CHECK(g->error() == errc::deadline_exceeded);
    first.reset();
    CHECK_FALSE(m.is_locked()); // nobody was waiting any more
}

TEST_CASE("a lock granted before the cancel took effect is kept, not lost") {
    fixture f;
    mutex m;
    std::optional<mutex::guard> first = m.try_lock();
    auto [ctx, cancel] = with_cancel(f.l.background());
    std::optional<lock_result> g;
    auto h = start(f.l, ctx, await_into(&g, m.lock()));
    f.l.run_until_idle();
    struct both {
        static task<void> run(std::optional<mutex::guard>* held, cancel_handle* k) {
            held->reset(); // grants the waiter
            (*k)();        // then cancels it, in the same turn
            co_return;
        }
    };
    f.l.block_on(both::run(&first, &cancel));
    f.l.run_until_idle();
    REQUIRE(g);
    REQUIRE(g->has_value()); // the waiter owns the lock
    CHECK(m.is_locked());
    g.reset();
    CHECK_FALSE(m.is_locked());
}

TEST_CASE("tasks holding the lock across suspensions exclude each other") {
    fixture f;
    mutex m;
    event go;
    int inside = 0;
    int max_inside = 0;
    int total = 0;
    std::vector<tether::test::started<void>> hs;
    for (int i = 0; i < 10; ++i) {
        hs.push_back(
            start(f.l, f.l.background(), critical(&go, &m, 20, &inside, &max_inside, &total)));
    }
    f.l.run_until_idle();
    CHECK(total == 0);
    go.set(); // all contend at once
    f.l.run_until_idle();
    for (auto& h : hs) {
        CHECK(h.done());
    }
    CHECK(max_inside == 1);
    CHECK(total == 200);
    CHECK_FALSE(m.is_locked());
}

TEST_CASE("a guard can be moved, unlocked early and released") {
    mutex m;
    std::optional<mutex::guard> g = m.try_lock();
    REQUIRE(g);
    mutex::guard moved = std::move(*g);
    CHECK_FALSE(g->owns_lock());
    CHECK(moved.owns_lock());
    moved.unlock();
    CHECK_FALSE(moved);
    CHECK_FALSE(m.is_locked());
    std::optional<mutex::guard> again = m.try_lock();
    REQUIRE(again);
    mutex* raw = again->release();
    CHECK(raw == &m);
    again.reset();
    CHECK(m.is_locked()); // released, not unlocked
    mutex::guard adopted(m, std::adopt_lock);
}

TEST_CASE("a lock wait canceled from another thread resumes with canceled") {
    loop l;
    mutex m;
    for (std::size_t i = 0; i < tether::test::iterations(2000); ++i) {
        std::optional<mutex::guard> first = m.try_lock();
        REQUIRE(first);
        auto [ctx, cancel] = with_cancel(l.background());
        std::optional<lock_result> g;
        auto h = start(l, ctx, await_into(&g, m.lock()));
        l.run_until_idle();
        REQUIRE_FALSE(g);
        std::barrier go(2);
        std::thread th([&] {
            go.arrive_and_wait();
            cancel();
        });
        go.arrive_and_wait();
        if (i % 2 == 0) {
            l.poll(); // sometimes the cancel runs first, sometimes the unlock
            first.reset();
        }
        while (!g) {
            l.run_once();
        }
        th.join();
        first.reset();
        if (g->has_value()) {
            CHECK(m.is_locked()); // granted before the cancel ran: the waiter holds it
        } else {
            CHECK(g->error() == errc::canceled);
        }
        g.reset();
        CHECK_FALSE(m.is_locked()); // in every case the lock ends up free: nothing lost
    }
}
