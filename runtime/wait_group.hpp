#pragma once
// wait_group: Go's sync.WaitGroup for tasks: wait until a count of pending work drops to zero.

#include "context/context.hpp"
#include "runtime/detail/wait_list.hpp"
#include "runtime/result.hpp"

#include <cassert>
#include <cstddef>

namespace tether {

/// A counter of pending work that tasks can wait on (Go's `sync.WaitGroup`): `add(n)`
/// before starting n pieces of work, `done()` as each finishes, and `co_await wg.wait()`
/// suspends until the counter is zero.
///
/// When the counter reaches zero every waiter wakes; a wait on a zero counter returns at
/// once. The group can be reused: `add` again after the waiters have been woken.
///
/// Cancellation: `co_await wg.wait()` fails at once with the context's error under a
/// context that is already done (cancellation is sticky), and a waiter whose context is
/// done first leaves the queue and resumes with that error. The count is not touched: the
/// work goes on (cancel its context to stop it).
///
/// Lifetime: the group must outlive its waiters.
///
/// Thread safety: a wait_group belongs to one loop; call `add`, `done` and `wait` on that
/// loop's thread (tasks spawned on it, or `loop.post`). The contexts of waiting tasks may
/// be canceled from any thread.
///
/// Example:
///
///     wait_group wg;
///     for (auto& url : urls) {
///         wg.add(1);
///         handles.push_back(co_await spawn(fetch(url, &wg))); // fetch calls wg.done()
///     }
///     co_await wg.wait();
class wait_group {
public:
    wait_group() noexcept = default;
    wait_group(const wait_group&) = delete;
    wait_group& operator=(const wait_group&) = delete;
    ~wait_group() { assert(waiters_.empty() && "wait_group destroyed with waiters"); }

    /// Adds `delta` (which may be negative) to the counter; at zero, wakes every waiter.
    ///
    /// The counter going below zero is a bug (Go panics): it asserts.
    void add(std::ptrdiff_t delta) noexcept;
    /// Subtracts one from the counter (`add(-1)`).
    void done() noexcept { add(-1); }
    /// Returns the counter.
    std::size_t count() const noexcept { return count_; }

    /// Returns an awaitable that waits until the counter is zero: `co_await wg.wait()` gives
    /// `result<void>`.
    ///
    /// Errors: `errc::canceled` or `errc::deadline_exceeded` when the task's context is done
    /// first.
    detail::wait_awaiter<wait_group> wait() noexcept {
        return detail::wait_awaiter<wait_group>{*this};
    }

private:
    friend class detail::wait_awaiter<wait_group>;
    bool is_ready() const noexcept { return count_ == 0; }
    std::size_t count_ = 0;
    detail::wait_list waiters_;
};

} // namespace tether
