#include "context/manual_clock.hpp"
#include "context/with_cancel.hpp"
#include "context/with_deadline.hpp"
#include "context/with_value.hpp"
#include "context/without_cancel.hpp"
#include "tests/support/test_util.hpp"

#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <mutex>
#include <system_error>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

using namespace std::chrono_literals;

namespace {

const tether::context_key<int> int_key{"n"};
const std::error_code some_cause = std::make_error_code(std::errc::connection_aborted);

} // namespace

TEST_CASE("a new child is not done and inherits its parent's clock and deadline") {
    tether::manual_clock clk;
    auto [parent, cancel_parent] = tether::with_timeout(tether::background(clk), 5s);
    auto [ctx, cancel] = tether::with_cancel(parent);
    CHECK_FALSE(ctx.err());
    CHECK_FALSE(ctx.done());
    CHECK(ctx.done().can_be_done());
    CHECK_FALSE(ctx.is_never_done());
    CHECK_FALSE(tether::cause(ctx));
    CHECK(&ctx.clock() == &clk);
    CHECK(ctx.deadline() == parent.deadline());
}

TEST_CASE("a child of background has no deadline") {
    auto [ctx, cancel] = tether::with_cancel(tether::background());
    CHECK_FALSE(ctx.has_deadline());
    CHECK_FALSE(ctx.deadline().has_value());
    CHECK(&ctx.clock() == &tether::real_clock());
}

TEST_CASE("canceling a context makes it done with errc::canceled") {
    auto [ctx, cancel] = tether::with_cancel(tether::background());
    cancel();
    CHECK(ctx.done());
    CHECK(ctx.is_done());
    CHECK(ctx.err() == tether::errc::canceled);
    CHECK(tether::cause(ctx) == tether::errc::canceled);
}

TEST_CASE("cancel is idempotent") {
    auto [ctx, cancel] = tether::with_cancel_cause(tether::background());
    cancel(some_cause);
    cancel();
    cancel(std::make_error_code(std::errc::io_error));
    cancel.cancel();
    CHECK(ctx.err() == tether::errc::canceled);
    CHECK(tether::cause(ctx) == some_cause);
}

TEST_CASE("canceling a parent cancels every descendant") {
    // Go's TestParentFinishesChild, over a tree with value and without-deadline links.
    auto [parent, cancel_parent] = tether::with_cancel(tether::background());
    auto [a, cancel_a] = tether::with_cancel(parent);
    auto [b, cancel_b] = tether::with_cancel(parent);
    auto a_value = tether::with_value(a, int_key, 1);
    auto [a1, cancel_a1] = tether::with_cancel(a_value);
    auto [a2, cancel_a2] = tether::with_cancel(a);
    auto [a11, cancel_a11] = tether::with_cancel(a1);
    auto [b1, cancel_b1] = tether::with_timeout(b, 1h);
    CHECK(tether::detail::registration_count(parent) == 2);
    CHECK(tether::detail::registration_count(a) == 2);

    cancel_parent();
    for (const tether::context* c : {&parent, &a, &b, &a_value, &a1, &a2, &a11, &b1}) {
        CHECK(c->done());
        CHECK(c->err() == tether::errc::canceled);
    }
    // Every child has left its parent.
    CHECK(tether::detail::registration_count(parent) == 0);
    CHECK(tether::detail::registration_count(a) == 0);
    CHECK(tether::detail::registration_count(a1) == 0);
}

TEST_CASE("canceling a child never cancels its parent or its siblings") {
    // Go's TestChildFinishesFirst.
    auto [parent, cancel_parent] = tether::with_cancel(tether::background());
    auto [child, cancel_child] = tether::with_cancel(parent);
    auto [sibling, cancel_sibling] = tether::with_cancel(parent);
    auto [grandchild, cancel_grandchild] = tether::with_cancel(child);
    auto [nephew, cancel_nephew] = tether::with_cancel(sibling);

    cancel_child();
    CHECK(child.err() == tether::errc::canceled);
    CHECK(grandchild.err() == tether::errc::canceled);
    CHECK_FALSE(parent.err());
    CHECK_FALSE(sibling.err());
    CHECK_FALSE(nephew.err());
    CHECK(tether::detail::registration_count(parent) == 1);

    cancel_parent();
    CHECK(sibling.err() == tether::errc::canceled);
    CHECK(nephew.err() == tether::errc::canceled);
}

