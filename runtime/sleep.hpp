#pragma once
// sleep_for, sleep_until: suspend the running task on the loop's timers.

#include "context/clock.hpp"
#include "runtime/detail/waiter.hpp"
#include "runtime/result.hpp"
#include "runtime/task.hpp"

#include <coroutine>

namespace tether {

namespace detail {
class sleep_awaiter {
public:
    sleep_awaiter(bool relative, duration d, time_point t) noexcept
        : relative_(relative), d_(d), t_(t) {}
    bool await_ready() const noexcept { return false; }
    template <class P>
    bool await_suspend(std::coroutine_handle<P> h) noexcept {
        w_.owner = owner_of(h);
        return suspend(context_of(h), h);
    }
    result<void> await_resume() const noexcept { return w_.error; }

private:
    bool suspend(const context& c, std::coroutine_handle<> h) noexcept;
    static void fire(timer_node* t) noexcept;
    static void cancel(waiter* w) noexcept;
    bool relative_;
    duration d_;
    time_point t_;
    timer_node timer_;
    waiter w_;
};
} // namespace detail

/// Suspends the running task for `d` on its loop's clock.
///
/// A zero or negative `d` returns at once (still checking the context).
///
/// Cancellation: resumes at once with the context's error (`errc::canceled` or
/// `errc::deadline_exceeded`) when the task's context is done; under a context that is
/// already done, returns that error without waiting.
///
/// Example:
///
///     if (auto r = co_await tether::sleep_for(100ms); !r) { co_return r.error(); }
[[nodiscard]] inline detail::sleep_awaiter sleep_for(duration d) noexcept {
    return {true, d, {}};
}

/// Suspends the running task until `t` on its loop's clock; as `sleep_for`.
[[nodiscard]] inline detail::sleep_awaiter sleep_until(time_point t) noexcept {
    return {false, {}, t};
}

} // namespace tether
