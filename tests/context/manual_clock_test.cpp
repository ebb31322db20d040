#include "context/manual_clock.hpp"
#include "tests/support/test_util.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <random>
#include <vector>

using namespace std::chrono_literals;

namespace {

// A timer that records the order in which timers fire.
struct recorded_timer {
    tether::detail::timer_node node;
    std::vector<int>* log = nullptr;
    int id = 0;

    recorded_timer(std::vector<int>& l, int i, tether::time_point when) : log(&l), id(i) {
        node.when = when;
        node.data = this;
        node.fire = [](tether::detail::timer_node* t) noexcept {
            auto* self = static_cast<recorded_timer*>(t->data);
            self->log->push_back(self->id);
        };
    }
};

} // namespace

TEST_CASE("a manual clock starts at start() and moves only when told") {
    tether::manual_clock clk;
    CHECK(clk.now() == tether::manual_clock::start());
    CHECK(clk.now() == clk.now());
    clk.advance(1s);
    CHECK(clk.now() == tether::manual_clock::start() + 1s);
    clk.set(tether::manual_clock::start() + 1h);
    CHECK(clk.now() == tether::manual_clock::start() + 1h);
}

TEST_CASE("a manual clock never moves backwards") {
    tether::manual_clock clk;
    clk.advance(10s);
    SUBCASE("advance by zero") {
        clk.advance(0s);
    }
    SUBCASE("advance by a negative duration") {
        clk.advance(-5s);
    }
    SUBCASE("set to an earlier time") {
        clk.set(tether::manual_clock::start());
    }
    CHECK(clk.now() == tether::manual_clock::start() + 10s);
}

TEST_CASE("a timer fires at its time, not before, inside the call that moves the clock") {
    tether::manual_clock clk;
    std::vector<int> log;
    recorded_timer t(log, 1, clk.now() + 10ms);
    clk.schedule(t.node);
    CHECK(log.empty()); // never inside schedule()
    CHECK(clk.pending() == 1);
    CHECK(clk.next_expiry() == clk.now() + 10ms);
    SUBCASE("1 ns before") {
        clk.advance(10ms - 1ns);
        CHECK(log.empty());
        CHECK(clk.pending() == 1);
        CHECK(clk.unschedule(t.node));
    }
    SUBCASE("at its time") {
        clk.advance(10ms);
        CHECK(log == std::vector<int>{1});
        CHECK(clk.pending() == 0);
        CHECK(clk.next_expiry() == tether::time_point::max());
        CHECK_FALSE(clk.unschedule(t.node)); // already fired
    }
}

TEST_CASE("a timer scheduled at a time already reached fires on the next move") {
    tether::manual_clock clk;
    std::vector<int> log;
    recorded_timer t(log, 1, clk.now() - 1s);
    clk.schedule(t.node);
    CHECK(log.empty());
    clk.advance(0s); // a move by nothing still fires what is due
    CHECK(log == std::vector<int>{1});
}

TEST_CASE("timers fire in deadline order, whatever order they were scheduled in") {
    tether::manual_clock clk;
    std::vector<int> log;
    const tether::time_point t0 = clk.now();
    std::vector<std::unique_ptr<recorded_timer>> timers;
    for (int ms : {30, 10, 50, 20, 40}) {
        timers.push_back(
            std::make_unique<recorded_timer>(log, ms, t0 + std::chrono::milliseconds(ms)));
        clk.schedule(timers.back()->node);
    }
    CHECK(clk.next_expiry() == t0 + 10ms);
    clk.advance(25ms);
    CHECK(log == std::vector<int>{10, 20});
    CHECK(clk.next_expiry() == t0 + 30ms);
    clk.advance(1h);
    CHECK(log == std::vector<int>{10, 20, 30, 40, 50});
}

TEST_CASE("unschedule removes a pending timer, and says false for one never scheduled") {
    tether::manual_clock clk;
    std::vector<int> log;
    recorded_timer a(log, 1, clk.now() + 1s);
    recorded_timer b(log, 2, clk.now() + 2s);
    recorded_timer never(log, 3, clk.now() + 3s);
    clk.schedule(a.node);
    clk.schedule(b.node);
    CHECK_FALSE(clk.unschedule(never.node));
    CHECK(clk.unschedule(a.node));
    CHECK_FALSE(clk.unschedule(a.node));
    CHECK(clk.pending() == 1);
    clk.advance(5s);
    CHECK(log == std::vector<int>{2});
}

