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
    /// Removes every timer for which `pred(t)` is true, appending them to `out`; O(n).
    template <class Pred>
    void take_if(Pred pred, std::vector<timer_node*>& out) {
        std::size_t kept = 0;
        for (timer_node* t : v_) {
            if (pred(t)) {
                t->heap_index = npos;
                out.push_back(t);
            } else {
                v_[kept++] = t;
            }
        }
        v_.resize(kept);
        for (std::size_t i = 0; i < kept; ++i) {
            v_[i]->heap_index = i;
        }
        for (std::size_t i = kept / 2; i-- > 0;) {
            sift_down(i);
        }
    }
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
