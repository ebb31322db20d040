#include "runtime/select.hpp"

#include "runtime/detail/loop_impl.hpp"
#include "runtime/loop.hpp"

#include <cassert>
#include <cstdint>
#include <mutex>
#include <utility>

namespace tether::detail {

namespace {

// xorshift64: a select only needs cases not to starve, not good randomness.
std::uint32_t next_random() noexcept {
    // Seeded from the variable's own address: each thread gets its own sequence.
    thread_local std::uint64_t s = 0x9e3779b97f4a7c15ULL ^ reinterpret_cast<std::uintptr_t>(&s);
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    return static_cast<std::uint32_t>(s >> 32);
}

} // namespace

void random_order(std::uint8_t* order, std::size_t n) noexcept {
    for (std::size_t i = 0; i < n; ++i) {
        order[i] = static_cast<std::uint8_t>(i);
    }
    for (std::size_t i = n; i > 1; --i) { // Fisher-Yates
        std::size_t j = next_random() % i;
        std::swap(order[i - 1], order[j]);
    }
}

int select_core::ready_done() const noexcept {
    for (std::size_t i = 0; i < n_dones; ++i) {
        if (dones[i]->sig.ready()) {
            return dones[i]->index;
        }
    }
    return none;
}

void select_core::release() noexcept {
    for (std::size_t i = 0; i < n_dones; ++i) {
        dones[i]->w.finish_quietly({}); // disarms (or waits for a callback on another thread)
    }
    for (std::size_t i = 0; i < n_chans; ++i) {
        // Under the channel's lock: a counterpart that popped this case and lost the claim
        // is done with it once we hold the lock.
        std::lock_guard lk(*chans[i]->lock);
        if (chans[i]->linked) {
            chans[i]->queue->remove(chans[i]);
        }
    }
}

void select_core::complete(std::error_code e) noexcept {
    assert(winner != none);
    if (winner == canceled) {
        own.finish_quietly(e);
    } else {
        case_error = e;
        own.finish_quietly({});
    }
    release();
    own.lp->schedule(own.handle);
}

void select_core::complete_any(std::error_code e) noexcept {
    if (own.lp == current_loop()) {
        complete(e);
        return;
    }
    pending = e;
    own.lp->impl().post_call(
        [](void* p) noexcept {
            auto* self = static_cast<select_core*>(p);
            self->complete(self->pending);
        },
        this);
}

void select_core::own_canceled(waiter* w) noexcept {
    auto* self = static_cast<select_core*>(w->data);
    // A done case that is ready wins over the context's error: when the task's own context
    // (or an ancestor) is the signal, the two registrations fire in either order.
    int d = self->ready_done();
    if (self->try_win(d != none ? d : canceled)) {
        self->complete(d != none ? std::error_code{} : w->cancel_error());
    }
}

void select_core::done_fired(waiter* w) noexcept {
    auto* d = static_cast<done_case*>(w->data);
    if (d->core->try_win(d->index)) {
        d->core->complete({});
    }
}

bool select_core::park(const context& c, std::coroutine_handle<> h) noexcept {
    loop* l = current_loop();
    assert(l != nullptr && "select must be awaited on a running loop");
    own.lp = l;
    own.handle = h;
    own.data = this;
    own.on_cancel = &own_canceled;
    if (!own.arm(c)) {
        // Done since the poll (canceled on another thread).
        int d = ready_done();
        winner = d != none ? d : canceled;
        return false;
    }
    for (std::size_t i = 0; i < n_dones; ++i) {
        done_case* d = dones[i];
        d->core = this;
        d->w.lp = l;
        d->w.handle = h;
        d->w.data = d;
        d->w.on_cancel = &done_fired;
        if (!d->w.arm_on(d->sig.state())) {
            winner = d->index;
            own.finish_quietly({});
            release();
            return false;
        }
    }
    // Last: once queued, a case can be taken; everything it needs is armed. Each case is
    // queued under its channel's lock only if the channel can't serve it now: a counterpart
    // on another loop may have come since the poll (a value buffered, a sender queued), and
    // a case queued behind it would wait for nothing.
    for (std::size_t i = 0; i < n_chans; ++i) {
        chan_node* node = chans[i];
        {
            std::lock_guard lk(*node->lock);
            if (!node->ready_now(*node)) {
                node->queue->push_back(node);
                continue;
            }
        }
        if (!try_win(retry)) {
            // A case queued already was taken (or a done case or the context fired): the
            // winner completes the select, and its release takes back what we queued.
            return true;
        }
        // Nobody can win now: take everything back, and let the awaiter poll again.
        own.finish_quietly({});
        release();
        return false;
    }
    return true;
}

} // namespace tether::detail
