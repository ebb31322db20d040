#include "context/clock.hpp"

#include <doctest/doctest.h>

#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

using namespace std::chrono_literals;

namespace {

// A one-shot flag another thread can wait for, up to a generous 10 s.
class event {
public:
    void set() {
        std::lock_guard lk(mu_);
        set_ = true;
        cv_.notify_all();
    }
    bool wait() {
        std::unique_lock lk(mu_);
        return cv_.wait_for(lk, 10s, [this] { return set_; });
    }

private:
    std::mutex mu_;
    std::condition_variable cv_;
    bool set_ = false;
};

struct event_timer {
    tether::detail::timer_node node;
    event fired;
    event_timer() {
        node.data = this;
        node.fire = [](tether::detail::timer_node* t) noexcept {
            static_cast<event_timer*>(t->data)->fired.set();
        };
    }
};

struct null_executor final : tether::executor {
    void post(std::function<void()>) override {}
};

} // namespace

TEST_CASE("the real clock reads the steady clock") {
    auto before = std::chrono::steady_clock::now();
    auto now = tether::real_clock().now();
    auto after = std::chrono::steady_clock::now();
    CHECK(before <= now);
    CHECK(now <= after);
    CHECK(&tether::real_clock() == &tether::real_clock());
}

TEST_CASE("a real-clock timer fires on the clock's thread, never inside schedule") {
    event_timer t;
    t.node.when = tether::real_clock().now() - 1s; // already due
    tether::real_clock().schedule(t.node);
    REQUIRE(t.fired.wait());
    CHECK_FALSE(tether::real_clock().unschedule(t.node)); // already fired
}

TEST_CASE("a real-clock timer that becomes the earliest wakes the clock's thread") {
    event_timer late;
    late.node.when = tether::real_clock().now() + 24h;
    tether::real_clock().schedule(late.node);
    event_timer soon;
    soon.node.when = tether::real_clock().now() + 1ms;
    tether::real_clock().schedule(soon.node);
    REQUIRE(soon.fired.wait());
    CHECK(tether::real_clock().unschedule(late.node));
}

TEST_CASE("an unscheduled real-clock timer never fires") {
    event_timer t;
    t.node.when = tether::real_clock().now() + 1h;
    tether::real_clock().schedule(t.node);
    CHECK(tether::real_clock().unschedule(t.node));
    CHECK_FALSE(tether::real_clock().unschedule(t.node));
}

TEST_CASE("real_executor runs posted functions on another thread, in order") {
    std::vector<int> order;
    std::mutex mu;
    event done;
    std::thread::id runner;
    for (int i = 0; i < 3; ++i) {
        tether::real_executor().post([&, i] {
            std::lock_guard lk(mu);
            order.push_back(i);
            runner = std::this_thread::get_id();
            if (i == 2) {
                done.set();
            }
        });
    }
    REQUIRE(done.wait());
    std::lock_guard lk(mu);
    CHECK(order == std::vector<int>{0, 1, 2});
    CHECK(runner != std::this_thread::get_id());
}

TEST_CASE("the current executor is null until installed, and per thread") {
    CHECK(tether::current_executor() == nullptr);
    null_executor ex;
    tether::executor* old = tether::detail::exchange_current_executor(&ex);
    CHECK(old == nullptr);
    CHECK(tether::current_executor() == &ex);
    tether::executor* elsewhere = &ex;
    std::thread([&elsewhere] { elsewhere = tether::current_executor(); }).join();
    CHECK(elsewhere == nullptr);
    CHECK(tether::detail::exchange_current_executor(old) == &ex);
    CHECK(tether::current_executor() == nullptr);
}