TEST_CASE("a child of an already-canceled parent is born canceled") {
    // Go's TestWithCancelCanceledParent.
    auto [parent, cancel_parent] = tether::with_cancel_cause(tether::background());
    cancel_parent(some_cause);
    SUBCASE("directly") {
        auto [child, cancel] = tether::with_cancel(parent);
        CHECK(child.done());
        CHECK(child.err() == tether::errc::canceled);
        CHECK(tether::cause(child) == some_cause);
    }
    SUBCASE("through a value") {
        auto [child, cancel] = tether::with_cancel(tether::with_value(parent, int_key, 1));
        CHECK(child.err() == tether::errc::canceled);
        CHECK(tether::cause(child) == some_cause);
    }
    SUBCASE("with a deadline of its own") {
        auto [child, cancel] = tether::with_timeout(parent, 1h);
        CHECK(child.err() == tether::errc::canceled);
        CHECK(tether::cause(child) == some_cause);
    }
    CHECK(tether::detail::registration_count(parent) == 0);
}

TEST_CASE("a context canceled on another thread is seen done there and here") {
    // Go's TestInterlockedCancels: the parent's cancellation, seen on another thread,
    // cancels a context there; the child was canceled with the parent anyway.
    auto [parent, cancel_parent] = tether::with_cancel(tether::background());
    auto [child, cancel_child] = tether::with_cancel(parent);
    std::mutex mu;
    std::condition_variable cv;
    bool parent_done = false;
    tether::cancel_callback cb(parent, [&] {
        std::lock_guard lk(mu);
        parent_done = true;
        cv.notify_all();
    });
    std::jthread t([&, &cancel_child = cancel_child] {
        std::unique_lock lk(mu);
        cv.wait(lk, [&] { return parent_done; });
        cancel_child();
    });
    cancel_parent();
    t.join();
    CHECK(child.err() == tether::errc::canceled);
}

TEST_CASE("destroying the cancel handle cancels the context") {
    tether::context ctx;
    {
        auto [c, cancel] = tether::with_cancel(tether::background());
        ctx = c;
        CHECK_FALSE(ctx.done());
    }
    CHECK(ctx.err() == tether::errc::canceled);
}

TEST_CASE("a dropped handle removes the child from its parent") {
    // Go's TestCancelRemoves.
    auto [parent, cancel_parent] = tether::with_cancel(tether::background());
    {
        auto [child, cancel] = tether::with_cancel(parent);
        CHECK(tether::detail::registration_count(parent) == 1);
    }
    CHECK(tether::detail::registration_count(parent) == 0);
    {
        auto [child, cancel] = tether::with_cancel(parent);
        auto [grandchild, cancel_grandchild] = tether::with_timeout(child, 1h);
        cancel();
        CHECK(tether::detail::registration_count(parent) == 0);
        CHECK(tether::detail::registration_count(child) == 0);
        CHECK(grandchild.done());
    }
    CHECK(tether::detail::registration_count(parent) == 0);
}

TEST_CASE("a million short-lived children leave nothing registered on their parent") {
    auto [parent, cancel_parent] = tether::with_cancel(tether::background());
    auto v = tether::with_value(parent, int_key, 1);
    for (std::size_t i = 0; i < tether::test::iterations(1'000'000); ++i) {
        auto [child, cancel] = tether::with_cancel(i % 2 == 0 ? parent : v);
        if (i % 3 == 0) {
            cancel();
        }
    }
    CHECK(tether::detail::registration_count(parent) == 0);
    CHECK_FALSE(parent.done());
}

TEST_CASE("the cancel handle is move-only") {
    static_assert(!std::is_copy_constructible_v<tether::cancel_handle>);
    static_assert(!std::is_copy_assignable_v<tether::cancel_handle>);
    static_assert(std::is_nothrow_move_constructible_v<tether::cancel_handle>);
    static_assert(std::is_nothrow_move_assignable_v<tether::cancel_handle>);
    static_assert(std::is_nothrow_invocable_v<const tether::cancel_handle&>);
    static_assert(std::is_nothrow_invocable_v<const tether::cancel_handle&, std::error_code>);
}

