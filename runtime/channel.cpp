#include "runtime/channel.hpp"

#include "runtime/select.hpp"

#include <cassert>
#include <string>

// Cross-loop channels (issue 6). Today a channel and everything that waits on it belong to one
// loop, so the queues need no lock and a hand-off pops, fills and finishes a waiter in one step
// that no cancel can interleave with. To share a channel between loops:
// - guard the buffer, the queues and `closed_` with a spin lock (context/detail/spin_lock.hpp);
// - make `chan_node::claim` the only way to take an operation: for a lone operation, whoever
//   unlinks it under the channel's lock owns it (its own on_cancel included); for a select,
//   `select_core::try_win` becomes a compare-and-swap on `winner`;
// - resume a waiter from another loop with `waiter.lp->post(...)` instead of `finish`, which
//   queues on the caller's loop (waiter::finish is loop-thread only);
// - let a select's losing cases leave their queues lazily, as Go's selectgo does: the winner
//   can't lock every other channel without an order between locks, so `pop_claimed` already
//   skips cases whose select has a winner, and the select unlinks the rest when it resumes.

namespace tether {

namespace {

class channel_category_impl final : public std::error_category {
public:
    const char* name() const noexcept override { return "tether.channel"; }
    std::string message(int c) const override {
        switch (static_cast<channel_errc>(c)) {
        case channel_errc::closed:
            return "channel closed";
        case channel_errc::full:
            return "channel full";
        case channel_errc::empty:
            return "channel empty";
        }
        return "unknown channel error";
    }
};

} // namespace

const std::error_category& channel_category() noexcept {
    static const channel_category_impl c;
    return c;
}

namespace detail {

namespace {

// The on_cancel of a parked lone operation: it is still queued (a counterpart pops and
// finishes in one step on this thread), so leave the queue and fail.
void unpark(waiter* w) noexcept {
    auto* n = static_cast<chan_node*>(w->data);
    if (n->linked) {
        n->queue->remove(n);
    }
    w->finish(w->cancel_error());
}

} // namespace

bool chan_node::claim() noexcept {
    return sel == nullptr || sel->try_win(index);
}

void chan_node::complete(std::error_code e) noexcept {
    if (sel != nullptr) {
        sel->complete(e);
    } else {
        single->finish(e);
    }
}

bool park(chan_node& n, waiter& w, wait_list& q, const context& c,
          std::coroutine_handle<> h) noexcept {
    w.lp = current_loop();
    assert(w.lp != nullptr && "channel operations must be awaited on a running loop");
    w.handle = h;
    w.on_cancel = &unpark;
    w.data = &n;
    n.single = &w;
    n.queue = &q;
    if (!w.arm(c)) {
        return false; // done since the check, on another thread
    }
    q.push_back(&n);
    return true;
}

} // namespace detail

} // namespace tether
