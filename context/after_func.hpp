#pragma once
// after_func: run a function once after a context is done.

#include "context/context.hpp"

#include <functional>
#include <memory>

namespace tether {

namespace detail {
struct after_func_state;
}

/// The handle returned by `after_func`: `stop()` prevents the function from running.
///
/// Dropping the handle does not stop the function.
class after_func_handle {
public:
    after_func_handle() noexcept = default;
    explicit after_func_handle(std::shared_ptr<detail::after_func_state> s) noexcept
        : s_(std::move(s)) {}

    /// Stops the function from running; returns true if this call prevented it.
    ///
    /// Returns false if the function has already been started (the context is done) or was
    /// already stopped. Idempotent.
    ///
    /// Thread safety: may be called from any thread.
    bool stop() const noexcept;

private:
    std::shared_ptr<detail::after_func_state> s_;
};

/// Arranges for `fn` to run once after `ctx` is done, and returns a handle that can stop it.
///
/// `fn` runs as its own task on the executor that was current when `after_func` was called
/// (the loop running the calling task), never inside the `after_func()` call or inside the
/// `cancel()` that triggered it: it is posted once that cancel has finished propagating, so
/// `fn` sees every descendant of the canceled context done. Called with no executor (no loop
/// running), `fn` is posted to `real_executor()`'s background thread instead, so it may take
/// a lock that the canceler holds. If `ctx` is already done, `fn` is posted at once. For a
/// context that is never done, `fn` never runs.
///
/// Errors: throws std::bad_alloc if the registration can't be allocated.
[[nodiscard("keep the handle to stop fn, or cast to void")]] after_func_handle
after_func(const context& ctx, std::function<void()> fn);

} // namespace tether
