#pragma once
// event: a manual-reset event for tasks: set() wakes every waiter until reset().

#include "context/context.hpp"
#include "runtime/detail/wait_list.hpp"
#include "runtime/result.hpp"

#include <cassert>

namespace tether {

/// A flag that tasks wait on: `co_await ev.wait()` suspends until `set()` is called, and
/// returns at once while the event is set; `reset()` clears it (a manual-reset event, as
/// cppcoro's `async_manual_reset_event`).
///
/// `set()` wakes every waiter. A `reset()` after `set()` does not take the wakeup back from
/// waiters already woken: they resume with success.
///
/// Cancellation: `co_await ev.wait()` fails at once with the context's error under a
/// context that is already done, even if the event is set (cancellation is sticky). A
/// waiter whose context is done first leaves the queue and resumes with that error.
///
/// Lifetime: the event must outlive its waiters.
///
/// Thread safety: an event belongs to one loop; set, reset and wait on that loop's thread
/// (from another thread, `loop.post([&] { ev.set(); })`). The contexts of waiting tasks may
/// be canceled from any thread.
///
/// Example:
///
///     event ready;
///     // in one task:    co_await ready.wait();
///     // in another:     ready.set();
class event {
public:
    /// Makes an event, set or not.
    explicit event(bool set = false) noexcept : set_(set) {}
    event(const event&) = delete;
    event& operator=(const event&) = delete;
    ~event() { assert(waiters_.empty() && "event destroyed with waiters"); }

    /// Sets the event and wakes every waiter; does nothing more if it was already set.
    void set() noexcept;
    /// Clears the event: later waits suspend until the next `set()`.
    void reset() noexcept { set_ = false; }
    /// Returns true while the event is set.
    bool is_set() const noexcept { return set_; }

    /// Returns an awaitable that waits until the event is set: `co_await ev.wait()` gives
    /// `result<void>`.
    ///
    /// Errors: `errc::canceled` or `errc::deadline_exceeded` when the task's context is done
    /// first.
    detail::wait_awaiter<event> wait() noexcept { return detail::wait_awaiter<event>{*this}; }

private:
    friend class detail::wait_awaiter<event>;
    bool is_ready() const noexcept { return set_; }
    bool set_;
    detail::wait_list waiters_;
};

} // namespace tether
