#include "context/manual_clock.hpp"
#include "context/with_cancel.hpp"
#include "context/without_cancel.hpp"
#include "runtime/loop.hpp"
#include "runtime/sleep.hpp"
#include "runtime/spawn.hpp"
#include "runtime/task_group.hpp"
#include "tests/runtime/fanout_support.hpp"
#include "tests/support/test_util.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <stdexcept>
#include <thread>
#include <vector>

using namespace tether;
using namespace tether::test;
using namespace std::chrono_literals;

namespace {

task<result<void>> sleep_task(duration d) {
    co_return co_await sleep_for(d);
}

// Counts how many run at once.
struct gauge {
    int now = 0;
    int max = 0;
    int finished = 0;
};

task<void> occupy(gauge* g, duration d) {
    g->max = std::max(g->max, ++g->now);
    (void)co_await sleep_for(d);
    --g->now;
    ++g->finished;
}

// Spawns `n` children that each occupy a slot for `d`, then waits.
task<result<void>> spawn_and_wait(std::ptrdiff_t limit, int n, duration d, gauge* g) {
    task_group group = co_await task_group::make();
    group.set_limit(limit);
    for (int i = 0; i < n; ++i) {
        if (result<void> r = co_await group.spawn(occupy(g, d)); !r) {
            co_return r.error();
        }
    }
    co_return co_await group.wait();
}

// Sleeps 1h; when canceled, sleeps `cleanup` more under without_cancel before returning.
task<result<void>> slow_to_stop(duration cleanup, trace* t) {
    result<void> r = co_await sleep_for(1h);
    context ctx = co_await this_coro::context;
    (void)co_await with_context(without_cancel(ctx), sleep_task(cleanup));
    t->finished = true;
    t->error = r.error();
    co_return r;
}

} // namespace

TEST_CASE("waiting on an empty group succeeds at once and cancels its context") {
    loop l;
    struct t {
        static task<result<void>> run(context* seen) {
            task_group g = co_await task_group::make();
            *seen = g.context();
            CHECK_FALSE(seen->is_done());
            co_return co_await g.wait();
        }
    };
    context seen;
    result<void> r = l.block_on(t::run(&seen));
    CHECK(r.has_value());
    CHECK(seen.err() == errc::canceled); // as errgroup's Wait, even with no error
}

TEST_CASE("the group's context is a child of the one it was made from") {
    loop l;
    auto [parent, cancel] = with_cancel(l.background());
    task_group g(parent);
    CHECK_FALSE(g.context() == parent);
    CHECK_FALSE(g.context().is_done());
    cancel();
    CHECK(g.context().err() == errc::canceled);
}

TEST_CASE("the first error wins, cancels the group's context, and wait returns it") {
    manual_clock clk;
    loop l({.clock = &clk});
    struct t {
        static task<result<void>> run(trace* a, trace* b, context* ctx) {
            task_group g = co_await task_group::make();
            *ctx = g.context();
            (void)co_await g.spawn(sleeper(1h, 1, a));
            (void)co_await g.spawn(fail_after(10ms, io_error()));
            (void)co_await g.spawn(fail_after(20ms, std::make_error_code(std::errc::broken_pipe)));
            (void)co_await g.spawn(sleeper(1h, 2, b));
            co_return co_await g.wait();
        }
    };
    trace a, b;
    context ctx;
    outcome<result<void>> o;
    auto h = start(l, l.background(), &o, t::run(&a, &b, &ctx));
    l.run_until_idle();
    clk.advance(9ms);
    l.run_until_idle();
    CHECK_FALSE(ctx.is_done());
    clk.advance(1ms);
    l.run_until_idle();
    REQUIRE(o.done);
    CHECK(o.value->error() == io_error());
    CHECK(ctx.err() == errc::canceled);
    CHECK(cause(ctx) == io_error()); // errgroup cancels with the error as the cause
    for (trace* tr : {&a, &b}) {
        CHECK(tr->finished);
        CHECK(tr->error == errc::canceled);
        CHECK(tr->cause == io_error());
    }
}

