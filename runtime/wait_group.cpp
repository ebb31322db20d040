#include "runtime/wait_group.hpp"

namespace tether {

void wait_group::add(std::ptrdiff_t delta) noexcept {
    if (delta < 0) {
        assert(static_cast<std::size_t>(-delta) <= count_ && "wait_group counter below zero");
        count_ -= static_cast<std::size_t>(-delta);
    } else {
        count_ += static_cast<std::size_t>(delta);
    }
    if (count_ == 0) {
        while (detail::list_hook* h = waiters_.pop_front()) {
            detail::list_waiter::from(h)->grant();
        }
    }
}

} // namespace tether
