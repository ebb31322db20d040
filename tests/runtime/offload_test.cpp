#include "context/with_cancel.hpp"
#include "runtime/loop.hpp"
#include "runtime/offload.hpp"
#include "runtime/spawn.hpp"
#include "tests/support/test_util.hpp"

#include <doctest/doctest.h>

#include <atomic>
#include <latch>
#include <memory>
#include <optional>
#include <stdexcept>
#include <thread>

using namespace tether;

namespace {

template <class T>
join_handle<T> start(loop& l, const context& ctx, task<T> t) {
    std::optional<join_handle<T>> h;
    l.post([&] { h.emplace(spawn(ctx, std::move(t))); });
    l.run_until_idle();
    REQUIRE(h.has_value());
    return std::move(*h);
}

template <class T>
T join(loop& l, join_handle<T> h) {
    result<T> r = l.block_on(
        [](join_handle<T> jh) -> task<result<T>> { co_return co_await jh; }(std::move(h)));
    REQUIRE(r.has_value());
    return std::move(*r);
}

} // namespace

TEST_CASE("offload runs the function on another thread and resumes on the loop's thread") {
    loop l;
    auto ids = l.block_on([]() -> task<std::array<std::thread::id, 3>> {
        std::thread::id before = std::this_thread::get_id();
        result<std::thread::id> ran = co_await offload([] { return std::this_thread::get_id(); });
        co_return std::array{before, *ran, std::this_thread::get_id()};
    }());
    CHECK(ids[0] == std::this_thread::get_id());
    CHECK(ids[1] != ids[0]);
    CHECK(ids[2] == ids[0]);
}

TEST_CASE("offload returns the value, works for void, and rethrows the exception") {
    loop l;
    SUBCASE("value") {
        auto r = l.block_on(
            []() -> task<result<int>> { co_return co_await offload([] { return 42; }); }());
        CHECK(r.value() == 42);
    }
    SUBCASE("void") {
        std::atomic<bool> ran{false};
        auto r = l.block_on([](std::atomic<bool>* f) -> task<result<void>> {
            co_return co_await offload([f] { *f = true; });
        }(&ran));
        CHECK(r.has_value());
        CHECK(ran);
    }
    SUBCASE("exception") {
        CHECK_THROWS_AS(l.block_on([]() -> task<void> {
            auto r = co_await offload([]() -> int { throw std::runtime_error("boom"); });
            (void)r;
        }()),
                        std::runtime_error);
    }
}

TEST_CASE("offload passes its arguments to the function, moved") {
    loop l;
    auto token = std::make_shared<int>(5);
    std::weak_ptr<int> watch = token;
    auto r = l.block_on([](std::shared_ptr<int> t) -> task<result<int>> {
        co_return co_await offload([](std::shared_ptr<int> p, int k) { return *p * k; },
                                   std::move(t), 3);
    }(std::move(token)));
    CHECK(r.value() == 15);
    while (!watch.expired()) { // the pool drops the call just after it returns
        std::this_thread::yield();
    }
}

TEST_CASE("offload under a canceled context never runs the function") {
    loop l;
    auto [ctx, cancel] = with_cancel(l.background());
    cancel();
    std::atomic<bool> ran{false};
    auto r = l.block_on(ctx, [](std::atomic<bool>* f) -> task<result<void>> {
        co_return co_await offload([f] { *f = true; });
    }(&ran));
    CHECK(r.error() == errc::canceled);
    CHECK_FALSE(ran);
}

namespace {
// A call that blocks until released; the latches outlive it (the test waits for `done`).
struct gate {
    std::latch started{1};
    std::latch release{1};
    std::latch done{1};
};

task<result<int>> blocked_call(gate* g, std::shared_ptr<int> held) {
    // `held` goes as an argument, not a capture: see offload's note on GCC 12.
    co_return co_await offload(
        [](gate* gt, std::shared_ptr<int> h) {
            gt->started.count_down();
            gt->release.wait();
            gt->done.count_down();
            return *h;
        },
        g, std::move(held));
}
} // namespace

TEST_CASE("a canceled offload resumes at once while the function runs on") {
    std::weak_ptr<int> held;
    {
        loop l;
        gate g;
        auto token = std::make_shared<int>(7);
        held = token;
        auto [ctx, cancel] = with_cancel(l.background());
        auto h = start(l, ctx, blocked_call(&g, std::move(token)));
        g.started.wait();
        cancel();
        result<int> r = join(l, std::move(h));
        CHECK(r.error() == errc::canceled);
        // The function is still blocked: the await did not wait for it.
        CHECK_FALSE(g.done.try_wait());
        CHECK_FALSE(held.expired()); // the pool still holds the function
        g.release.count_down();
        g.done.wait();
    }
    // The pool drops the function (and what it captured) once it returns; the loop is gone
    // by then, and nothing touches it.
    while (!held.expired()) {
        std::this_thread::yield();
    }
    CHECK(held.expired());
}

TEST_CASE("a cancel from another thread racing the function's return loses nothing") {
    loop l;
    int returned = 0;
    int canceled = 0;
    for (std::size_t i = 0; i < test::iterations(2000); ++i) {
        auto [ctx, cancel] = with_cancel(l.background());
        auto h = start(l, ctx, [](int v) -> task<result<int>> {
            co_return co_await offload([v] { return v; });
        }(static_cast<int>(i)));
        std::thread canceler([&] { cancel(); });
        result<int> r = join(l, std::move(h));
        canceler.join();
        if (r.has_value()) {
            CHECK(*r == static_cast<int>(i));
            ++returned;
        } else {
            CHECK(r.error() == errc::canceled);
            ++canceled;
        }
    }
    MESSAGE("returned: " << returned << ", canceled: " << canceled);
}

TEST_CASE("many offloads run concurrently on the pool") {
    loop l;
    constexpr int n = 8;
    std::latch all_running(n); // each call waits until all are running: needs n threads
    auto sum = l.block_on([](std::latch* gate) -> task<int> {
        std::vector<join_handle<result<int>>> hs;
        for (int i = 0; i < n; ++i) {
            hs.push_back(co_await spawn([](std::latch* g, int v) -> task<result<int>> {
                co_return co_await offload([g, v] {
                    g->arrive_and_wait();
                    return v;
                });
            }(gate, i)));
        }
        int s = 0;
        for (auto& h : hs) {
            s += (co_await h)->value();
        }
        co_return s;
    }(&all_running));
    CHECK(sum == n * (n - 1) / 2);
}
