#include "runtime/semaphore.hpp"

#include <mutex>

namespace tether {

void semaphore::release(std::size_t n) noexcept {
    std::lock_guard lk(lock_);
    count_ += n;
    grant_waiters();
}

void semaphore::grant_waiters() noexcept {
    // Strict FIFO: stop at the first waiter the permits don't cover, even if a later one
    // asks for fewer (Go's Weighted does the same, so large requests don't starve).
    while (detail::list_hook* h = waiters_.front()) {
        auto* w = static_cast<detail::permit_waiter*>(detail::list_waiter::from(h));
        if (w->n > count_) {
            return;
        }
        count_ -= w->n;
        w->grant();
    }
}

void semaphore::after_cancel(void* self) noexcept {
    // The waiter that left may have been the head holding back smaller requests.
    auto* s = static_cast<semaphore*>(self);
    std::lock_guard lk(s->lock_);
    s->grant_waiters();
}

namespace detail {

bool acquire_awaiter::suspend(const context& c, std::coroutine_handle<> h) noexcept {
    if (std::error_code e = c.err()) {
        pw_.w.error = e;
        return false;
    }
    std::lock_guard lk(s_->lock_);
    if (s_->try_acquire_locked(n_)) {
        return false;
    }
    pw_.n = n_;
    pw_.after_cancel = &semaphore::after_cancel;
    pw_.owner = s_;
    pw_.lock = &s_->lock_;
    return pw_.enqueue(s_->waiters_, c, h);
}

} // namespace detail

} // namespace tether