TEST_CASE("successful children's values are dropped and wait succeeds") {
    manual_clock clk;
    loop l({.clock = &clk});
    struct t {
        static task<int> value() { co_return 7; }
        static task<result<void>> run(trace* a) {
            task_group g = co_await task_group::make();
            (void)co_await g.spawn(value());
            (void)co_await g.spawn(sleeper(10ms, 1, a));
            co_return co_await g.wait();
        }
    };
    trace a;
    outcome<result<void>> o;
    auto h = start(l, l.background(), &o, t::run(&a));
    l.run_until_idle();
    CHECK_FALSE(o.done);
    clk.advance(10ms);
    l.run_until_idle();
    REQUIRE(o.done);
    CHECK(o.value->has_value());
    CHECK(a.finished);
    CHECK_FALSE(a.error);
}

TEST_CASE("a child's exception cancels the group and is rethrown by wait after the rest") {
    manual_clock clk;
    loop l({.clock = &clk});
    struct t {
        static task<result<void>> run(trace* a) {
            task_group g = co_await task_group::make();
            (void)co_await g.spawn(slow_to_stop(5ms, a));
            (void)co_await g.spawn(throw_after(10ms, "boom"));
            co_return co_await g.wait();
        }
    };
    trace a;
    outcome<result<void>> o;
    auto h = start(l, l.background(), &o, t::run(&a));
    l.run_until_idle();
    clk.advance(10ms);
    l.run_until_idle();
    CHECK_FALSE(o.done); // a is cleaning up
    clk.advance(5ms);
    l.run_until_idle();
    REQUIRE(o.done);
    CHECK(a.finished);
    CHECK(a.error == errc::canceled);
    REQUIRE(o.exception);
    CHECK_THROWS_WITH_AS(std::rethrow_exception(o.exception), "boom", std::runtime_error);
}

TEST_CASE("set_limit bounds how many children run at once") {
    manual_clock clk;
    loop l({.clock = &clk});
    gauge g;
    outcome<result<void>> o;
    SUBCASE("at most two of five run at once; spawning waits for a slot") {
        auto h = start(l, l.background(), &o, spawn_and_wait(2, 5, 10ms, &g));
        l.run_until_idle();
        CHECK(g.now == 2);
        clk.advance(10ms);
        l.run_until_idle();
        CHECK(g.finished == 2);
        CHECK(g.now == 2);
        clk.advance(10ms);
        l.run_until_idle();
        CHECK(g.now == 1);
        CHECK_FALSE(o.done);
        clk.advance(10ms);
        l.run_until_idle();
        REQUIRE(o.done);
        CHECK(o.value->has_value());
        CHECK(g.max == 2);
        CHECK(g.finished == 5);
    }
    SUBCASE("without a limit all run at once") {
        auto h = start(l, l.background(), &o, spawn_and_wait(-1, 5, 10ms, &g));
        l.run_until_idle();
        CHECK(g.now == 5);
        clk.advance(10ms);
        l.run_until_idle();
        REQUIRE(o.done);
        CHECK(g.max == 5);
    }
}

TEST_CASE("try_spawn returns false at the limit and leaves the task untouched") {
    manual_clock clk;
    loop l({.clock = &clk});
    struct t {
        static task<result<void>> run(gauge* g, bool* first, bool* second, bool* third) {
            task_group grp = co_await task_group::make();
            grp.set_limit(1);
            *first = grp.try_spawn(occupy(g, 10ms));
            task<void> next = occupy(g, 10ms);
            *second = grp.try_spawn(std::move(next));
            CHECK(static_cast<bool>(next)); // not taken
            (void)co_await sleep_for(15ms); // the first child is done at 10ms
            *third = grp.try_spawn(std::move(next));
            CHECK_FALSE(static_cast<bool>(next));
            co_return co_await grp.wait();
        }
    };
    gauge g;
    bool first = false, second = true, third = false;
    outcome<result<void>> o;
    auto h = start(l, l.background(), &o, t::run(&g, &first, &second, &third));
    l.run_until_idle();
    clk.advance(10ms);
    l.run_until_idle();
    clk.advance(5ms);
    l.run_until_idle();
    clk.advance(10ms);
    l.run_until_idle();
    REQUIRE(o.done);
    CHECK(first);
    CHECK_FALSE(second);
    CHECK(third);
    CHECK(g.finished == 2);
    CHECK(g.max == 1);
}