TEST_CASE("a firing timer may schedule another, which fires in the same move if due") {
    tether::manual_clock clk;
    struct chained {
        tether::detail::timer_node node;
        tether::manual_clock* clk = nullptr;
        chained* next = nullptr;
        int fired = 0;
    };
    chained second;
    chained first;
    first.clk = &clk;
    first.next = &second;
    auto fire = [](tether::detail::timer_node* t) noexcept {
        auto* self = static_cast<chained*>(t->data);
        ++self->fired;
        if (self->next != nullptr) {
            self->next->node.when = t->when + 1ms;
            self->clk->schedule(self->next->node);
        }
    };
    for (chained* c : {&first, &second}) {
        c->node.data = c;
        c->node.fire = fire;
    }
    first.node.when = clk.now() + 1ms;
    clk.schedule(first.node);
    clk.advance(5ms);
    CHECK(first.fired == 1);
    CHECK(second.fired == 1);
}

TEST_CASE("observers run after every move until removed") {
    tether::manual_clock clk;
    int calls = 0;
    std::uint64_t id = clk.observe([&calls] { ++calls; });
    clk.advance(1ms);
    clk.set(clk.now() + 1ms);
    CHECK(calls == 2);
    clk.unobserve(id);
    clk.advance(1ms);
    CHECK(calls == 2);
}

TEST_CASE("observers run after the timers that the move fired") {
    tether::manual_clock clk;
    std::vector<int> log;
    recorded_timer t(log, 1, clk.now() + 1ms);
    clk.schedule(t.node);
    std::uint64_t id = clk.observe([&log] { log.push_back(99); });
    clk.advance(1ms);
    CHECK(log == std::vector<int>{1, 99});
    clk.unobserve(id);
}

TEST_CASE("many timers scheduled and unscheduled at random fire exactly once, in order") {
    // Exercises the heap: removals from the middle, equal times, growth and shrinkage.
    tether::manual_clock clk;
    const tether::time_point t0 = clk.now();
    std::mt19937 rng(12345);
    std::vector<int> log;
    std::vector<std::unique_ptr<recorded_timer>> timers;
    std::vector<bool> removed;
    for (int i = 0; i < 2000; ++i) {
        auto when = t0 + std::chrono::milliseconds(rng() % 500);
        timers.push_back(std::make_unique<recorded_timer>(log, i, when));
        clk.schedule(timers.back()->node);
        removed.push_back(false);
        if (rng() % 3 == 0) {
            std::size_t victim = rng() % timers.size();
            removed[victim] = removed[victim] || clk.unschedule(timers[victim]->node);
        }
    }
    std::size_t live = static_cast<std::size_t>(std::count(removed.begin(), removed.end(), false));
    CHECK(clk.pending() == live);
    for (int step = 0; step < 50; ++step) {
        clk.advance(10ms);
    }
    CHECK(clk.pending() == 0);
    REQUIRE(log.size() == live);
    for (std::size_t i = 1; i < log.size(); ++i) {
        auto prev = timers[static_cast<std::size_t>(log[i - 1])]->node.when;
        auto cur = timers[static_cast<std::size_t>(log[i])]->node.when;
        CHECK(prev <= cur);
    }
    for (int id : log) {
        CHECK_FALSE(removed[static_cast<std::size_t>(id)]);
    }
}

TEST_CASE("advances from several threads at once all take effect") {
    tether::manual_clock clk;
    constexpr int per_thread = 1000;
    std::atomic<int> fired{0};
    std::vector<tether::detail::timer_node> nodes(4 * per_thread);
    for (std::size_t i = 0; i < nodes.size(); ++i) {
        nodes[i].when = clk.now() + std::chrono::nanoseconds(i + 1);
        nodes[i].data = &fired;
        nodes[i].fire = [](tether::detail::timer_node* t) noexcept {
            static_cast<std::atomic<int>*>(t->data)->fetch_add(1);
        };
        clk.schedule(nodes[i]);
    }
    tether::test::run_together(4, [&clk](std::size_t) {
        for (int i = 0; i < per_thread; ++i) {
            clk.advance(1ns);
        }
    });
    CHECK(clk.now() == tether::manual_clock::start() + std::chrono::nanoseconds(4 * per_thread));
    CHECK(fired.load() == 4 * per_thread);
    CHECK(clk.pending() == 0);
}
