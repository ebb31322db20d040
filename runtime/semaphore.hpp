#pragma once
// semaphore: a counting semaphore for tasks; acquire waits without blocking the loop, FIFO
// and cancelable.

#include "context/context.hpp"
#include "runtime/detail/wait_list.hpp"
#include "runtime/result.hpp"
#include "runtime/task.hpp"

#include <cassert>
#include <coroutine>
#include <cstddef>
#include <mutex>

namespace tether {

class semaphore;

namespace detail {

/// A task waiting for `n` permits.
struct permit_waiter : list_waiter {
    std::size_t n = 0;
};

/// Awaits `semaphore::acquire(n)`. Movable until awaited.
class acquire_awaiter {
public:
    acquire_awaiter(semaphore& s, std::size_t n) noexcept : s_(&s), n_(n) {}
    acquire_awaiter(acquire_awaiter&& o) noexcept : s_(o.s_), n_(o.n_) {}

    bool await_ready() const noexcept { return false; }
    template <class P>
    bool await_suspend(std::coroutine_handle<P> h) noexcept {
        pw_.w.owner = owner_of(h);
        return suspend(context_of(h), h);
    }
    result<void> await_resume() const noexcept { return pw_.w.error; }

private:
    bool suspend(const context& c, std::coroutine_handle<> h) noexcept;
    semaphore* s_;
    std::size_t n_;
    permit_waiter pw_;
};

} // namespace detail

/// A counting semaphore for tasks, on one loop or several (Go's `x/sync/semaphore.Weighted`
/// without a maximum): `acquire(n)` takes n permits, waiting while fewer are available,
/// and `release(n)` gives them back.
///
/// Waiters are served first come, first served: a task asking for many permits at the head
/// of the queue holds back later tasks asking for fewer, so that it never starves.
///
/// Cancellation: `co_await s.acquire(n)` fails at once with the context's error under a
/// context that is already done, even if permits are available (cancellation is sticky). A
/// waiter whose context is done leaves the queue holding no permits, and the waiters it was
/// holding back are served if the permits now suffice. A waiter that was granted its
/// permits before the cancel took effect resumes with success: it holds them and must
/// release them.
///
/// Lifetime: the semaphore must outlive its waiters.
///
/// Thread safety: tasks on different loops may share a semaphore: the count and the queue
/// are guarded by a spin lock, and a waiter granted permits by a task on another loop
/// resumes on its own loop. `try_acquire`, `release` and `available` may be called from any
/// loop's thread; `acquire` is awaited on a loop. The contexts of waiting tasks may be
/// canceled from any thread.
///
/// Example (at most 8 uploads at once):
///
///     if (auto r = co_await uploads.acquire(); !r) {
///         co_return r.error();
///     }
///     auto r = co_await upload(file);
///     uploads.release();
class semaphore {
public:
    /// Makes a semaphore with `initial` permits available.
    explicit semaphore(std::size_t initial = 0) noexcept : count_(initial) {}
    semaphore(const semaphore&) = delete;
    semaphore& operator=(const semaphore&) = delete;
    ~semaphore() { assert(waiters_.empty() && "semaphore destroyed with waiters"); }

    /// Returns an awaitable that takes `n` permits: `co_await s.acquire(n)` gives
    /// `result<void>`.
    ///
    /// Takes them at once if `n` are available and nobody waits; otherwise waits in line.
    /// `n` may be 0 (it still waits for the tasks ahead of it).
    ///
    /// Errors: `errc::canceled` or `errc::deadline_exceeded` when the task's context is done
    /// before the permits are granted; none are then held.
    ///
    /// Cancellation: cancel-safe; see the class.
    detail::acquire_awaiter acquire(std::size_t n = 1) noexcept { return {*this, n}; }

    /// Takes `n` permits if they are available and nobody waits; returns whether it did.
    bool try_acquire(std::size_t n = 1) noexcept {
        std::lock_guard lk(lock_);
        return try_acquire_locked(n);
    }

    /// Returns `n` permits, then grants the waiters at the head of the queue whose requests
    /// the permits cover, in order.
    void release(std::size_t n = 1) noexcept;

    /// Returns how many permits are available now.
    std::size_t available() const noexcept {
        std::lock_guard lk(lock_);
        return count_;
    }

private:
    friend class detail::acquire_awaiter;
    bool try_acquire_locked(std::size_t n) noexcept {
        if (!waiters_.empty() || count_ < n) {
            return false;
        }
        count_ -= n;
        return true;
    }
    void grant_waiters() noexcept; // lock_ held
    static void after_cancel(void* self) noexcept;
    mutable detail::spin_lock lock_; // guards count_ and waiters_
    std::size_t count_;
    detail::wait_list waiters_;
};

} // namespace tether
