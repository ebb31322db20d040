#include "runtime/spawn.hpp"

#include "runtime/detail/loop_impl.hpp"
#include "runtime/loop.hpp"

#include <cassert>

namespace tether::detail {

namespace {

// The end of a spawned task, on its home loop: returns the joiner (or null).
std::coroutine_handle<> finish_at_home(void* frame, promise_base& p) noexcept {
    spawn_base* s = p.spawned();
    s->done = true;
    s->cancel.reset(); // releases the context's registration on its parent
    std::coroutine_handle<> next = p.continuation_;
    // May destroy this frame: it is suspended at its final awaiter, and unused below.
    s->release(std::coroutine_handle<>::from_address(frame));
    return next;
}

} // namespace

std::coroutine_handle<> promise_base::spawn_finished(void* frame, promise_base& p) noexcept {
    spawn_base* s = p.spawned();
    // On the thread the chain was made on (switch_to ends it before moving).
    await_chain::end(s);
    if (s->home != nullptr && s->home != current_loop()) {
        // Finished on another loop (spawn_on, switch_to): the handle and the joiner are at
        // home, so the end travels there and runs on its thread.
        s->finished_frame = frame;
        s->home->impl().post_call(
            [](void* a) noexcept {
                auto& pr = *static_cast<promise_base*>(a);
                loop* home = pr.spawned()->home;
                if (std::coroutine_handle<> next =
                        finish_at_home(pr.spawned()->finished_frame, pr)) {
                    home->schedule(next);
                }
            },
            &p);
        return std::noop_coroutine();
    }
    // A joiner waits as our continuation: resume it now, by symmetric transfer (it disarms its
    // own registration), not at the loop's next turn.
    std::coroutine_handle<> next = finish_at_home(frame, p);
    return next ? next : std::noop_coroutine();
}

void spawn_base::release(std::coroutine_handle<> frame) noexcept {
    if (--refs == 0) {
        frame.destroy();
        delete this;
    }
}

void spawn_base::start_on(loop& target, std::coroutine_handle<> frame) {
    target.impl().post_resume(frame);
}

void spawn_base::start(std::coroutine_handle<> frame) {
    loop* lp = current_loop();
    assert(lp != nullptr && "spawn needs a running loop");
    lp->schedule(frame);
}

} // namespace tether::detail
