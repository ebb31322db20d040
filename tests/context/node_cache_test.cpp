// The per-thread cache of freed node blocks (context/context.cpp, "node memory"): a context
// made after one was dropped reuses its block, blocks freed on another thread join that
// thread's cache, and a thread's cache goes back to malloc when it exits. Under
// AddressSanitizer the cache is off (every node goes back to malloc, so that a use after free
// is caught), and these tests check that instead.
#include "context/context.hpp"
#include "context/with_cancel.hpp"
#include "context/with_deadline.hpp"
#include "context/with_value.hpp"
#include "context/without_cancel.hpp"
#include "tests/support/test_util.hpp"

#include <doctest/doctest.h>

#include <chrono>
#include <cstddef>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

using namespace std::chrono_literals;
using tether::detail::cached_node_blocks;
using tether::detail::reaped_node_blocks;
using tether::test::iterations;
using tether::test::run_together;
using tether::test::under_asan;

namespace {

const tether::context_key<int> int_key{"n"};
const tether::context_key<std::string> string_key{"s"};

// The contexts of every kind that a cached block can hold, with their handles.
struct some_contexts {
    std::vector<tether::context> contexts;
    std::vector<tether::cancel_handle> handles;

    // Makes `n` of each kind under `parent`.
    void make(const tether::context& parent, int n) {
        for (int i = 0; i < n; ++i) {
            auto [c, cancel] = tether::with_cancel(parent);
            auto [t, cancel_t] = tether::with_timeout(c, 1h);
            contexts.push_back(tether::with_value(t, int_key, i));
            contexts.push_back(tether::with_value(t, string_key, std::string(40, 'x')));
            contexts.push_back(tether::without_cancel(c));
            handles.push_back(std::move(cancel));
            handles.push_back(std::move(cancel_t));
        }
    }
    // Nodes made by one make(): with_cancel, with_timeout, two values, without_cancel.
    static constexpr std::size_t nodes_per_round = 5;

    void drop() {
        handles.clear();
        contexts.clear();
    }
};

} // namespace

TEST_CASE("a context made after one like it was dropped reuses its block") {
    {
        auto warm = tether::with_cancel(tether::background());
    }
    const std::size_t before = cached_node_blocks();
    auto [ctx, cancel] = tether::with_cancel(tether::background());
    const tether::detail::node* first = ctx.node();
    if (under_asan()) {
        CHECK(before == 0);
        CHECK(cached_node_blocks() == 0);
        return;
    }
    REQUIRE(before >= 1);
    CHECK(cached_node_blocks() == before - 1); // taken from the cache, not from malloc
    cancel.reset();
    ctx = tether::context{};
    CHECK(cached_node_blocks() == before);
    auto [again, cancel_again] = tether::with_cancel(tether::background());
    CHECK(again.node() == first); // the last block freed is the first reused
}

TEST_CASE("value, deadline and without_cancel nodes come from the cache too") {
    some_contexts warm;
    warm.make(tether::background(), 1);
    warm.drop();
    const std::size_t before = cached_node_blocks();
    some_contexts made;
    made.make(tether::background(), 1);
    if (under_asan()) {
        CHECK(cached_node_blocks() == 0);
        return;
    }
    CHECK(cached_node_blocks() == before - some_contexts::nodes_per_round);
    made.drop();
    CHECK(cached_node_blocks() == before);
}

