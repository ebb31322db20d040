#include "context/with_cancel.hpp"
#include "context/with_deadline.hpp"
#include "runtime/channel.hpp"
#include "runtime/loop.hpp"
#include "runtime/select.hpp"
#include "tests/runtime/sync_support.hpp"
#include "tests/support/manual_loop.hpp"
#include "tests/support/test_util.hpp"

#include <doctest/doctest.h>

#include <barrier>
#include <memory>
#include <optional>
#include <thread>
#include <variant>

using namespace tether;
using namespace std::chrono_literals;
using tether::test::await_into;
using tether::test::counted;
using tether::test::start;

namespace {

using fixture = tether::test::manual_loop;

// What `select(a.receive(), b.receive())` gives.
using two_receives = result<std::variant<result<int>, result<int>>>;
// What `select(a.receive(), ctx.done())` gives.
using receive_or_done = result<std::variant<result<int>, std::monostate>>;

task<void> select_many(channel<int>* a, channel<int>* b, int n, int* wins_a, int* wins_b) {
    for (int i = 0; i < n; ++i) {
        two_receives r = co_await select(a->receive(), b->receive());
        if (!r) {
            co_return;
        }
        ++(r->index() == 0 ? *wins_a : *wins_b);
    }
}

} // namespace

TEST_CASE("select performs the one ready case and leaves the others alone") {
    fixture f;
    channel<int> a(1), b(1);
    CHECK(a.try_send(1));
    std::optional<two_receives> r;
    auto h = start(f.l, f.l.background(), await_into(&r, select(a.receive(), b.receive())));
    f.l.run_until_idle();
    REQUIRE(r);
    REQUIRE(r->has_value());
    REQUIRE((*r)->index() == 0);
    CHECK(std::get<0>(**r).value() == 1);
    CHECK(a.size() == 0);
    CHECK(b.try_send(2)); // b saw nothing of the select: its slot is free
}

TEST_CASE("a send case fires when a receiver is waiting") {
    fixture f;
    channel<int> a, b;
    std::optional<result<int>> got;
    auto rh = start(f.l, f.l.background(), await_into(&got, b.receive()));
    f.l.run_until_idle();
    std::optional<result<std::variant<result<int>, result<void>>>> r;
    auto h = start(f.l, f.l.background(), await_into(&r, select(a.receive(), b.send(9))));
    f.l.run_until_idle();
    REQUIRE(r);
    REQUIRE(r->has_value());
    CHECK((*r)->index() == 1);
    CHECK(std::get<1>(**r).has_value());
    REQUIRE(got);
    CHECK(got->value() == 9);
}

TEST_CASE("a waiting select fires only the case that became ready") {
    fixture f;
    channel<int> a, b;
    std::optional<two_receives> r;
    auto h = start(f.l, f.l.background(), await_into(&r, select(a.receive(), b.receive())));
    f.l.run_until_idle();
    CHECK_FALSE(r);
    CHECK(b.try_send(2));
    CHECK(a.try_send(1).error() == channel_errc::full); // the select left a's queue
    f.l.run_until_idle();
    REQUIRE(r);
    REQUIRE(r->has_value());
    REQUIRE((*r)->index() == 1);
    CHECK(std::get<1>(**r).value() == 2);
}

TEST_CASE("two waiting selects on the same channels each take one value") {
    fixture f;
    channel<int> a, b;
    std::optional<two_receives> r1, r2;
    auto h1 = start(f.l, f.l.background(), await_into(&r1, select(a.receive(), b.receive())));
    f.l.run_until_idle();
    auto h2 = start(f.l, f.l.background(), await_into(&r2, select(a.receive(), b.receive())));
    f.l.run_until_idle();
    CHECK(b.try_send(1)); // to the first, which then leaves a's queue
    CHECK(a.try_send(2)); // to the second
    CHECK(a.try_send(3).error() == channel_errc::full);
    CHECK(b.try_send(3).error() == channel_errc::full);
    f.l.run_until_idle();
    REQUIRE(r1);
    REQUIRE(r2);
    CHECK((*r1)->index() == 1);
    CHECK(std::get<1>(**r1).value() == 1);
    CHECK((*r2)->index() == 0);
    CHECK(std::get<0>(**r2).value() == 2);
}

TEST_CASE("among several ready cases each is chosen sometimes, and only one is consumed") {
    fixture f;
    constexpr int n = 400;
    channel<int> a(n), b(n);
    for (int i = 0; i < n; ++i) {
        CHECK(a.try_send(i));
        CHECK(b.try_send(i));
    }
    int wins_a = 0;
    int wins_b = 0;
    auto h = start(f.l, f.l.background(), select_many(&a, &b, n, &wins_a, &wins_b));
    f.l.run_until_idle();
    REQUIRE(h.done());
    CHECK(wins_a + wins_b == n);
    CHECK(wins_a > n / 10); // random choice: neither side starves
    CHECK(wins_b > n / 10);
    CHECK(a.size() + b.size() == static_cast<std::size_t>(n));
}