TEST_CASE("a spawn waiting for a slot resumes with the spawner's cancellation") {
    manual_clock clk;
    loop l({.clock = &clk});
    auto [ctx, cancel] = with_cancel(l.background());
    struct t {
        // The group is made from background: only the spawner is canceled.
        static task<result<void>> run(context bg, gauge* g, result<void>* blocked) {
            task_group grp(bg);
            grp.set_limit(1);
            (void)co_await grp.spawn(occupy(g, 10ms));
            *blocked = co_await grp.spawn(occupy(g, 10ms));
            co_return co_await grp.wait();
        }
    };
    gauge g;
    result<void> blocked;
    outcome<result<void>> o;
    auto h = start(l, ctx, &o, t::run(l.background(), &g, &blocked));
    l.run_until_idle();
    CHECK(g.now == 1);
    cancel(); // the spawner's context, not the group's
    l.run_until_idle();
    CHECK(blocked.error() == errc::canceled);
    // wait() under the canceled context canceled the group: its child's sleep ended.
    REQUIRE(o.done);
    CHECK(g.finished == 1); // the blocked child never started
    CHECK(g.max == 1);
}

TEST_CASE("with a limit of zero nothing starts, and spawn waits until canceled") {
    loop l;
    auto [ctx, cancel] = with_cancel(l.background());
    struct t {
        static task<result<void>> run(context bg, gauge* g) {
            task_group grp(bg);
            grp.set_limit(0);
            CHECK_FALSE(grp.try_spawn(occupy(g, 1ms)));
            result<void> r = co_await grp.spawn(occupy(g, 1ms));
            CHECK(r.error() == errc::canceled);
            co_return co_await grp.wait();
        }
    };
    gauge g;
    outcome<result<void>> o;
    auto h = start(l, ctx, &o, t::run(l.background(), &g));
    l.run_until_idle();
    CHECK_FALSE(o.done);
    cancel();
    l.run_until_idle();
    REQUIRE(o.done);
    CHECK(o.value->has_value());
    CHECK(g.finished == 0);
}

TEST_CASE("canceling the waiter's context cancels the group, and wait still waits") {
    manual_clock clk;
    loop l({.clock = &clk});
    auto [ctx, cancel] = with_cancel(l.background());
    struct t {
        static task<result<void>> run(context bg, trace* a, trace* b) {
            task_group g(bg); // not a child of the waiter's context
            (void)co_await g.spawn(slow_to_stop(5ms, a));
            (void)co_await g.spawn(slow_to_stop(10ms, b));
            co_return co_await g.wait();
        }
    };
    trace a, b;
    outcome<result<void>> o;
    auto h = start(l, ctx, &o, t::run(l.background(), &a, &b));
    l.run_until_idle();
    cancel();
    l.run_until_idle();
    CHECK_FALSE(o.done);
    clk.advance(5ms);
    l.run_until_idle();
    CHECK(a.finished);
    CHECK_FALSE(o.done);
    clk.advance(5ms);
    l.run_until_idle();
    REQUIRE(o.done);
    CHECK(b.finished);
    CHECK(o.value->error() == errc::canceled);
}

TEST_CASE("wait under an already-canceled context cancels the children and waits for them") {
    manual_clock clk;
    loop l({.clock = &clk});
    auto [ctx, cancel] = with_cancel(l.background());
    struct t {
        static task<result<void>> run(context bg, trace* a, context* waiter_ctx) {
            task_group g(bg);
            (void)co_await g.spawn(slow_to_stop(5ms, a));
            CHECK(waiter_ctx->is_done());
            co_return co_await g.wait();
        }
    };
    trace a;
    outcome<result<void>> o;
    cancel();
    auto h = start(l, ctx, &o, t::run(l.background(), &a, &ctx));
    l.run_until_idle();
    CHECK_FALSE(o.done);
    clk.advance(5ms);
    l.run_until_idle();
    REQUIRE(o.done);
    CHECK(a.finished);
    CHECK(o.value->error() == errc::canceled);
}

TEST_CASE("children can spawn more children into their group") {
    manual_clock clk;
    loop l({.clock = &clk});
    struct t {
        // Each node sleeps 1ms, then spawns two children until depth 0: 2^(d+1) - 1 in all.
        // (No limit: a child blocked in spawn holds its own slot, so with one the tree
        // could deadlock, as it could with Go's errgroup.)
        static task<void> node(task_group* g, int depth, int* count) {
            ++*count;
            (void)co_await sleep_for(1ms);
            if (depth > 0) {
                (void)co_await g->spawn(node(g, depth - 1, count));
                (void)co_await g->spawn(node(g, depth - 1, count));
            }
        }
        static task<result<void>> run(int* count) {
            task_group g = co_await task_group::make();
            (void)co_await g.spawn(node(&g, 4, count));
            co_return co_await g.wait();
        }
    };
    int count = 0;
    outcome<result<void>> o;
    auto h = start(l, l.background(), &o, t::run(&count));
    for (int i = 0; i < 100 && !o.done; ++i) {
        l.run_until_idle();
        clk.advance(1ms);
    }
    REQUIRE(o.done);
    CHECK(o.value->has_value());
    CHECK(count == 31);
}

