// The shared cancel registration of a spawned task's awaits (detail::await_chain): made at
// the chain_after-th armed await, cancel still reaches whatever the task waits on (same loop,
// another thread, after switch_to, in awaited tasks, under other contexts), and nothing outlives
// it.

#include "context/with_cancel.hpp"
#include "runtime/channel.hpp"
#include "runtime/loop.hpp"
#include "runtime/runtime.hpp"
#include "runtime/sleep.hpp"
#include "runtime/spawn.hpp"
#include "runtime/switch_to.hpp"
#include "runtime/when_all.hpp"
#include "tests/support/test_util.hpp"

#include <doctest/doctest.h>

#include <atomic>
#include <thread>
#include <vector>

using namespace tether;
using namespace tether::test;
using namespace std::chrono_literals;

namespace {

// Receives from `ch` until an error; records how many registrations its context has
// between awaits (the chain's, once it exists); true if a cancel ended it.
task<bool> receive_loop(channel<int>* ch, std::vector<std::uint32_t>* regs) {
    const context& ctx = co_await detail::context_ref_reader{};
    for (;;) {
        result<int> r = co_await ch->receive();
        if (!r) {
            co_return r.error() == errc::canceled;
        }
        regs->push_back(detail::registration_count(ctx));
    }
}

task<void> receive_into(channel<int>* ch, std::vector<std::uint32_t>* regs, bool* canceled) {
    *canceled = co_await receive_loop(ch, regs);
}

task<std::error_code> receive_one(channel<int>* ch) {
    result<int> r = co_await ch->receive();
    co_return r ? std::error_code{} : r.error();
}

// The same wait, one awaited task down.
task<bool> receive_nested(channel<int>* ch, int* received) {
    for (;;) {
        if (std::error_code e = co_await receive_one(ch)) {
            co_return e == errc::canceled;
        }
        ++*received;
    }
}

task<result<void>> sleep_long() {
    co_return co_await sleep_for(1h);
}

// Sleeps in steps of 1 ms until its context ends it; true if that was a cancel and the
// task resumed on `l` every time.
task<bool> sleep_steps(loop* l, std::atomic<int>* steps) {
    for (;;) {
        result<void> r = co_await sleep_for(1ms);
        if (co_await this_coro::loop != l) {
            co_return false;
        }
        if (!r) {
            co_return r.error() == errc::canceled;
        }
        steps->fetch_add(1, std::memory_order_relaxed);
    }
}

} // namespace

constexpr std::size_t chain_after = detail::chain_owner::chain_after;

TEST_CASE("a spawned task's awaits share one registration from the chain_after-th on") {
    loop l;
    l.block_on([]() -> task<void> {
        const context& parent = co_await detail::context_ref_reader{};
        channel<int> ch;
        std::vector<std::uint32_t> regs;
        auto h = co_await spawn(receive_loop(&ch, &regs));
        for (std::size_t i = 0; i < chain_after + 2; ++i) {
            co_await sleep_for(1ms); // the task waits in its receive when the value comes
            REQUIRE(co_await ch.send(static_cast<int>(i)));
        }
        co_await sleep_for(1ms); // it takes the last value and waits again
        // Before the chain the task holds nothing between awaits; from the chain_after-th
        // receive on, the chain's registration stays.
        REQUIRE(regs.size() == chain_after + 2);
        for (std::size_t i = 0; i < chain_after + 2; ++i) {
            CHECK(regs[i] == (i + 1 < chain_after ? 0U : 1U));
        }
        h.cancel(); // suspended in its next receive, which the chain's registration cancels
        result<bool> canceled = co_await h;
        CHECK(canceled.value());
        // The task's context left its parent, chain and all.
        CHECK(detail::registration_count(parent) == 0);
    }());
}

TEST_CASE("a cancel reaches an await in a task the spawned task awaits") {
    loop l;
    l.block_on([]() -> task<void> {
        channel<int> ch;
        int received = 0;
        auto h = co_await spawn(receive_nested(&ch, &received));
        for (std::size_t i = 0; i < chain_after + 2; ++i) {
            co_await sleep_for(1ms);
            REQUIRE(co_await ch.send(static_cast<int>(i)));
        }
        co_await sleep_for(1ms);
        CHECK(static_cast<std::size_t>(received) == chain_after + 2);
        h.cancel();
        result<bool> canceled = co_await h;
        CHECK(canceled.value());
    }());
}

TEST_CASE("a task canceled while it runs fails at its next await under the chain") {
    loop l;
    l.block_on([]() -> task<void> {
        channel<int> ch;
        std::vector<std::uint32_t> regs;
        auto h = co_await spawn(receive_loop(&ch, &regs));
        for (std::size_t i = 0; i < chain_after + 1; ++i) {
            co_await sleep_for(1ms);
            REQUIRE(co_await ch.send(static_cast<int>(i))); // hands the value to the waiting task
        }
        h.cancel(); // the task is queued to run, between two of its awaits
        result<bool> canceled = co_await h;
        CHECK(canceled.value());
        // It took the last value, then failed at its next receive.
        CHECK(regs.size() == chain_after + 1);
    }());
}

