#pragma once
// switch_to: move the running coroutine to another loop's thread.

#include "runtime/detail/waiter.hpp"
#include "runtime/loop.hpp"
#include "runtime/task.hpp"

#include <coroutine>

namespace tether {

namespace detail {

/// Awaits `switch_to(target)`.
struct switch_awaiter {
    loop* target;
    bool await_ready() const noexcept { return current_loop() == target; }
    template <class P>
    void await_suspend(std::coroutine_handle<P> h) const {
        // The chain belongs to this loop's thread: end it here (the task makes a new one on
        // `target` if it waits there often).
        if (chain_owner* owner = owner_of(h)) {
            await_chain::end(owner);
        }
        target->post_resume(h);
    }
    void await_resume() const noexcept {}
};

} // namespace detail

/// Returns an awaitable that continues the running coroutine on `target`'s thread:
/// `co_await switch_to(rt.loop(1));`.
///
/// Does not suspend when already on `target`. Whatever the coroutine awaits afterwards runs
/// on `target`, and when it returns, whoever awaited it resumes there too (switch back to
/// return). A task started with `spawn` or `spawn_on` still ends at its handle's loop: its
/// joiner resumes where the handle lives.
///
/// Cancellation: not a cancellation point: it always moves, even under a context that is
/// done (the next await then fails with its error).
///
/// Lifetime: `target` must be running (or run later) and outlive the move.
///
/// Thread safety: `target` may be any loop; the coroutine runs on one thread at a time.
[[nodiscard]] inline detail::switch_awaiter switch_to(loop& target) noexcept {
    return {&target};
}

} // namespace tether
