#pragma once

#include <atomic>
#include <thread>

namespace tether::detail {

/// A test-and-test-and-set lock for the short critical sections of a context node.
///
/// Critical sections are a few pointer writes, so contention is brief; after a few
/// spins the waiter yields so that a preempted holder on a 2-core machine can finish.
class spin_lock {
public:
    void lock() noexcept {
        if (!locked_.exchange(true, std::memory_order_acquire)) [[likely]] {
            return;
        }
        lock_contended();
    }
    void unlock() noexcept { locked_.store(false, std::memory_order_release); }

private:
    // Out of line, so that a caller's fast path saves no registers for the spin loop.
    [[gnu::noinline]] void lock_contended() noexcept {
        for (int spins = 0;; ++spins) {
            if (!locked_.exchange(true, std::memory_order_acquire)) {
                return;
            }
            while (locked_.load(std::memory_order_relaxed)) {
                if (++spins > 32) {
                    std::this_thread::yield();
                }
            }
        }
    }

    std::atomic<bool> locked_{false};
};

} // namespace tether::detail
