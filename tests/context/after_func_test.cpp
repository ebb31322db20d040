#include "context/after_func.hpp"
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
#include <functional>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

using namespace std::chrono_literals;
using tether::test::counted;

namespace {

const tether::context_key<int> int_key{"n"};

// An executor whose posted functions wait until the test runs them.
class queue_executor final : public tether::executor {
public:
    void post(std::function<void()> fn) override {
        std::lock_guard lk(mu_);
        fns_.push_back(std::move(fn));
    }
    // Runs what is queued, including what those functions post; returns how many ran.
    std::size_t run_all() {
        std::size_t n = 0;
        for (;;) {
            std::vector<std::function<void()>> fns;
            {
                std::lock_guard lk(mu_);
                fns.swap(fns_);
            }
            if (fns.empty()) {
                return n;
            }
            for (auto& fn : fns) {
                fn();
                ++n;
            }
        }
    }
    std::size_t size() const {
        std::lock_guard lk(mu_);
        return fns_.size();
    }

private:
    mutable std::mutex mu_;
    std::vector<std::function<void()>> fns_;
};

// Installs an executor as the calling thread's for its lifetime.
class executor_scope {
public:
    explicit executor_scope(tether::executor* ex)
        : old_(tether::detail::exchange_current_executor(ex)) {}
    executor_scope(const executor_scope&) = delete;
    executor_scope& operator=(const executor_scope&) = delete;
    ~executor_scope() { tether::detail::exchange_current_executor(old_); }

private:
    tether::executor* old_;
};

// A one-shot flag another thread can wait for.
class event {
public:
    void set() {
        std::lock_guard lk(mu_);
        set_ = true;
        cv_.notify_all();
    }
    // Waits up to a generous 10 s; returns whether the event was set.
    bool wait() {
        std::unique_lock lk(mu_);
        return cv_.wait_for(lk, 10s, [this] { return set_; });
    }

private:
    std::mutex mu_;
    std::condition_variable cv_;
    bool set_ = false;
};

} // namespace

TEST_CASE("after_func runs fn once, on the registering executor, after the cancel") {
    // Go's TestAfterFuncCalledAfterCancel.
    queue_executor ex;
    auto [ctx, cancel] = tether::with_cancel(tether::background());
    int ran = 0;
    tether::after_func_handle h;
    {
        executor_scope scope(&ex);
        h = tether::after_func(ctx, [&ran] { ++ran; });
    }
    CHECK(ex.size() == 0);
    cancel();
    CHECK(ran == 0); // posted, never run inside cancel()
    CHECK(ex.size() == 1);
    cancel();
    CHECK(ex.size() == 1);
    CHECK(ex.run_all() == 1);
    CHECK(ran == 1);
    CHECK(tether::detail::registration_count(ctx) == 0);
}

TEST_CASE("fn goes to the executor current at after_func, not the one current at cancel") {
    queue_executor at_register;
    queue_executor at_cancel;
    auto [ctx, cancel] = tether::with_cancel(tether::background());
    int ran = 0;
    tether::after_func_handle h;
    {
        executor_scope scope(&at_register);
        h = tether::after_func(ctx, [&ran] { ++ran; });
    }
    {
        executor_scope scope(&at_cancel);
        cancel();
    }
    CHECK(at_cancel.size() == 0);
    CHECK(at_register.run_all() == 1);
    CHECK(ran == 1);
}

TEST_CASE("stop before the cancel returns true, and fn never runs") {
    // Go's TestAfterFuncNotCalledAfterStop.
    queue_executor ex;
    executor_scope scope(&ex);
    auto [ctx, cancel] = tether::with_cancel(tether::background());
    int ran = 0;
    tether::after_func_handle h = tether::after_func(ctx, [&ran] { ++ran; });
    CHECK(tether::detail::registration_count(ctx) == 1);
    CHECK(h.stop());
    CHECK(tether::detail::registration_count(ctx) == 0);
    cancel();
    CHECK(ex.run_all() == 0);
    CHECK(ran == 0);
    CHECK_FALSE(h.stop()); // already stopped
}

TEST_CASE("stop after the cancel returns false, and fn still runs") {
    queue_executor ex;
    executor_scope scope(&ex);
    auto [ctx, cancel] = tether::with_cancel(tether::background());
    int ran = 0;
    tether::after_func_handle h = tether::after_func(ctx, [&ran] { ++ran; });
    cancel();
    CHECK_FALSE(h.stop());
    CHECK(ex.run_all() == 1);
    CHECK(ran == 1);
    CHECK_FALSE(h.stop());
}

