#include "context/manual_clock.hpp"
#include "context/with_deadline.hpp"
#include "context/with_value.hpp"
#include "context/without_cancel.hpp"

#include <doctest/doctest.h>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <system_error>
#include <vector>

using namespace std::chrono_literals;

namespace {

const tether::context_key<int> int_key{"n"};
const std::error_code too_slow = std::make_error_code(std::errc::timed_out);

} // namespace

TEST_CASE("a context with a deadline is done at the deadline, not before") {
    // Go's TestDeadline, on a clock the test moves.
    tether::manual_clock clk;
    auto [ctx, cancel] = tether::with_deadline(tether::background(clk), clk.now() + 100ms);
    REQUIRE(ctx.deadline() == tether::manual_clock::start() + 100ms);
    CHECK(ctx.has_deadline());
    SUBCASE("still running 1 ns before") {
        clk.advance(100ms - 1ns);
        CHECK_FALSE(ctx.done());
        CHECK_FALSE(ctx.err());
        CHECK_FALSE(tether::cause(ctx));
    }
    SUBCASE("done at the deadline with deadline_exceeded, nobody calling cancel") {
        clk.advance(100ms);
        CHECK(ctx.done());
        CHECK(ctx.err() == tether::errc::deadline_exceeded);
        CHECK(tether::cause(ctx) == tether::errc::deadline_exceeded);
    }
    SUBCASE("done when the clock jumps past the deadline") {
        clk.set(clk.now() + 1h);
        CHECK(ctx.err() == tether::errc::deadline_exceeded);
    }
}

TEST_CASE("with_timeout counts from the clock's now") {
    // Go's TestTimeout.
    tether::manual_clock clk;
    clk.advance(5s);
    auto [ctx, cancel] = tether::with_timeout(tether::background(clk), 1s);
    CHECK(ctx.deadline() == tether::manual_clock::start() + 6s);
    clk.advance(999ms);
    CHECK_FALSE(ctx.done());
    clk.advance(1ms);
    CHECK(ctx.err() == tether::errc::deadline_exceeded);
}

TEST_CASE("canceling before the deadline gives canceled for good") {
    // Go's TestCanceledTimeout.
    tether::manual_clock clk;
    auto [ctx, cancel] = tether::with_timeout(tether::background(clk), 1s);
    CHECK(clk.pending() == 1);
    cancel();
    CHECK(ctx.err() == tether::errc::canceled);
    CHECK(clk.pending() == 0); // the timer is released with the cancel
    clk.advance(2s);
    CHECK(ctx.err() == tether::errc::canceled);
    CHECK(ctx.deadline() == tether::manual_clock::start() + 1s); // the deadline stays
}

TEST_CASE("a fired deadline releases its timer and canceling afterwards changes nothing") {
    tether::manual_clock clk;
    auto [ctx, cancel] = tether::with_timeout(tether::background(clk), 1s);
    clk.advance(1s);
    CHECK(clk.pending() == 0);
    cancel();
    CHECK(ctx.err() == tether::errc::deadline_exceeded);
}

TEST_CASE("a child's deadline is the earlier of its own and its parent's") {
    tether::manual_clock clk;
    auto root = tether::background(clk);
    const tether::time_point t0 = clk.now();
    SUBCASE("the parent's is earlier: the child keeps it") {
        auto [parent, cancel_parent] = tether::with_timeout(root, 1s);
        auto [child, cancel_child] = tether::with_timeout(parent, 2s);
        CHECK(child.deadline() == t0 + 1s);
        CHECK(clk.pending() == 1); // the child needs no timer of its own
        clk.advance(1s);
        CHECK(child.err() == tether::errc::deadline_exceeded);
        CHECK(parent.err() == tether::errc::deadline_exceeded);
    }
    SUBCASE("the same deadline: the child keeps the parent's") {
        auto [parent, cancel_parent] = tether::with_timeout(root, 1s);
        auto [child, cancel_child] = tether::with_deadline(parent, t0 + 1s);
        CHECK(child.deadline() == t0 + 1s);
        clk.advance(1s);
        CHECK(child.err() == tether::errc::deadline_exceeded);
        CHECK(tether::cause(child) == tether::errc::deadline_exceeded);
    }
    SUBCASE("the child's is earlier: it is done first, alone") {
        auto [parent, cancel_parent] = tether::with_timeout(root, 2s);
        auto [child, cancel_child] = tether::with_timeout(parent, 1s);
        CHECK(child.deadline() == t0 + 1s);
        CHECK(parent.deadline() == t0 + 2s);
        clk.advance(1s);
        CHECK(child.err() == tether::errc::deadline_exceeded);
        CHECK_FALSE(parent.done());
        clk.advance(1s);
        CHECK(parent.err() == tether::errc::deadline_exceeded);
    }
    SUBCASE("through values and plain cancels") {
        auto [parent, cancel_parent] = tether::with_timeout(root, 1s);
        auto v = tether::with_value(parent, int_key, 1);
        auto [mid, cancel_mid] = tether::with_cancel(v);
        CHECK(mid.deadline() == t0 + 1s);
        auto [child, cancel_child] = tether::with_timeout(mid, 5s);
        CHECK(child.deadline() == t0 + 1s);
        auto [early, cancel_early] = tether::with_timeout(mid, 500ms);
        CHECK(early.deadline() == t0 + 500ms);
    }
}