TEST_CASE("cases on a closed channel fire with closed") {
    fixture f;
    channel<int> a, b;
    SUBCASE("a receive case") {
        std::optional<two_receives> r;
        auto h = start(f.l, f.l.background(), await_into(&r, select(a.receive(), b.receive())));
        f.l.run_until_idle();
        CHECK(a.close());
        f.l.run_until_idle();
        REQUIRE(r);
        REQUIRE(r->has_value());
        CHECK((*r)->index() == 0);
        CHECK(std::get<0>(**r).error() == channel_errc::closed);
    }
    SUBCASE("a send case, already closed") {
        CHECK(b.close());
        std::optional<result<std::variant<result<int>, result<void>>>> r;
        auto h = start(f.l, f.l.background(), await_into(&r, select(a.receive(), b.send(1))));
        f.l.run_until_idle();
        REQUIRE(r);
        REQUIRE(r->has_value());
        CHECK((*r)->index() == 1);
        CHECK(std::get<1>(**r).error() == channel_errc::closed);
    }
}

TEST_CASE("a done case fires when its context is done") {
    fixture f;
    channel<int> a;
    auto [other, cancel] = with_cancel(f.l.background());
    std::optional<receive_or_done> r;
    SUBCASE("canceled while waiting") {
        auto h = start(f.l, f.l.background(), await_into(&r, select(a.receive(), other.done())));
        f.l.run_until_idle();
        CHECK_FALSE(r);
        cancel();
        f.l.run_until_idle();
    }
    SUBCASE("already done") {
        cancel();
        auto h = start(f.l, f.l.background(), await_into(&r, select(a.receive(), other.done())));
        f.l.run_until_idle();
    }
    REQUIRE(r);
    REQUIRE(r->has_value());
    CHECK((*r)->index() == 1);
    CHECK(a.try_send(1).error() == channel_errc::full); // nobody waits on a any more
}

TEST_CASE("a done case of a context with a deadline fires at the deadline") {
    fixture f;
    channel<int> a;
    auto [other, cancel] = with_timeout(f.l.background(), 10ms);
    std::optional<receive_or_done> r;
    auto h = start(f.l, f.l.background(), await_into(&r, select(a.receive(), other.done())));
    f.l.run_until_idle();
    f.clk.advance(9ms);
    f.l.run_until_idle();
    CHECK_FALSE(r);
    f.clk.advance(1ms);
    f.l.run_until_idle();
    REQUIRE(r);
    REQUIRE(r->has_value());
    CHECK((*r)->index() == 1);
}

TEST_CASE("select under an already-canceled context fails at once and consumes nothing") {
    fixture f;
    channel<int> a(1), b;
    CHECK(a.try_send(1));
    auto [ctx, cancel] = with_cancel(f.l.background());
    cancel();
    std::optional<result<std::variant<result<int>, result<void>>>> r;
    auto h = start(f.l, ctx, await_into(&r, select(a.receive(), b.send(2))));
    f.l.run_until_idle();
    REQUIRE(r);
    CHECK(r->error() == errc::canceled);
    CHECK(a.size() == 1);
    CHECK(b.try_receive().error() == channel_errc::empty);
}

TEST_CASE("a ready done case wins over the task's own cancellation") {
    fixture f;
    channel<int> a(1);
    CHECK(a.try_send(1));
    auto [ctx, cancel] = with_cancel(f.l.background());
    // The task's own context is a child of ctx: done(ctx) fires when it is canceled.
    struct run {
        static task<void> go(receive_or_done* out, channel<int>* ch, bool* started) {
            context own = co_await this_coro::context;
            *started = true;
            *out = co_await select(ch->receive(), own.done());
        }
    };
    SUBCASE("already canceled: the done case, and the value stays") {
        cancel();
        receive_or_done r = make_error_code(errc::canceled);
        bool started = false;
        auto t = start(f.l, ctx, run::go(&r, &a, &started));
        f.l.run_until_idle();
        REQUIRE(t.done());
        REQUIRE(r.has_value());
        CHECK(r->index() == 1);
        CHECK(a.size() == 1);
    }
    SUBCASE("canceled while waiting: the done case") {
        channel<int> empty;
        receive_or_done r = make_error_code(errc::deadline_exceeded);
        bool started = false;
        auto t = start(f.l, ctx, run::go(&r, &empty, &started));
        f.l.run_until_idle();
        REQUIRE(started);
        CHECK_FALSE(t.done());
        cancel();
        f.l.run_until_idle();
        REQUIRE(t.done());
        REQUIRE(r.has_value());
        CHECK(r->index() == 1);
        CHECK(empty.try_send(1).error() == channel_errc::full);
    }
}

TEST_CASE("canceling the task's context while it selects resumes with canceled") {
    fixture f;
    channel<int> a, b;
    auto [ctx, cancel] = with_cancel(f.l.background());
    std::optional<result<std::variant<result<int>, result<void>>>> r;
    auto h = start(f.l, ctx, await_into(&r, select(a.receive(), b.send(2))));
    f.l.run_until_idle();
    CHECK_FALSE(r);
    cancel();
    f.l.run_until_idle();
    REQUIRE(r);
    CHECK(r->error() == errc::canceled);
    // Both cases left their queues: nothing waits, nothing was sent.
    CHECK(a.try_send(1).error() == channel_errc::full);
    CHECK(b.try_receive().error() == channel_errc::empty);
}