TEST_CASE("a group destroyed with running children cancels them; they finish on their own") {
    counted::reset();
    {
        manual_clock clk;
        loop l({.clock = &clk});
        struct t {
            static task<void> hold(trace* tr) {
                counted c;
                result<void> r = co_await sleep_for(1h);
                tr->finished = true;
                tr->error = r.error();
            }
            static task<void> run(trace* tr) {
                task_group g = co_await task_group::make();
                (void)co_await g.spawn(hold(tr));
                co_return; // no wait(): the group goes away with its child running
            }
        };
        trace tr;
        l.block_on(t::run(&tr));
        l.run_until_idle();
        CHECK(tr.finished);
        CHECK(tr.error == errc::canceled);
    }
    CHECK(counted::alive() == 0);
}

TEST_CASE("destroying a group resumes spawners waiting for a slot with canceled") {
    manual_clock clk;
    loop l({.clock = &clk});
    struct t {
        static task<void> outsider(task_group* g, gauge* gg, result<void>* r) {
            *r = co_await g->spawn(occupy(gg, 1ms));
        }
        static task<int> run(gauge* gg, result<void>* r) {
            task_group g = co_await task_group::make();
            g.set_limit(1);
            (void)co_await g.spawn(occupy(gg, 1h));
            // Another task, under background, waits for a slot of this group.
            join_handle<void> h = spawn(background(), outsider(&g, gg, r));
            (void)co_await sleep_for(1ms); // it is now blocked
            h.detach();
            co_return 0; // no wait(): the group goes away
        }
    };
    gauge gg;
    result<void> r;
    outcome<int> o;
    auto h = start(l, l.background(), &o, t::run(&gg, &r));
    l.run_until_idle();
    clk.advance(1ms);
    l.run_until_idle();
    REQUIRE(o.done);
    CHECK(r.error() == errc::canceled);
    CHECK(gg.finished == 1); // the running child was canceled; the blocked one never ran
    CHECK(gg.max == 1);
}

TEST_CASE("a group can be waited on again after more spawns") {
    manual_clock clk;
    loop l({.clock = &clk});
    struct t {
        static task<result<void>> run(gauge* g) {
            task_group grp = co_await task_group::make();
            (void)co_await grp.spawn(occupy(g, 1ms));
            result<void> first = co_await grp.wait();
            CHECK(first.has_value());
            CHECK(grp.context().is_done());
            (void)co_await grp.spawn(occupy(g, 1ms)); // runs under the canceled context
            co_return co_await grp.wait();
        }
    };
    gauge g;
    outcome<result<void>> o;
    auto h = start(l, l.background(), &o, t::run(&g));
    l.run_until_idle();
    clk.advance(1ms);
    l.run_until_idle();
    REQUIRE(o.done);
    CHECK(o.value->has_value());
    CHECK(g.finished == 2);
}

TEST_CASE("canceling the group's parent from another thread while wait is suspended") {
    for (std::size_t i = 0; i < iterations(200); ++i) {
        loop l;
        auto [ctx, cancel] = with_cancel(l.background());
        std::atomic<bool> go{false};
        std::thread th([&go, c = &cancel] {
            while (!go.load(std::memory_order_acquire)) {
                std::this_thread::yield();
            }
            (*c)();
        });
        struct t {
            static task<result<void>> run(std::atomic<bool>* go, trace* a, trace* b) {
                task_group g = co_await task_group::make();
                g.set_limit(1);
                (void)co_await g.spawn(sleeper(1h, 1, a));
                go->store(true, std::memory_order_release);
                // Waits for a slot (canceled by the other thread), or starts after a.
                (void)co_await g.spawn(sleeper(1h, 2, b));
                co_return co_await g.wait();
            }
        };
        trace a, b;
        result<void> r = l.block_on(ctx, t::run(&go, &a, &b));
        th.join();
        CHECK(r.error() == errc::canceled);
        CHECK(a.finished);
    }
}
