#include "runtime/mutex.hpp"

namespace tether {

void mutex::unlock() noexcept {
    assert(locked_ && "mutex::unlock of a mutex that is not locked");
    if (detail::list_hook* h = waiters_.front()) {
        // FIFO hand-off: the lock stays held and passes to the oldest waiter. It is granted
        // here, on the loop's thread, so no cancel can take it from the waiter afterwards.
        detail::list_waiter::from(h)->grant();
        return;
    }
    locked_ = false;
}

namespace detail {

bool lock_awaiter::suspend(const context& c, std::coroutine_handle<> h) noexcept {
    if (std::error_code e = c.err()) {
        lw_.w.error = e;
        return false;
    }
    if (!m_->locked_) {
        m_->locked_ = true;
        return false;
    }
    return lw_.enqueue(m_->waiters_, c, h);
}

} // namespace detail

} // namespace tether