TEST_CASE("a deadline passing cancels every descendant with deadline_exceeded") {
    tether::manual_clock clk;
    auto [parent, cancel_parent] = tether::with_timeout(tether::background(clk), 1s);
    auto [a, cancel_a] = tether::with_cancel(parent);
    auto [b, cancel_b] = tether::with_timeout(tether::with_value(a, int_key, 1), 1h);
    clk.advance(1s);
    CHECK(a.err() == tether::errc::deadline_exceeded);
    CHECK(b.err() == tether::errc::deadline_exceeded);
    CHECK(tether::detail::registration_count(parent) == 0);
    CHECK(clk.pending() == 0);
}

TEST_CASE("a parent canceled before its deadline gives its children canceled") {
    tether::manual_clock clk;
    auto [parent, cancel_parent] = tether::with_cancel(tether::background(clk));
    auto [child, cancel_child] = tether::with_timeout(parent, 1s);
    cancel_parent();
    CHECK(child.err() == tether::errc::canceled);
    CHECK(clk.pending() == 0);
    clk.advance(1s);
    CHECK(child.err() == tether::errc::canceled);
}

TEST_CASE("a zero or negative timeout, or a past deadline, gives a context already done") {
    tether::manual_clock clk;
    auto root = tether::background(clk);
    SUBCASE("zero timeout") {
        auto [ctx, cancel] = tether::with_timeout(root, 0s);
        CHECK(ctx.err() == tether::errc::deadline_exceeded);
        CHECK(ctx.deadline() == clk.now());
    }
    SUBCASE("negative timeout") {
        auto [ctx, cancel] = tether::with_timeout(root, -1s);
        CHECK(ctx.err() == tether::errc::deadline_exceeded);
        CHECK(ctx.deadline() == clk.now() - 1s);
    }
    SUBCASE("a deadline in the past") {
        auto [ctx, cancel] = tether::with_deadline(root, tether::time_point{});
        CHECK(ctx.err() == tether::errc::deadline_exceeded);
    }
    SUBCASE("the deadline is now") {
        auto [ctx, cancel] = tether::with_deadline(root, clk.now());
        CHECK(ctx.err() == tether::errc::deadline_exceeded);
    }
    SUBCASE("on the real clock") {
        auto [ctx, cancel] = tether::with_timeout(tether::background(), -1ns);
        CHECK(ctx.err() == tether::errc::deadline_exceeded);
    }
    CHECK(clk.pending() == 0);
}

TEST_CASE("a child of a born-done deadline context is born done too") {
    tether::manual_clock clk;
    auto [ctx, cancel] = tether::with_timeout(tether::background(clk), 0s);
    auto [child, cancel_child] = tether::with_cancel(ctx);
    CHECK(child.err() == tether::errc::deadline_exceeded);
    CHECK(tether::detail::registration_count(ctx) == 0);
}

TEST_CASE("a deadline on a canceled parent gives a child born canceled") {
    tether::manual_clock clk;
    auto [parent, cancel_parent] = tether::with_cancel(tether::background(clk));
    cancel_parent();
    SUBCASE("a future deadline") {
        auto [child, cancel] = tether::with_timeout(parent, 1s);
        CHECK(child.err() == tether::errc::canceled);
    }
    SUBCASE("a past deadline: the parent's reason comes first, as in Go") {
        auto [child, cancel] = tether::with_timeout(parent, -1s);
        CHECK(child.err() == tether::errc::canceled);
    }
    CHECK(clk.pending() == 0);
}

TEST_CASE("deadlines fire in deadline order as the clock moves") {
    tether::manual_clock clk;
    auto root = tether::background(clk);
    std::vector<int> order;
    auto [c3, h3] = tether::with_timeout(root, 3s);
    auto [c1, h1] = tether::with_timeout(root, 1s);
    auto [c2, h2] = tether::with_timeout(root, 2s);
    tether::cancel_callback cb1(c1, [&order] { order.push_back(1); });
    tether::cancel_callback cb2(c2, [&order] { order.push_back(2); });
    tether::cancel_callback cb3(c3, [&order] { order.push_back(3); });
    clk.advance(1500ms);
    CHECK(order == std::vector<int>{1});
    clk.advance(10s);
    CHECK(order == std::vector<int>{1, 2, 3});
}

