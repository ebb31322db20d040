#pragma once
// The base of every suspendable awaitable: a suspended coroutine, the context it waits
// under, and how it is canceled.

#include "context/context.hpp"

#include <atomic>
#include <coroutine>
#include <cstdint>
#include <system_error>

namespace tether {
class loop;
}

namespace tether::detail {

/// A coroutine suspended on some event, cancelable through its context.
///
/// Protocol (all on the owning loop's thread unless said otherwise):
/// - `arm(ctx)` before suspending: false if ctx is already done (then `error` holds why and
///   the caller must not suspend).
/// - The event completes: `finish(err)` disarms, makes sure no cross-thread cancel still
///   refers to this waiter, and queues the coroutine to resume.
/// - The context is done: on the loop's thread `on_cancel(this)` runs at once; from another
///   thread the waiter is queued on its loop, which calls `on_cancel` on its own thread
///   unless the waiter finished first. `on_cancel` either finishes the waiter with
///   `cancel_error()` or starts a kernel cancel whose completion finishes it.
struct waiter {
    loop* lp = nullptr;
    std::coroutine_handle<> handle;
    std::error_code error;
    const context* ctx = nullptr;
    void (*on_cancel)(waiter*) noexcept = nullptr;
    void* data = nullptr; // for on_cancel
    bool completed = false;
    bool cancel_requested = false;
    // Cross-thread cancel queue (guarded by the loop's remote mutex).
    bool remote_queued = false;
    waiter* remote_prev = nullptr;
    waiter* remote_next = nullptr;
    cancel_registration reg;

    /// Arms cancellation on `c`; returns false (with `error` set) if `c` is already done.
    bool arm(const context& c) noexcept;
    /// Arms on the cancel state behind a done signal (not the task's own context).
    bool arm_on(cancel_state* c) noexcept;
    /// Finishes the waiter with `e` and queues its coroutine; a second call is ignored.
    void finish(std::error_code e) noexcept;
    /// Finishes without queueing the coroutine (the caller resumes it another way).
    bool finish_quietly(std::error_code e) noexcept;
    /// Returns the error a canceled wait reports: the context's err().
    std::error_code cancel_error() const noexcept;
};

} // namespace tether::detail
