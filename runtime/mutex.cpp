#include "runtime/mutex.hpp"

#include <mutex>

namespace tether {

void mutex::unlock() noexcept {
    std::lock_guard lk(lock_);
    assert(locked_ && "mutex::unlock of a mutex that is not locked");
    if (detail::list_hook* h = waiters_.front()) {
        // FIFO hand-off: the lock stays held and passes to the oldest waiter. Unlinking it
        // under lock_ makes it the waiter's: a cancel racing on its loop finds it gone.
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
    std::lock_guard lk(m_->lock_);
    if (!m_->locked_) {
        m_->locked_ = true;
        return false;
    }
    lw_.lock = &m_->lock_;
    return lw_.enqueue(m_->waiters_, c, h);
}

} // namespace detail

} // namespace tether
