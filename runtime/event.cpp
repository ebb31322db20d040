#include "runtime/event.hpp"

namespace tether {

void event::set() noexcept {
    set_ = true;
    while (detail::list_hook* h = waiters_.pop_front()) {
        detail::list_waiter::from(h)->grant();
    }
}

} // namespace tether
