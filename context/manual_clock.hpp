#pragma once
// manual_clock: a clock that moves only when told to, for tests.

#include "context/clock.hpp"
#include "context/detail/timer_heap.hpp"

#include <atomic>
#include <cstdint>
#include <functional>
#include <mutex>
#include <vector>

namespace tether {

/// A clock whose time moves only through `advance()` and `set()`; timers due by then fire
/// inside that call, on the calling thread, in deadline order.
///
/// It starts at an arbitrary fixed point (`start()`); never at the real time.
///
/// Thread safety: every member may be called from any thread; observers are called on the
/// thread that moved the clock.
class manual_clock final : public clock {
public:
    manual_clock() noexcept;
    ~manual_clock() override;

    /// Returns the time the clock starts at.
    static time_point start() noexcept;

    time_point now() const noexcept override;
    void schedule(detail::timer_node& t) override;
    bool unschedule(detail::timer_node& t) noexcept override;

    /// Moves the clock forward by `d` (a negative `d` is ignored) and fires what is due.
    void advance(duration d);
    /// Moves the clock to `t` if that is later, and fires what is due.
    void set(time_point t);

    /// Returns how many timers are scheduled.
    std::size_t pending() const;
    /// Returns the earliest scheduled timer's time, or `time_point::max()`.
    time_point next_expiry() const;

    /// Calls `fn` after every move of the clock (a loop uses it to run its own timers).
    /// Returns an id for `unobserve`.
    std::uint64_t observe(std::function<void()> fn);
    /// Removes an observer.
    void unobserve(std::uint64_t id);

private:
    // Fires the timers due at now(), then calls the observers; releases `lk`.
    void fire_due(std::unique_lock<std::mutex>& lk);

    std::atomic<time_point::rep> now_;
    mutable std::mutex mu_;
    detail::timer_heap heap_;
    std::vector<std::pair<std::uint64_t, std::function<void()>>> observers_;
    std::uint64_t next_id_ = 1;
};

} // namespace tether