TEST_CASE("an await under another context inside a chained task uses its own registration") {
    loop l;
    l.block_on([]() -> task<void> {
        bool timed_out = false;
        auto h = co_await spawn([](bool* reached) -> task<bool> {
            // These sleeps make the chain on the task's context.
            for (std::size_t i = 0; i < chain_after; ++i) {
                (void)co_await sleep_for(1ms);
            }
            // A deadline of a child context still ends an await.
            result<void> r = co_await tether::with_timeout(2ms, sleep_long());
            if (r || r.error() != errc::deadline_exceeded) {
                co_return false;
            }
            *reached = true;
            // And the task's own cancel still reaches its chained awaits.
            r = co_await sleep_for(1h);
            co_return !r && r.error() == errc::canceled;
        }(&timed_out));
        // Cancel only once the timeout has ended its await: a fixed sleep here could end
        // first on a loaded machine, and the cancel would then reach the timed await.
        while (!timed_out) {
            co_await sleep_for(1ms);
        }
        h.cancel();
        result<bool> ok = co_await h;
        CHECK(ok.value());
    }());
}

TEST_CASE("cancels from a foreign thread reach chained awaits on another loop") {
    // Hundreds of rounds: the cancel races the chain's making and the task's awaits.
    runtime rt(runtime::options{.loops = 2});
    for (std::size_t round = 0; round < iterations(300); ++round) {
        auto [ctx, cancel] = with_cancel(rt.loop(0).background());
        std::atomic<int> steps{0};
        bool ok = false;
        auto main = [&]() -> task<void> {
            auto h = spawn_on(rt.loop(1), ctx, sleep_steps(&rt.loop(1), &steps));
            int wait_for = static_cast<int>(round % 4);
            std::jthread canceler([&cancel, &steps, wait_for] {
                while (steps.load(std::memory_order_relaxed) < wait_for) {
                    std::this_thread::yield();
                }
                cancel.cancel();
            });
            ok = (co_await h).value();
        };
        rt.block_on(main());
        REQUIRE(ok);
    }
}

TEST_CASE("a chained task that switches loops is canceled on the loop it waits on") {
    runtime rt(runtime::options{.loops = 2});
    rt.block_on([&]() -> task<void> {
        std::atomic<int> steps{0};
        auto h = co_await spawn([](runtime* r, std::atomic<int>* n) -> task<bool> {
            // A chain on loop 0, then on loop 1, then back.
            for (std::size_t i = 0; i < chain_after; ++i) {
                (void)co_await sleep_for(1ms);
            }
            co_await switch_to(r->loop(1));
            for (std::size_t i = 0; i < chain_after; ++i) {
                (void)co_await sleep_for(1ms);
            }
            co_await switch_to(r->loop(0));
            co_return co_await sleep_steps(&r->loop(0), n);
        }(&rt, &steps));
        while (steps.load() < 3) {
            co_await sleep_for(1ms);
        }
        h.cancel();
        result<bool> ok = co_await h;
        CHECK(ok.value());

        // Canceled while it waits on loop 1, with a chain made there.
        std::atomic<int> there{0};
        auto h2 = co_await spawn([](runtime* r, std::atomic<int>* n) -> task<bool> {
            for (std::size_t i = 0; i < chain_after; ++i) {
                (void)co_await sleep_for(1ms);
            }
            co_await switch_to(r->loop(1));
            co_return co_await sleep_steps(&r->loop(1), n);
        }(&rt, &there));
        while (there.load() < 3) {
            co_await sleep_for(1ms);
        }
        h2.cancel();
        result<bool> ok2 = co_await h2;
        CHECK(ok2.value());
    }());
}

TEST_CASE("when_all children waiting together each keep their own chain") {
    loop l;
    l.block_on([]() -> task<void> {
        channel<int> a;
        channel<int> b;
        std::vector<std::uint32_t> ra;
        std::vector<std::uint32_t> rb;
        bool canceled_a = false;
        bool canceled_b = false;
        auto h = co_await spawn(
            when_all(receive_into(&a, &ra, &canceled_a), receive_into(&b, &rb, &canceled_b)));
        for (std::size_t i = 0; i < chain_after + 1; ++i) {
            co_await sleep_for(1ms); // both wait in their receives
            REQUIRE(co_await a.send(static_cast<int>(i)));
            REQUIRE(co_await b.send(static_cast<int>(i)));
        }
        co_await sleep_for(1ms);
        CHECK(ra.size() == chain_after + 1);
        CHECK(rb.size() == chain_after + 1);
        h.cancel(); // both are suspended at once: each chain cancels its own await
        (void)co_await h;
        CHECK(canceled_a);
        CHECK(canceled_b);
    }());
}
