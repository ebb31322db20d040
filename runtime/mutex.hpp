#pragma once
// mutex: a lock for tasks that waits without blocking the loop; FIFO and cancelable.
//   mutex          lock() / try_lock() / unlock()
//   mutex::guard   owns a held lock and unlocks it when destroyed

#include "context/context.hpp"
#include "runtime/detail/wait_list.hpp"
#include "runtime/result.hpp"
#include "runtime/task.hpp"

#include <cassert>
#include <coroutine>
#include <mutex>
#include <optional>
#include <utility>

namespace tether {

class mutex;

namespace detail {

/// Awaits `mutex::lock()`. Movable until awaited.
class lock_awaiter {
public:
    explicit lock_awaiter(mutex& m) noexcept : m_(&m) {}
    lock_awaiter(lock_awaiter&& o) noexcept : m_(o.m_) {}

    bool await_ready() const noexcept { return false; }
    template <class P>
    bool await_suspend(std::coroutine_handle<P> h) noexcept {
        lw_.w.owner = owner_of(h);
        return suspend(context_of(h), h);
    }
    inline auto await_resume() noexcept;

private:
    bool suspend(const context& c, std::coroutine_handle<> h) noexcept;
    mutex* m_;
    list_waiter lw_;
};

} // namespace detail

/// A mutual-exclusion lock for tasks, on one loop or several: a task that finds it held
/// suspends (its loop runs others) instead of blocking the thread.
///
/// Waiters get the lock first come, first served: `unlock()` hands it straight to the
/// oldest waiter, and a task arriving meanwhile queues behind it rather than barging in.
///
/// Cancellation: `co_await m.lock()` fails at once with the context's error under a context
/// that is already done, even if the mutex is free (cancellation is sticky). A waiter whose
/// context is done leaves the queue and resumes with that error, holding nothing, and the
/// lock goes to the next waiter as usual. A waiter that was handed the lock before the
/// cancel took effect resumes with the lock: it is never lost.
///
/// Lifetime: the mutex must outlive its waiters and its guards.
///
/// Thread safety: tasks on different loops may share a mutex: its state is guarded by a
/// spin lock held for a few instructions, and a waiter handed the lock by a task on another
/// loop resumes on its own loop. `try_lock` and `unlock` may be called from any loop's
/// thread; `lock` is awaited on a loop. The contexts of waiting tasks may be canceled from
/// any thread.
///
/// Example:
///
///     result<mutex::guard> g = co_await m.lock();
///     if (!g) {
///         co_return g.error();
///     }
///     balance += amount; // unlocked when g goes out of scope
class mutex {
public:
    /// Owns a held lock: unlocks it when destroyed or on `unlock()` (std::unique_lock's
    /// role). Move-only; a default-constructed or moved-from guard owns nothing.
    class [[nodiscard]] guard {
    public:
        guard() noexcept = default;
        /// Adopts a lock the caller already holds.
        guard(mutex& m, std::adopt_lock_t) noexcept : m_(&m) {}
        guard(guard&& o) noexcept : m_(std::exchange(o.m_, nullptr)) {}
        guard& operator=(guard&& o) noexcept {
            if (this != &o) {
                unlock();
                m_ = std::exchange(o.m_, nullptr);
            }
            return *this;
        }
        ~guard() { unlock(); }

        /// Unlocks the mutex now; does nothing if the guard owns no lock.
        void unlock() noexcept {
            if (mutex* m = std::exchange(m_, nullptr)) {
                m->unlock();
            }
        }
        /// Returns the mutex and gives up ownership without unlocking.
        mutex* release() noexcept { return std::exchange(m_, nullptr); }
        /// Returns true if the guard holds a lock.
        bool owns_lock() const noexcept { return m_ != nullptr; }
        explicit operator bool() const noexcept { return owns_lock(); }

    private:
        mutex* m_ = nullptr;
    };

    mutex() noexcept = default;
    mutex(const mutex&) = delete;
    mutex& operator=(const mutex&) = delete;
    ~mutex() { assert(waiters_.empty() && "mutex destroyed with waiters"); }

    /// Returns an awaitable that locks the mutex: `co_await m.lock()` gives
    /// `result<mutex::guard>`.
    ///
    /// Takes the lock at once if it is free and nobody waits; otherwise waits in line.
    ///
    /// Errors: `errc::canceled` or `errc::deadline_exceeded` when the task's context is done
    /// before the lock is granted; the lock is then not held.
    ///
    /// Cancellation: cancel-safe; see the class.
    detail::lock_awaiter lock() noexcept { return detail::lock_awaiter{*this}; }

    /// Takes the lock if it is free and nobody waits; returns its guard, or nullopt.
    std::optional<guard> try_lock() noexcept {
        std::lock_guard lk(lock_);
        if (locked_) {
            return std::nullopt;
        }
        locked_ = true;
        return guard{*this, std::adopt_lock};
    }

    /// Releases the lock, handing it to the oldest waiter if there is one.
    ///
    /// The caller must hold the lock (calling it otherwise is a bug: it asserts). Prefer a
    /// `guard`, which calls it.
    void unlock() noexcept;

    /// Returns true while the lock is held (or granted to a waiter that has not resumed).
    bool is_locked() const noexcept {
        std::lock_guard lk(lock_);
        return locked_;
    }

private:
    friend class detail::lock_awaiter;
    mutable detail::spin_lock lock_; // guards locked_ and waiters_
    // Invariant: waiters_ is empty unless locked_: a free mutex has no queue.
    bool locked_ = false;
    detail::wait_list waiters_;
};

inline auto detail::lock_awaiter::await_resume() noexcept {
    if (lw_.w.error) {
        return result<mutex::guard>(lw_.w.error);
    }
    return result<mutex::guard>(mutex::guard{*m_, std::adopt_lock});
}

} // namespace tether