TEST_CASE("after_func on a done context runs fn, but not inside the after_func call") {
    // Go's TestAfterFuncCalledImmediately.
    auto [ctx, cancel] = tether::with_cancel(tether::background());
    cancel();
    SUBCASE("with an executor: posted to it") {
        queue_executor ex;
        executor_scope scope(&ex);
        int ran = 0;
        tether::after_func_handle h = tether::after_func(ctx, [&ran] { ++ran; });
        CHECK(ran == 0);
        CHECK_FALSE(h.stop()); // fn has been started
        CHECK(ex.run_all() == 1);
        CHECK(ran == 1);
    }
    SUBCASE("without an executor: fn runs once after_func has returned") {
        event returned;
        event finished;
        std::atomic<bool> saw_return{false};
        tether::after_func_handle h = tether::after_func(ctx, [&] {
            saw_return = returned.wait(); // inside after_func(), this would never be set
            finished.set();
        });
        returned.set();
        REQUIRE(finished.wait());
        CHECK(saw_return.load());
        CHECK_FALSE(h.stop());
    }
}

TEST_CASE("without an executor, fn runs after the cancel call has returned") {
    // Go's TestAfterFuncCalledAsynchronously: fn waits for something the canceler does only
    // once cancel() has returned, so running fn inside cancel() would never finish.
    auto [ctx, cancel] = tether::with_cancel(tether::background());
    event returned;
    event finished;
    std::atomic<bool> saw_return{false};
    tether::after_func_handle h = tether::after_func(ctx, [&] {
        saw_return = returned.wait();
        finished.set();
    });
    cancel();
    returned.set();
    REQUIRE(finished.wait());
    CHECK(saw_return.load());
}

TEST_CASE("without an executor, fn may take a lock that the canceler holds") {
    auto [ctx, cancel] = tether::with_cancel(tether::background());
    std::mutex mu;
    event finished;
    int guarded = 0;
    tether::after_func_handle h = tether::after_func(ctx, [&] {
        std::lock_guard lk(mu);
        ++guarded;
        finished.set();
    });
    {
        std::lock_guard lk(mu);
        cancel();
        CHECK(guarded == 0);
    }
    REQUIRE(finished.wait());
    std::lock_guard lk(mu);
    CHECK(guarded == 1);
}

TEST_CASE("fn sees every descendant of the canceled context done") {
    auto [parent, cancel] = tether::with_cancel(tether::background());
    auto [child, cancel_child] = tether::with_cancel(parent);
    auto [grandchild, cancel_grandchild] =
        tether::with_cancel(tether::with_value(child, int_key, 1));
    event finished;
    std::atomic<bool> all_done{false};
    // Registered last, so it is the first callback the cancel runs.
    tether::after_func_handle h =
        tether::after_func(parent, [&, &child = child, &grandchild = grandchild] {
            all_done = child.is_done() && grandchild.is_done();
            finished.set();
        });
    cancel();
    REQUIRE(finished.wait());
    CHECK(all_done.load());
}

TEST_CASE("fn runs when the deadline passes, and not before") {
    // Go's TestAfterFuncCalledAfterTimeout, on a clock the test moves.
    tether::manual_clock clk;
    queue_executor ex;
    executor_scope scope(&ex);
    auto [ctx, cancel] = tether::with_timeout(tether::background(clk), 100ms);
    int ran = 0;
    tether::after_func_handle h = tether::after_func(ctx, [&ran] { ++ran; });
    clk.advance(99ms);
    CHECK(ex.run_all() == 0);
    clk.advance(1ms);
    CHECK(ex.run_all() == 1);
    CHECK(ran == 1);
    CHECK_FALSE(h.stop());
}

TEST_CASE("fn on a child runs when the parent is canceled") {
    queue_executor ex;
    executor_scope scope(&ex);
    auto [parent, cancel] = tether::with_cancel(tether::background());
    auto [child, cancel_child] = tether::with_cancel(parent);
    int ran = 0;
    tether::after_func_handle h = tether::after_func(child, [&ran] { ++ran; });
    cancel();
    CHECK(ex.run_all() == 1);
    CHECK(ran == 1);
}

