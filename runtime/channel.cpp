#include "runtime/channel.hpp"

#include "runtime/detail/loop_impl.hpp"
#include "runtime/select.hpp"

#include <cassert>
#include <mutex>
#include <string>

// Channels across loops (issue 6). The buffer, both queues and `closed_` are guarded by the
// channel's spin lock. Whoever unlinks a queued operation under that lock owns it: a
// counterpart that pops it completes it (after unlocking), and the cancel path of a lone
// operation (`unpark`, on its own loop) does nothing to one that is no longer queued, since
// its completion is on the way. A completion from another loop's thread is posted to the
// waiter's loop. A select case is claimed through `select_core::try_win` (a compare-and-swap),
// and the select takes its losing cases off their queues when it completes, each under its
// channel's lock, as Go's selectgo does lazily.

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

void unpark(waiter* w) noexcept {
    auto* n = static_cast<chan_node*>(w->data);
    {
        std::lock_guard lk(*n->lock);
        if (!n->linked) {
            return;
        }
        n->queue->remove(n);
    }
    w->finish(w->cancel_error());
}

bool has_claimable(const wait_list& q, const select_core* self) noexcept {
    for (const list_hook* h = q.front(); h != nullptr; h = h->next) {
        const auto* n = static_cast<const chan_node*>(h);
        if (n->sel == nullptr ||
            (n->sel != self &&
             n->sel->winner.load(std::memory_order_acquire) == select_core::none)) {
            return true;
        }
    }
    return false;
}

bool chan_node::claim_case() noexcept {
    return sel->try_win(index);
}

void chan_node::complete(std::error_code e) noexcept {
    if (sel != nullptr) {
        sel->complete_any(e);
    } else if (single->lp == current_loop()) {
        single->finish(e);
    } else {
        outcome = e;
        single->lp->impl().post_call(
            [](void* p) noexcept {
                auto* n = static_cast<chan_node*>(p);
                n->single->finish(n->outcome);
            },
            this);
    }
}

} // namespace detail

} // namespace tether