TEST_CASE("with_deadline_cause reports its cause only when the deadline passes") {
    tether::manual_clock clk;
    auto [ctx, cancel] = tether::with_timeout_cause(tether::background(clk), 1s, too_slow);
    SUBCASE("the deadline passes") {
        clk.advance(1s);
        CHECK(ctx.err() == tether::errc::deadline_exceeded);
        CHECK(tether::cause(ctx) == too_slow);
    }
    SUBCASE("canceled first") {
        cancel();
        clk.advance(1s);
        CHECK(ctx.err() == tether::errc::canceled);
        CHECK(tether::cause(ctx) == tether::errc::canceled);
    }
    SUBCASE("an empty cause means deadline_exceeded") {
        auto [c2, cancel2] =
            tether::with_deadline_cause(tether::background(clk), clk.now() + 1s, {});
        clk.advance(1s);
        CHECK(tether::cause(c2) == tether::errc::deadline_exceeded);
    }
}

TEST_CASE("without_cancel below a deadline drops it, and a new deadline below counts alone") {
    tether::manual_clock clk;
    auto [parent, cancel_parent] = tether::with_timeout(tether::background(clk), 1s);
    auto detached = tether::without_cancel(parent);
    auto [child, cancel_child] = tether::with_timeout(detached, 5s);
    CHECK(child.deadline() == tether::manual_clock::start() + 5s);
    clk.advance(1s);
    CHECK(parent.done());
    CHECK_FALSE(child.done());
    clk.advance(4s);
    CHECK(child.err() == tether::errc::deadline_exceeded);
}

TEST_CASE("a timeout on the real clock fires with nobody calling cancel") {
    // Generous bound: done within 10 s; how soon is never asserted.
    auto [ctx, cancel] = tether::with_timeout(tether::background(), 1ms);
    auto [child, cancel_child] = tether::with_cancel(ctx);
    std::mutex mu;
    std::condition_variable cv;
    bool fired = false;
    tether::cancel_callback cb(child, [&] {
        std::lock_guard lk(mu);
        fired = true;
        cv.notify_all();
    });
    {
        std::unique_lock lk(mu);
        REQUIRE(cv.wait_for(lk, 10s, [&] { return fired; }));
    }
    CHECK(ctx.err() == tether::errc::deadline_exceeded);
    CHECK(child.err() == tether::errc::deadline_exceeded);
    CHECK(ctx.deadline().has_value());
}

TEST_CASE("a long timeout on the real clock is canceled and released at once") {
    auto [ctx, cancel] = tether::with_timeout(tether::background(), 24h);
    CHECK_FALSE(ctx.done());
    CHECK(*ctx.deadline() > tether::real_clock().now() + 23h);
    cancel();
    CHECK(ctx.err() == tether::errc::canceled);
}

TEST_CASE("a deadline equal to the parent's is the child's own, and its cause is reported") {
    // Go's WithDeadline returns WithCancel(parent) only when the parent's deadline is strictly
    // earlier (cur.Before(d)); a tie makes a timerCtx with a timer and a cause of its own.
    tether::manual_clock clk;
    const tether::time_point t0 = clk.now();
    const std::error_code parent_cause = std::make_error_code(std::errc::broken_pipe);
    auto [parent, cancel_parent] =
        tether::with_deadline_cause(tether::background(clk), t0 + 1s, parent_cause);
    auto [child, cancel_child] = tether::with_deadline_cause(parent, t0 + 1s, too_slow);
    CHECK(child.deadline() == t0 + 1s);
    CHECK(clk.pending() == 2); // a timer each
    SUBCASE("the deadline: both are deadline_exceeded, the child with one of the two causes") {
        clk.advance(1s - 1ns);
        CHECK_FALSE(child.done());
        clk.advance(1ns);
        CHECK(parent.err() == tether::errc::deadline_exceeded);
        CHECK(tether::cause(parent) == parent_cause);
        CHECK(child.err() == tether::errc::deadline_exceeded);
        // As in Go, whichever timer fires first decides: the parent's, by propagation, or
        // the child's own.
        std::error_code c = tether::cause(child);
        CHECK((c == parent_cause || c == too_slow));
        CHECK(clk.pending() == 0);
    }
    SUBCASE("the parent canceled first: the child is canceled, and its timer is gone") {
        cancel_parent();
        CHECK(child.err() == tether::errc::canceled);
        CHECK(tether::cause(child) == tether::errc::canceled);
        CHECK(clk.pending() == 0);
    }
    SUBCASE("the child canceled first: the parent's deadline still comes") {
        cancel_child();
        CHECK(clk.pending() == 1);
        clk.advance(1s);
        CHECK(child.err() == tether::errc::canceled);
        CHECK(tether::cause(parent) == parent_cause);
    }
}

TEST_CASE("a deadline later than the parent's is a plain cancel child with no timer") {
    tether::manual_clock clk;
    const tether::time_point t0 = clk.now();
    auto [parent, cancel_parent] = tether::with_deadline(tether::background(clk), t0 + 1s);
    auto [child, cancel_child] = tether::with_deadline_cause(parent, t0 + 1s + 1ns, too_slow);
    CHECK(child.deadline() == t0 + 1s);
    CHECK(clk.pending() == 1);
    clk.advance(1s);
    CHECK(child.err() == tether::errc::deadline_exceeded);
    CHECK(tether::cause(child) == tether::errc::deadline_exceeded); // the parent's
}