TEST_CASE("nodes freed on another thread join that thread's cache and are reused there") {
    constexpr int rounds = 20; // 20 * 5 nodes: under the cache's cap of each size
    auto [parent, cancel_parent] = tether::with_cancel(tether::background());
    some_contexts made;
    std::thread maker([&] { made.make(parent, rounds); });
    maker.join();
    std::size_t cached_after_drop = 0;
    std::size_t cached_after_reuse = 0;
    std::thread dropper([&] {
        made.drop(); // blocks malloc'ed by `maker`, freed here
        cached_after_drop = cached_node_blocks();
        some_contexts again;
        again.make(parent, rounds); // from this thread's cache
        cached_after_reuse = cached_node_blocks();
        again.drop();
    });
    dropper.join();
    if (under_asan()) {
        CHECK(cached_after_drop == 0);
    } else {
        CHECK(cached_after_drop == rounds * some_contexts::nodes_per_round);
    }
    CHECK(cached_after_reuse == 0);
    CHECK(tether::detail::registration_count(parent) == 0);
}

TEST_CASE("a thread's cached blocks go back to malloc when it exits") {
    const std::size_t reaped_before = reaped_node_blocks();
    std::size_t cached_at_exit = 0;
    std::thread t([&] {
        some_contexts made;
        made.make(tether::background(), 10);
        made.drop();
        cached_at_exit = cached_node_blocks();
    });
    t.join(); // after the thread's thread_local destructors
    if (under_asan()) {
        CHECK(cached_at_exit == 0);
    } else {
        CHECK(cached_at_exit == 10 * some_contexts::nodes_per_round);
    }
    CHECK(reaped_node_blocks() - reaped_before >= cached_at_exit);
}

TEST_CASE("the cache keeps a bounded number of blocks per thread") {
    std::size_t cached = 0;
    std::thread t([&] {
        std::vector<tether::context> many;
        for (int i = 0; i < 5000; ++i) {
            many.push_back(tether::with_value(tether::background(), int_key, i));
        }
        many.clear();
        cached = cached_node_blocks();
    });
    t.join();
    CHECK(cached <= 1024);
}

TEST_CASE("contexts made on one thread and dropped on another, both ways at once") {
    auto [parent, cancel_parent] = tether::with_cancel(tether::background());
    std::mutex mu;
    std::vector<some_contexts> mailbox[2]; // mailbox[i]: made by thread 1 - i, for thread i
    const std::size_t rounds = iterations(2000);
    run_together(2, [&](std::size_t me) {
        for (std::size_t r = 0; r < rounds; ++r) {
            some_contexts made;
            made.make(parent, 1);
            std::vector<some_contexts> mine;
            {
                std::lock_guard lk(mu);
                mailbox[1 - me].push_back(std::move(made));
                mine.swap(mailbox[me]);
            }
            mine.clear(); // drops what the other thread made: cancels and frees here
        }
    });
    mailbox[0].clear();
    mailbox[1].clear();
    CHECK(tether::detail::registration_count(parent) == 0);
}

TEST_CASE("a handle dropped after its context unlinks the child from its parent") {
    auto [parent, cancel_parent] = tether::with_cancel(tether::background());
    auto [ctx, cancel] = tether::with_cancel(parent);
    CHECK(tether::detail::registration_count(parent) == 1);
    ctx = tether::context{}; // the handle now holds the child's last reference
    cancel.reset();
    CHECK(tether::detail::registration_count(parent) == 0);
    CHECK_FALSE(parent.done());
}

TEST_CASE("a handle holding its child's last reference races the parent's cancel") {
    const std::size_t rounds = iterations(5000);
    for (std::size_t r = 0; r < rounds; ++r) {
        auto [parent, cancel_parent] = tether::with_cancel(tether::background());
        auto [ctx, cancel] = tether::with_cancel(parent);
        auto [grandchild, cancel_grandchild] = tether::with_cancel(ctx);
        ctx = tether::context{};
        cancel_grandchild.reset(); // unlinked, and grandchild alone holds nothing of ctx's
        grandchild = tether::context{};
        run_together(2, [&](std::size_t i) {
            if (i == 0) {
                cancel_parent(); // propagates into the child, maybe while it is freed
            } else {
                cancel.reset();
            }
        });
        CHECK(parent.err() == tether::errc::canceled);
        CHECK(tether::detail::registration_count(parent) == 0);
    }
}