TEST_CASE("a select under with_timeout resumes with deadline_exceeded at the deadline") {
    fixture f;
    channel<int> a, b;
    auto [ctx, cancel] = with_timeout(f.l.background(), 100ms);
    std::optional<two_receives> r;
    auto h = start(f.l, ctx, await_into(&r, select(a.receive(), b.receive())));
    f.l.run_until_idle();
    SUBCASE("still waiting 1 ms before") {
        f.clk.advance(99ms);
        f.l.run_until_idle();
        CHECK_FALSE(r);
    }
    SUBCASE("done at the deadline") {
        f.clk.advance(100ms);
        f.l.run_until_idle();
        REQUIRE(r);
        CHECK(r->error() == errc::deadline_exceeded);
        CHECK(a.try_send(1).error() == channel_errc::full);
    }
}

TEST_CASE("a send case that loses destroys its value without sending it") {
    fixture f;
    counted::reset();
    {
        channel<counted> a;
        channel<int> b(1);
        CHECK(b.try_send(1));
        std::optional<result<std::variant<result<void>, result<int>>>> r;
        {
            auto h = start(f.l, f.l.background(),
                           await_into(&r, select(a.send(counted{}), b.receive())));
            f.l.run_until_idle();
            CHECK(h.done());
        }
        REQUIRE(r);
        REQUIRE(r->has_value());
        CHECK((*r)->index() == 1);
        CHECK(counted::alive() == 0);
        CHECK(a.try_receive().error() == channel_errc::empty);
    }
}

TEST_CASE("select with a send and a receive on one channel pairs with others, not itself") {
    fixture f;
    channel<int> ch;
    std::optional<result<std::variant<result<void>, result<int>>>> r;
    auto h = start(f.l, f.l.background(), await_into(&r, select(ch.send(1), ch.receive())));
    f.l.run_until_idle();
    CHECK_FALSE(r);
    SUBCASE("a receiver takes the send") {
        CHECK(ch.try_receive().value() == 1);
        f.l.run_until_idle();
        REQUIRE(r);
        CHECK((*r)->index() == 0);
        CHECK(ch.try_send(5).error() == channel_errc::full); // the receive case left
    }
    SUBCASE("a sender feeds the receive") {
        CHECK(ch.try_send(5));
        f.l.run_until_idle();
        REQUIRE(r);
        CHECK((*r)->index() == 1);
        CHECK(std::get<1>(**r).value() == 5);
        CHECK(ch.try_receive().error() == channel_errc::empty); // the send case left
    }
}

TEST_CASE("a select canceled from another thread resumes with canceled") {
    loop l;
    for (std::size_t i = 0; i < tether::test::iterations(2000); ++i) {
        channel<int> a, b;
        auto [ctx, cancel] = with_cancel(l.background());
        auto [other, cancel_other] = with_cancel(l.background());
        std::optional<result<std::variant<result<int>, result<void>, std::monostate>>> r;
        auto h = start(l, ctx, await_into(&r, select(a.receive(), b.send(1), other.done())));
        l.run_until_idle();
        REQUIRE_FALSE(r);
        bool own = i % 2 == 0;
        std::thread th([&] {
            if (own) {
                cancel();
            } else {
                cancel_other();
            }
        });
        while (!r) {
            l.run_once();
        }
        th.join();
        if (own) {
            CHECK(r->error() == errc::canceled);
        } else {
            REQUIRE(r->has_value());
            CHECK((*r)->index() == 2);
        }
        CHECK(a.try_send(1).error() == channel_errc::full);
        CHECK(b.try_receive().error() == channel_errc::empty);
    }
}

TEST_CASE("a hand-off to a select racing a cancel from another thread loses nothing") {
    loop l;
    for (std::size_t i = 0; i < tether::test::iterations(2000); ++i) {
        channel<int> a, b;
        auto [ctx, cancel] = with_cancel(l.background());
        std::optional<two_receives> r;
        auto h = start(l, ctx, await_into(&r, select(a.receive(), b.receive())));
        l.run_until_idle();
        REQUIRE_FALSE(r);
        std::barrier go(2);
        std::thread th([&] {
            go.arrive_and_wait();
            cancel();
        });
        go.arrive_and_wait();
        l.poll();
        result<void> sent = (i % 2 ? a : b).try_send(static_cast<int>(i));
        while (!r) {
            l.run_once();
        }
        th.join();
        if (sent) {
            REQUIRE(r->has_value());
            CHECK((*r)->index() == (i % 2 ? 0U : 1U));
            CHECK((i % 2 ? std::get<0>(**r) : std::get<1>(**r)).value() == static_cast<int>(i));
        } else {
            CHECK(r->error() == errc::canceled);
            CHECK(sent.error() == channel_errc::full);
        }
        CHECK(a.try_send(1).error() == channel_errc::full);
        CHECK(b.try_send(1).error() == channel_errc::full);
    }
}