TEST_CASE("after_func on a context that is never done never runs fn, and stop returns true") {
    queue_executor ex;
    executor_scope scope(&ex);
    int ran = 0;
    SUBCASE("background") {
        tether::after_func_handle h = tether::after_func(tether::background(), [&ran] { ++ran; });
        CHECK(h.stop());
        CHECK_FALSE(h.stop());
    }
    SUBCASE("without_cancel of a canceled context") {
        auto [ctx, cancel] = tether::with_cancel(tether::background());
        cancel();
        tether::after_func_handle h =
            tether::after_func(tether::without_cancel(ctx), [&ran] { ++ran; });
        CHECK(h.stop());
    }
    CHECK(ex.run_all() == 0);
    CHECK(ran == 0);
}

TEST_CASE("dropping the handle does not stop fn") {
    queue_executor ex;
    executor_scope scope(&ex);
    auto [ctx, cancel] = tether::with_cancel(tether::background());
    int ran = 0;
    (void)tether::after_func(ctx, [&ran] { ++ran; });
    cancel();
    CHECK(ex.run_all() == 1);
    CHECK(ran == 1);
}

TEST_CASE("a default-constructed after_func handle stops nothing") {
    tether::after_func_handle h;
    CHECK_FALSE(h.stop());
}

TEST_CASE("many after_funcs on one context each run once") {
    queue_executor ex;
    executor_scope scope(&ex);
    auto [ctx, cancel] = tether::with_cancel(tether::background());
    std::vector<int> ran(100, 0);
    std::vector<tether::after_func_handle> hs;
    for (int& r : ran) {
        hs.push_back(tether::after_func(ctx, [&r] { ++r; }));
    }
    for (std::size_t i = 0; i < hs.size(); i += 2) {
        CHECK(hs[i].stop());
    }
    cancel();
    CHECK(ex.run_all() == 50);
    for (std::size_t i = 0; i < ran.size(); ++i) {
        CHECK(ran[i] == (i % 2 == 0 ? 0 : 1));
    }
}

TEST_CASE("fn and what it captures are destroyed once it has run or been stopped") {
    queue_executor ex;
    executor_scope scope(&ex);
    counted::reset();
    SUBCASE("run, then the handle dropped") {
        auto [ctx, cancel] = tether::with_cancel(tether::background());
        {
            tether::after_func_handle h = tether::after_func(ctx, [c = counted{}] { (void)c; });
            cancel();
            CHECK(ex.run_all() == 1);
        }
        CHECK(counted::alive() == 0);
    }
    SUBCASE("run after the handle was dropped") {
        auto [ctx, cancel] = tether::with_cancel(tether::background());
        (void)tether::after_func(ctx, [c = counted{}] { (void)c; });
        cancel();
        CHECK(counted::alive() > 0);
        CHECK(ex.run_all() == 1);
        CHECK(counted::alive() == 0);
    }
    SUBCASE("stopped, then the handle dropped") {
        auto [ctx, cancel] = tether::with_cancel(tether::background());
        {
            tether::after_func_handle h = tether::after_func(ctx, [c = counted{}] { (void)c; });
            CHECK(h.stop());
        }
        CHECK(counted::alive() == 0);
    }
    SUBCASE("a never-done context, the handle dropped") {
        (void)tether::after_func(tether::background(), [c = counted{}] { (void)c; });
        CHECK(counted::alive() == 0);
    }
}

TEST_CASE("after_func keeps its context alive until fn is started") {
    queue_executor ex;
    executor_scope scope(&ex);
    int ran = 0;
    tether::cancel_handle cancel;
    tether::after_func_handle h;
    {
        auto [ctx, c] = tether::with_cancel(tether::background());
        cancel = std::move(c);
        h = tether::after_func(tether::with_value(ctx, int_key, 1), [&ran] { ++ran; });
    } // every context naming it is gone
    cancel();
    CHECK(ex.run_all() == 1);
    CHECK(ran == 1);
}

TEST_CASE("fn may cancel contexts and register more after_funcs") {
    queue_executor ex;
    executor_scope scope(&ex);
    auto [a, cancel_a] = tether::with_cancel(tether::background());
    auto [b, cancel_b] = tether::with_cancel(tether::background());
    int ran_b = 0;
    tether::after_func_handle hb;
    tether::after_func_handle ha = tether::after_func(a, [&, &b = b, &cancel_b = cancel_b] {
        hb = tether::after_func(b, [&ran_b] { ++ran_b; });
        cancel_b();
    });
    cancel_a();
    CHECK(ex.run_all() == 2);
    CHECK(ran_b == 1);
}
