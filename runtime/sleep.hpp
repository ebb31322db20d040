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
    explicit sleep_awaiter(duration d) noexcept : relative_(true), ticks_(d.count()) {}
    explicit sleep_awaiter(time_point t) noexcept
        : relative_(false), ticks_(t.time_since_epoch().count()) {}
    sleep_awaiter(const sleep_awaiter&) = delete;
    sleep_awaiter& operator=(const sleep_awaiter&) = delete;
    ~sleep_awaiter() {
        // The registration is the awaiter's own (ext_), not one from the frame lists: disarm
        // it here, while the waiter is whole, and leave the waiter nothing to free.
        if (w_.ext == &ext_) {
            ext_.reg.disarm();
            w_.ext = nullptr;
        }
    }
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
    // sleep_for's duration or sleep_until's time point, in the clock's ticks: one field,
    // which keeps a sleeping task's frame 8 bytes smaller.
    bool relative_;
    duration::rep ticks_;
    timer_node timer_;
    waiter w_;
    // The waiter's registration, kept in the awaiter: a sleeping task (most sleep under a
    // context that can be canceled, and a task's first awaits arm a registration of their
    // own) holds it in its frame, not in a second block from the frame lists.
    waiter_ext ext_;
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
    return detail::sleep_awaiter{d};
}

/// Suspends the running task until `t` on its loop's clock; as `sleep_for`.
[[nodiscard]] inline detail::sleep_awaiter sleep_until(time_point t) noexcept {
    return detail::sleep_awaiter{t};
}

} // namespace tether