TEST_CASE("moving a cancel handle moves the right to cancel") {
    auto [ctx, cancel] = tether::with_cancel(tether::background());
    tether::cancel_handle moved = std::move(cancel);
    CHECK_FALSE(static_cast<bool>(cancel)); // NOLINT(bugprone-use-after-move): documented empty
    CHECK(static_cast<bool>(moved));
    cancel(); // an empty handle does nothing
    CHECK_FALSE(ctx.done());
    moved();
    CHECK(ctx.err() == tether::errc::canceled);
}

TEST_CASE("assigning over a cancel handle cancels the context it held") {
    auto [a, cancel_a] = tether::with_cancel(tether::background());
    auto [b, cancel_b] = tether::with_cancel(tether::background());
    cancel_a = std::move(cancel_b);
    CHECK(a.err() == tether::errc::canceled);
    CHECK_FALSE(b.done());
    tether::cancel_handle& same = cancel_a;
    cancel_a = std::move(same); // self-move changes nothing
    CHECK_FALSE(b.done());
    cancel_a();
    CHECK(b.err() == tether::errc::canceled);
}

TEST_CASE("reset cancels the context and empties the handle") {
    auto [ctx, cancel] = tether::with_cancel(tether::background());
    cancel.reset();
    CHECK(ctx.err() == tether::errc::canceled);
    CHECK_FALSE(static_cast<bool>(cancel));
    cancel.reset(); // twice is harmless
}

TEST_CASE("a default-constructed cancel handle is empty and canceling it does nothing") {
    tether::cancel_handle h;
    CHECK_FALSE(static_cast<bool>(h));
    h();
    h(some_cause);
    h.reset();
}

TEST_CASE("with_cancel's handle takes a cause too, and an empty cause means canceled") {
    SUBCASE("with_cancel") {
        auto [ctx, cancel] = tether::with_cancel(tether::background());
        cancel(some_cause);
        CHECK(ctx.err() == tether::errc::canceled);
        CHECK(tether::cause(ctx) == some_cause);
    }
    SUBCASE("an empty cause") {
        auto [ctx, cancel] = tether::with_cancel_cause(tether::background());
        cancel(std::error_code{});
        CHECK(tether::cause(ctx) == tether::errc::canceled);
    }
}

TEST_CASE("cancel may be called from any thread, concurrently with the owner") {
    auto [ctx, cancel] = tether::with_cancel(tether::background());
    {
        std::jthread a([&cancel = cancel] { cancel(); });
        std::jthread b([&cancel = cancel] { cancel(); });
        cancel();
    }
    CHECK(ctx.err() == tether::errc::canceled);
}

TEST_CASE("a deep chain of cancel contexts is canceled from the root and destroyed") {
    // Go's CancelTree benchmark at depth 1000.
    auto [root, cancel_root] = tether::with_cancel(tether::background());
    std::vector<std::pair<tether::context, tether::cancel_handle>> chain;
    chain.reserve(1000);
    chain.push_back(tether::with_cancel(root));
    for (int i = 1; i < 1000; ++i) {
        chain.push_back(tether::with_cancel(chain.back().first));
    }
    cancel_root();
    for (auto& [c, h] : chain) {
        CHECK(c.err() == tether::errc::canceled);
    }
    chain.clear();
    CHECK(tether::detail::registration_count(root) == 0);
}

