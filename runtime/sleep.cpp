#include "runtime/sleep.hpp"

#include "runtime/detail/loop_impl.hpp"

namespace tether::detail {

bool sleep_awaiter::suspend(const context& c, std::coroutine_handle<> h) noexcept {
    loop* l = current_loop();
    assert(l != nullptr && "sleep_for must be awaited on a running loop");
    if (std::error_code e = c.err()) {
        w_.error = e;
        return false;
    }
    loop_impl& li = l->impl();
    time_point when = relative_ ? li.now() + duration(ticks_) : time_point(duration(ticks_));
    if (when <= li.now()) {
        return false;
    }
    w_.lp = l;
    w_.handle = h;
    w_.on_cancel = &cancel;
    w_.data = this;
    timer_.when = when;
    timer_.fire = &fire;
    timer_.data = this;
    w_.ext = &ext_; // arm() arms ext_.reg if it needs a registration of its own
    if (!w_.arm(c)) {
        return false;
    }
    li.add_timer(timer_);
    return true;
}

void sleep_awaiter::fire(timer_node* t) noexcept {
    static_cast<sleep_awaiter*>(t->data)->w_.finish({});
}

void sleep_awaiter::cancel(waiter* w) noexcept {
    auto* self = static_cast<sleep_awaiter*>(w->data);
    self->w_.lp->impl().remove_timer(self->timer_);
    self->w_.finish(self->w_.cancel_error());
}

} // namespace tether::detail
