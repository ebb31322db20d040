#include "runtime/spawn.hpp"

#include "runtime/loop.hpp"

#include <cassert>

namespace tether::detail {

std::coroutine_handle<> promise_base::spawn_finished(void* frame, promise_base& p) noexcept {
    spawn_base* s = p.spawn_;
    s->done = true;
    s->cancel.reset(); // releases the context's registration on its parent
    // A joiner waits as our continuation: resume it now, by symmetric transfer (it disarms its
    // own registration), not at the loop's next turn.
    std::coroutine_handle<> next = p.continuation_ ? p.continuation_ : std::noop_coroutine();
    // May destroy this frame: it is suspended at its final awaiter, and unused below.
    s->release(std::coroutine_handle<>::from_address(frame));
    return next;
}

void spawn_base::release(std::coroutine_handle<> frame) noexcept {
    if (--refs == 0) {
        frame.destroy();
        delete this;
    }
}

void spawn_base::start(std::coroutine_handle<> frame) {
    loop* lp = current_loop();
    assert(lp != nullptr && "spawn needs a running loop");
    lp->schedule(frame);
}

} // namespace tether::detail
