#include "runtime/detail/wait_list.hpp"

#include "runtime/detail/loop_impl.hpp"
#include "runtime/task.hpp"

#include <cassert>
#include <mutex>

namespace tether::detail {

bool list_waiter::enqueue(wait_list& l, const context& c, std::coroutine_handle<> h) noexcept {
    w.lp = current_loop();
    assert(w.lp != nullptr && "tether sync primitives must be awaited on a running loop");
    w.handle = h;
    w.on_cancel = &canceled;
    w.data = this;
    list = &l;
    if (!w.arm(c)) {
        return false;
    }
    l.push_back(this);
    return true;
}

void list_waiter::grant_remote() noexcept {
    w.lp->impl().post_call([](void* p) noexcept { static_cast<waiter*>(p)->finish(no_error); }, &w);
}

void list_waiter::canceled(waiter* w) noexcept {
    auto* self = static_cast<list_waiter*>(w->data);
    // Runs on the waiter's loop while it is unfinished. Still linked: it leaves and fails.
    // Unlinked: a grant took it first, and its finish is on the way to this loop.
    if (self->lock != nullptr) {
        std::lock_guard lk(*self->lock);
        if (!self->linked) {
            return;
        }
        self->list->remove(self);
    } else if (self->linked) {
        self->list->remove(self);
    }
    void (*after)(void*) noexcept = self->after_cancel;
    void* owner = self->owner;
    w->finish(w->cancel_error()); // queues the coroutine; self stays alive until it runs
    if (after) {
        after(owner);
    }
}

} // namespace tether::detail