TEST_CASE("a chain of 200,000 cancel contexts is canceled from its root without recursing") {
    // Go's goroutine stacks grow; ours don't, so propagation must not recurse per link.
    tether::manual_clock clk;
    auto [root, cancel_root] = tether::with_cancel(tether::background(clk));
    std::vector<std::pair<tether::context, tether::cancel_handle>> chain;
    chain.reserve(200'000);
    chain.push_back(tether::with_cancel(root));
    for (int i = 1; i < 200'000; ++i) {
        const tether::context& up = chain.back().first;
        chain.push_back(i % 2 == 0 ? tether::with_cancel(up) : tether::with_timeout(up, 1h));
    }
    int calls = 0;
    tether::cancel_callback cb(chain.back().first, [&calls] { ++calls; });
    cancel_root();
    CHECK(chain.back().first.err() == tether::errc::canceled);
    CHECK(chain[100'000].first.err() == tether::errc::canceled);
    CHECK(calls == 1);
    CHECK(clk.pending() == 0);
    chain.clear(); // each handle finds its node done
}

TEST_CASE("layers of values and cancels are all canceled from the bottom layer") {
    // Go's TestLayersCancel.
    tether::manual_clock clk;
    const tether::context_key<int> k1{"k1"};
    const tether::context_key<int> k2{"k2"};
    std::vector<tether::cancel_handle> handles;
    tether::context ctx = tether::background(clk);
    tether::cancel_handle bottom;
    for (int i = 0; i < 30; ++i) {
        switch (i % 3) {
        case 0:
            ctx = tether::with_value(ctx, i % 2 == 0 ? k1 : k2, i);
            break;
        case 1: {
            auto [c, h] = tether::with_cancel(ctx);
            ctx = c;
            if (!bottom) {
                bottom = std::move(h);
            } else {
                handles.push_back(std::move(h));
            }
            break;
        }
        default: {
            auto [c, h] = tether::with_timeout(ctx, std::chrono::hours(1 + i));
            ctx = c;
            handles.push_back(std::move(h));
            break;
        }
        }
    }
    REQUIRE(ctx.value(k1) != nullptr);
    CHECK(*ctx.value(k1) == 24);
    REQUIRE(ctx.value(k2) != nullptr);
    CHECK(*ctx.value(k2) == 27);
    CHECK(ctx.deadline() == clk.now() + 3h); // the earliest, from i == 2
    CHECK_FALSE(ctx.done());
    bottom();
    CHECK(ctx.err() == tether::errc::canceled);
    CHECK(*ctx.value(k1) == 24);
}

TEST_CASE("cancel_unobserved: only a live context seen by nobody but its holder") {
    tether::context parent;
    {
        auto [ctx, cancel] = tether::with_cancel(parent);
        CHECK(tether::detail::cancel_unobserved(ctx));
        {
            tether::context copy = ctx; // another holder
            CHECK_FALSE(tether::detail::cancel_unobserved(ctx));
        }
        CHECK(tether::detail::cancel_unobserved(ctx));
        {
            auto [child, cancel_child] = tether::with_cancel(ctx); // a child registered on it
            CHECK_FALSE(tether::detail::cancel_unobserved(ctx));
        }
        CHECK(tether::detail::cancel_unobserved(ctx));
        cancel();
        CHECK_FALSE(tether::detail::cancel_unobserved(ctx)); // done
    }
    {
        // A handle moved away still counts: the context and one handle are the two owners.
        auto [ctx, cancel] = tether::with_cancel(parent);
        tether::cancel_handle moved = std::move(cancel);
        CHECK(tether::detail::cancel_unobserved(ctx));
    }
    {
        auto [ctx, cancel] = tether::with_timeout(parent, 1h); // a deadline: a timer watches
        CHECK_FALSE(tether::detail::cancel_unobserved(ctx));
    }
    {
        auto [done_parent, cancel_parent] = tether::with_cancel(parent);
        cancel_parent();
        auto [ctx, cancel] = tether::with_cancel(done_parent); // born done
        CHECK_FALSE(tether::detail::cancel_unobserved(ctx));
    }
    CHECK_FALSE(tether::detail::cancel_unobserved(parent)); // background
    {
        auto [ctx, cancel] = tether::with_cancel(parent);
        tether::context v = tether::with_value(ctx, int_key, 1); // holds ctx
        CHECK_FALSE(tether::detail::cancel_unobserved(ctx));
    }
}

TEST_CASE("cancel_unobserved races a parent's cancel on another thread") {
    // The holder asks while the parent is canceled on another thread: either answer is
    // right (the cancel came after the question, or before it), the context ends up canceled
    // either way, and under ThreadSanitizer the node's unlocked reads race with nothing.
    for (int i = 0; i < 2000; ++i) {
        auto [parent, cancel_parent] = tether::with_cancel(tether::context{});
        auto [ctx, cancel] = tether::with_cancel(parent);
        std::atomic<bool> go{false};
        std::jthread t([&go, &cancel_parent = cancel_parent] {
            while (!go.load(std::memory_order_acquire)) {
            }
            cancel_parent();
        });
        go.store(true, std::memory_order_release);
        bool quiet = tether::detail::cancel_unobserved(ctx);
        t.join();
        REQUIRE(ctx.is_done());
        CHECK(ctx.err() == tether::errc::canceled);
        CHECK_FALSE(tether::detail::cancel_unobserved(ctx));
        (void)quiet;
    }
}
