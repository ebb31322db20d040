#pragma once

#include "context/clock.hpp"

#include <cstddef>
#include <vector>

namespace tether::detail {

/// A binary min-heap of intrusive timers; O(log n) push, remove and pop.
///
/// Not synchronized: the owner locks or confines it to one thread.
class timer_heap {
public:
    static constexpr std::size_t npos = static_cast<std::size_t>(-1);

    /// Inserts `t`; returns true if it is now the earliest.
    bool push(timer_node* t);
    /// Removes `t` if it is in the heap; returns true if it was.
    bool remove(timer_node* t) noexcept;
    /// Removes and returns the earliest timer whose time is <= now, or null.
    timer_node* pop_due(time_point now) noexcept;
    /// Returns the earliest time, or time_point::max() when empty.
    time_point next() const noexcept { return v_.empty() ? time_point::max() : v_[0]->when; }
    std::size_t size() const noexcept { return v_.size(); }
    bool empty() const noexcept { return v_.empty(); }

private:
    void sift_up(std::size_t i) noexcept;
    void sift_down(std::size_t i) noexcept;
    void place(std::size_t i, timer_node* t) noexcept {
        v_[i] = t;
        t->heap_index = i;
    }
    std::vector<timer_node*> v_;
};

} // namespace tether::detail
