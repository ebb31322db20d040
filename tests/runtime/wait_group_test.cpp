#include "context/with_cancel.hpp"
#include "context/with_deadline.hpp"
#include "runtime/loop.hpp"
#include "runtime/sleep.hpp"
#include "runtime/wait_group.hpp"
#include "tests/runtime/sync_support.hpp"
#include "tests/support/manual_loop.hpp"
#include "tests/support/test_util.hpp"

#include <doctest/doctest.h>

#include <optional>
#include <thread>
#include <vector>

using namespace tether;
using namespace std::chrono_literals;
using tether::test::await_into;
using tether::test::start;

namespace {

using fixture = tether::test::manual_loop;

task<void> work(wait_group* wg, duration d, int* finished) {
    result<void> r = co_await sleep_for(d);
    if (r) {
        ++*finished;
    }
    wg->done();
}

} // namespace

TEST_CASE("a wait on a zero counter returns at once") {
    fixture f;
    wait_group wg;
    CHECK(wg.count() == 0);
    std::optional<result<void>> r;
    auto h = start(f.l, f.l.background(), await_into(&r, wg.wait()));
    f.l.run_until_idle();
    REQUIRE(r);
    CHECK(r->has_value());
}

TEST_CASE("waiters wake when the counter drops to zero, and the group can be reused") {
    fixture f;
    wait_group wg;
    wg.add(2);
    std::optional<result<void>> a, b;
    auto ha = start(f.l, f.l.background(), await_into(&a, wg.wait()));
    auto hb = start(f.l, f.l.background(), await_into(&b, wg.wait()));
    f.l.run_until_idle();
    wg.done();
    f.l.run_until_idle();
    CHECK_FALSE(a);
    CHECK(wg.count() == 1);
    wg.add(-1);
    f.l.run_until_idle();
    REQUIRE(a);
    REQUIRE(b);
    CHECK(a->has_value());
    CHECK(b->has_value());
    wg.add(1); // reuse
    std::optional<result<void>> c;
    auto hc = start(f.l, f.l.background(), await_into(&c, wg.wait()));
    f.l.run_until_idle();
    CHECK_FALSE(c);
    wg.done();
    f.l.run_until_idle();
    REQUIRE(c);
    CHECK(c->has_value());
}

TEST_CASE("wait returns once every spawned piece of work has called done") {
    fixture f;
    wait_group wg;
    int finished = 0;
    std::vector<tether::test::started<void>> hs;
    for (int i = 1; i <= 5; ++i) {
        wg.add(1);
        hs.push_back(start(f.l, f.l.background(), work(&wg, i * 10ms, &finished)));
    }
    std::optional<result<void>> r;
    auto h = start(f.l, f.l.background(), await_into(&r, wg.wait()));
    f.l.run_until_idle();
    f.clk.advance(49ms);
    f.l.run_until_idle();
    CHECK_FALSE(r);
    CHECK(finished == 4);
    f.clk.advance(1ms);
    f.l.run_until_idle();
    REQUIRE(r);
    CHECK(r->has_value());
    CHECK(finished == 5);
}

TEST_CASE("a wait under an already-canceled context fails at once") {
    fixture f;
    wait_group wg;
    auto [ctx, cancel] = with_cancel(f.l.background());
    cancel();
    std::optional<result<void>> r;
    auto h = start(f.l, ctx, await_into(&r, wg.wait()));
    f.l.run_until_idle();
    REQUIRE(r);
    CHECK(r->error() == errc::canceled);
}

TEST_CASE("a canceled wait resumes with canceled and leaves the counter alone") {
    fixture f;
    wait_group wg;
    wg.add(1);
    auto [ctx, cancel] = with_cancel(f.l.background());
    std::optional<result<void>> r;
    auto h = start(f.l, ctx, await_into(&r, wg.wait()));
    f.l.run_until_idle();
    cancel();
    f.l.run_until_idle();
    REQUIRE(r);
    CHECK(r->error() == errc::canceled);
    CHECK(wg.count() == 1);
    wg.done();
}

TEST_CASE("a wait under with_timeout resumes with deadline_exceeded at the deadline") {
    fixture f;
    wait_group wg;
    wg.add(1);
    auto [ctx, cancel] = with_timeout(f.l.background(), 40ms);
    std::optional<result<void>> r;
    auto h = start(f.l, ctx, await_into(&r, wg.wait()));
    f.l.run_until_idle();
    f.clk.advance(39ms);
    f.l.run_until_idle();
    CHECK_FALSE(r);
    f.clk.advance(1ms);
    f.l.run_until_idle();
    REQUIRE(r);
    CHECK(r->error() == errc::deadline_exceeded);
    wg.done();
}

TEST_CASE("a wait canceled from another thread resumes with canceled") {
    loop l;
    wait_group wg;
    wg.add(1);
    for (std::size_t i = 0; i < tether::test::iterations(2000); ++i) {
        auto [ctx, cancel] = with_cancel(l.background());
        std::optional<result<void>> r;
        auto h = start(l, ctx, await_into(&r, wg.wait()));
        l.run_until_idle();
        std::thread th([&cancel] { cancel(); });
        while (!r) {
            l.run_once();
        }
        th.join();
        CHECK(r->error() == errc::canceled);
    }
    wg.done();
}
