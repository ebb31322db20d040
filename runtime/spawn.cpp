#include "runtime/spawn.hpp"

#include "runtime/detail/loop_impl.hpp"
#include "runtime/loop.hpp"

#include <cassert>

namespace tether::detail {

namespace {

// The end of a spawned task, on its home loop: returns the joiner (or null).
std::coroutine_handle<> finish_at_home(promise_base& p) noexcept {
    spawn_base* s = p.spawned();
    s->done = true;
    // The spawn's cancel: cancels the context and unlinks it from its parent, then drops the
    // cancel's reference (never the node's last: the spawn's context holds one).
    cancel_handle{s}.reset();
    std::coroutine_handle<> next = p.continuation_;
    // May destroy this frame: it is suspended at its final awaiter, and unused below.
    s->release();
    return next;
}

} // namespace

std::coroutine_handle<> promise_base::spawn_finished(promise_base& p) noexcept {
    spawn_base* s = p.spawned();
    // On the thread the chain was made on (switch_to ends it before moving).
    await_chain::end(s);
    if (s->home != nullptr && s->home != current_loop()) {
        // Finished on another loop (spawn_on, switch_to): the handle and the joiner are at
        // home, so the end travels there and runs on its thread.
        s->home->impl().post_call(
            [](void* a) noexcept {
                auto& pr = *static_cast<promise_base*>(a);
                loop* home = pr.spawned()->home;
                if (std::coroutine_handle<> next = finish_at_home(pr)) {
                    home->schedule(next);
                }
            },
            &p);
        return std::noop_coroutine();
    }
    // A joiner waits as our continuation: resume it now, by symmetric transfer (it disarms its
    // own registration), not at the loop's next turn.
    std::coroutine_handle<> next = finish_at_home(p);
    return next ? next : std::noop_coroutine();
}

// A node block is 16k + 8 bytes (context.cpp): 168 fills a 176-byte malloc chunk. A field
// more would cost every spawned task 16 bytes.
static_assert(sizeof(spawn_base) <= 168);

spawn_base* spawn_base::make(const context& parent, loop* home, std::coroutine_handle<> frame) {
    auto* s = new spawn_base; // node::operator new: the context node allocator
    init_cancel_child(s, parent, &destroy_node<spawn_base>);
    s->ctx = context::adopt(s); // the first of the two references init_cancel_child counted
    s->home = home;
    s->frame = frame;
    return s;
}

void spawn_base::release() noexcept {
    if (--spawn_refs == 0) {
        frame.destroy();
        // The spawn's context reference: the node's last unless the task kept a copy.
        context last = std::move(ctx);
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
