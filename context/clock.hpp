#pragma once
// clock: where contexts read the time and schedule their deadlines.
//   clock          the interface: now(), schedule(), unschedule()
//   real_clock()   std::chrono::steady_clock with a process-wide timer thread
//   executor       somewhere to post a function (the loop that runs a task)

#include <chrono>
#include <cstddef>
#include <functional>

namespace tether {

/// The time type of every clock in tether: a point on `std::chrono::steady_clock`.
using time_point = std::chrono::steady_clock::time_point;
/// The duration type of every clock in tether.
using duration = std::chrono::steady_clock::duration;

namespace detail {

/// An intrusive timer: a deadline and the function to call when it passes.
///
/// Lifetime: the node must stay alive until it fires or `unschedule()` returns true.
struct timer_node {
    time_point when{};
    void (*fire)(timer_node*) noexcept = nullptr;
    void* data = nullptr; // what fire works on
    std::size_t heap_index = static_cast<std::size_t>(-1);
};

} // namespace detail

/// Tells the time and fires timers: the source of every deadline in a context tree.
///
/// A root context names its clock (`background()` uses `real_clock()`; a loop's
/// `background()` uses the loop's clock); derived contexts inherit it. A test hands a
/// `manual_clock` to the root and moves time by hand.
///
/// Thread safety: every member may be called from any thread.
class clock {
public:
    virtual ~clock() = default;

    /// Returns the current time on this clock.
    virtual time_point now() const noexcept = 0;

    /// Arranges for `t.fire(&t)` to be called once the clock reaches `t.when`.
    ///
    /// A time already reached fires soon, never inside this call.
    virtual void schedule(detail::timer_node& t) = 0;

    /// Removes `t` if it has not fired; returns true if it was removed.
    ///
    /// Returns false when `t` was never scheduled, already fired, or is firing now on
    /// another thread (then its `fire` may still be running).
    virtual bool unschedule(detail::timer_node& t) noexcept = 0;
};

/// Returns the process-wide clock on `std::chrono::steady_clock`.
///
/// Its timers fire on one background thread, started on first use; functions posted to
/// `real_executor()` run there too.
clock& real_clock() noexcept;

/// Runs posted functions somewhere else: on a loop's thread, or on a background thread.
///
/// Thread safety: `post` may be called from any thread.
class executor {
public:
    virtual ~executor() = default;
    /// Queues `fn` to run later, never inside this call.
    virtual void post(std::function<void()> fn) = 0;
};

/// Returns the executor of the real clock's background thread.
executor& real_executor() noexcept;

/// Returns the executor that runs the calling thread's tasks (the running loop), or null.
executor* current_executor() noexcept;

namespace detail {
/// Installs `ex` as the calling thread's executor and returns the previous one.
executor* exchange_current_executor(executor* ex) noexcept;
} // namespace detail

} // namespace tether
