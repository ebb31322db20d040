#include "context/with_cancel.hpp"
#include "context/with_deadline.hpp"
#include "runtime/event.hpp"
#include "runtime/loop.hpp"
#include "tests/runtime/sync_support.hpp"
#include "tests/support/manual_loop.hpp"
#include "tests/support/test_util.hpp"

#include <doctest/doctest.h>

#include <optional>
#include <thread>

using namespace tether;
using namespace std::chrono_literals;
using tether::test::await_into;
using tether::test::start;

namespace {

using fixture = tether::test::manual_loop;

} // namespace

TEST_CASE("a wait on a set event returns at once") {
    fixture f;
    event ev(true);
    CHECK(ev.is_set());
    std::optional<result<void>> r;
    auto h = start(f.l, f.l.background(), await_into(&r, ev.wait()));
    f.l.run_until_idle();
    REQUIRE(r);
    CHECK(r->has_value());
}

TEST_CASE("set wakes every waiter; reset makes later waits suspend") {
    fixture f;
    event ev;
    std::optional<result<void>> a, b;
    auto ha = start(f.l, f.l.background(), await_into(&a, ev.wait()));
    auto hb = start(f.l, f.l.background(), await_into(&b, ev.wait()));
    f.l.run_until_idle();
    CHECK_FALSE(a);
    CHECK_FALSE(b);
    ev.set();
    ev.reset(); // too late to take the wakeup back
    f.l.run_until_idle();
    REQUIRE(a);
    REQUIRE(b);
    CHECK(a->has_value());
    CHECK(b->has_value());
    CHECK_FALSE(ev.is_set());
    std::optional<result<void>> c;
    auto hc = start(f.l, f.l.background(), await_into(&c, ev.wait()));
    f.l.run_until_idle();
    CHECK_FALSE(c);
    ev.set();
    ev.set(); // twice is the same as once
    f.l.run_until_idle();
    REQUIRE(c);
    CHECK(c->has_value());
}

TEST_CASE("a wait under an already-canceled context fails at once, even when set") {
    fixture f;
    event ev(true);
    auto [ctx, cancel] = with_cancel(f.l.background());
    cancel();
    std::optional<result<void>> r;
    auto h = start(f.l, ctx, await_into(&r, ev.wait()));
    f.l.run_until_idle();
    REQUIRE(r);
    CHECK(r->error() == errc::canceled);
}

TEST_CASE("a canceled waiter resumes with canceled; the others still get the set") {
    fixture f;
    event ev;
    auto [ctx, cancel] = with_cancel(f.l.background());
    std::optional<result<void>> a, b;
    auto ha = start(f.l, ctx, await_into(&a, ev.wait()));
    auto hb = start(f.l, f.l.background(), await_into(&b, ev.wait()));
    f.l.run_until_idle();
    cancel();
    f.l.run_until_idle();
    REQUIRE(a);
    CHECK(a->error() == errc::canceled);
    CHECK_FALSE(b);
    ev.set();
    f.l.run_until_idle();
    REQUIRE(b);
    CHECK(b->has_value());
}

TEST_CASE("a wait under with_timeout resumes with deadline_exceeded at the deadline") {
    fixture f;
    event ev;
    auto [ctx, cancel] = with_timeout(f.l.background(), 30ms);
    std::optional<result<void>> r;
    auto h = start(f.l, ctx, await_into(&r, ev.wait()));
    f.l.run_until_idle();
    f.clk.advance(29ms);
    f.l.run_until_idle();
    CHECK_FALSE(r);
    f.clk.advance(1ms);
    f.l.run_until_idle();
    REQUIRE(r);
    CHECK(r->error() == errc::deadline_exceeded);
}

TEST_CASE("an event set from another thread through loop::post wakes the waiter") {
    loop l;
    for (std::size_t i = 0; i < tether::test::iterations(500); ++i) {
        event ev;
        std::optional<result<void>> r;
        auto h = start(l, l.background(), await_into(&r, ev.wait()));
        l.run_until_idle();
        std::thread th([&] { l.post([&ev] { ev.set(); }); });
        while (!r) {
            l.run_once();
        }
        th.join();
        CHECK(r->has_value());
    }
}

TEST_CASE("a wait canceled from another thread resumes with canceled") {
    loop l;
    event ev;
    for (std::size_t i = 0; i < tether::test::iterations(2000); ++i) {
        auto [ctx, cancel] = with_cancel(l.background());
        std::optional<result<void>> r;
        auto h = start(l, ctx, await_into(&r, ev.wait()));
        l.run_until_idle();
        std::thread th([&cancel] { cancel(); });
        while (!r) {
            l.run_once();
        }
        th.join();
        CHECK(r->error() == errc::canceled);
    }
}
