#include "runtime/task_group.hpp"

#include "runtime/loop.hpp"

#include <cassert>

namespace tether {

namespace detail {

// ---- group_state -------------------------------------------------------------------------

group_state::group_state(const context& parent) {
    auto [c, h] = with_cancel_cause(parent);
    ctx = std::move(c);
    cancel = std::move(h);
}

void group_state::bind_loop() noexcept {
    loop* l = current_loop();
    assert(l != nullptr && "task_group children need a running loop");
    assert((lp == nullptr || lp == l) && "a task_group's children run on one loop");
    lp = l;
}

void group_state::start(child_driver d) {
    d.bind(this, 0, &ctx);
    ++running;
    ++refs;
    lp->schedule(d.release());
}

void group_state::fail(std::error_code e) noexcept {
    if (!failed) {
        failed = true;
        error = e;
    }
    cancel(e);
}

void group_state::on_exception(std::size_t, std::exception_ptr e) noexcept {
    if (!failed) {
        failed = true;
        exc = std::move(e);
    }
    cancel();
}

void group_state::admit() {
    while (head != nullptr && has_room()) {
        group_spawn_awaiter* s = head;
        unlink(s);
        start(std::move(s->driver_));
        s->w_.finish({});
    }
}

void group_state::enqueue(group_spawn_awaiter* s) noexcept {
    s->queued_ = true;
    s->prev_ = tail;
    s->next_ = nullptr;
    if (tail != nullptr) {
        tail->next_ = s;
    } else {
        head = s;
    }
    tail = s;
}

void group_state::unlink(group_spawn_awaiter* s) noexcept {
    if (!s->queued_) {
        return;
    }
    s->queued_ = false;
    if (s->prev_ != nullptr) {
        s->prev_->next_ = s->next_;
    } else {
        head = s->next_;
    }
    if (s->next_ != nullptr) {
        s->next_->prev_ = s->prev_;
    } else {
        tail = s->prev_;
    }
    s->prev_ = s->next_ = nullptr;
}

void group_state::abandon() noexcept {
    if (running > 0) {
        cancel();
    }
    // Nobody will hand these a slot any more.
    while (group_spawn_awaiter* s = head) {
        unlink(s);
        s->w_.finish(make_error_code(errc::canceled));
    }
    release();
}

void group_state::release() noexcept {
    if (--refs == 0) {
        delete this;
    }
}

std::coroutine_handle<> group_state::on_child_done() noexcept {
    --running;
    // The freed slot goes to the oldest blocked spawner. (admit() throws only if the loop's
    // ready queue can't grow; with nobody to report that to, noexcept ends the program.)
    admit();
    std::coroutine_handle<> next;
    if (running == 0 && waiting != nullptr) {
        waiter* w = std::exchange(waiting, nullptr);
        if (w->finish_quietly({})) {
            next = w->handle;
        }
    }
    release();
    return next;
}

// ---- group_spawn_awaiter -----------------------------------------------------------------

group_spawn_awaiter::~group_spawn_awaiter() {
    if (queued_) {
        st_->unlink(this); // the awaiting frame was destroyed while it waited for a slot
    }
}

bool group_spawn_awaiter::suspend(const context& c, std::coroutine_handle<> h) {
    st_->bind_loop();
    if (st_->has_room() && st_->head == nullptr) {
        st_->start(std::move(driver_));
        return false;
    }
    w_.lp = st_->lp;
    w_.handle = h;
    w_.data = this;
    w_.on_cancel = &cancel_wait;
    if (!w_.arm(c)) {
        return false; // done already: w_.error says why; the child never starts
    }
    st_->enqueue(this);
    return true;
}

void group_spawn_awaiter::cancel_wait(waiter* w) noexcept {
    auto* self = static_cast<group_spawn_awaiter*>(w->data);
    self->st_->unlink(self);
    w->finish(w->cancel_error());
}

// ---- group_wait_awaiter ------------------------------------------------------------------

bool group_wait_awaiter::suspend(const context& c, std::coroutine_handle<> h) noexcept {
    assert(st_->waiting == nullptr && "one coroutine at a time may wait on a task_group");
    w_.lp = st_->lp;
    w_.handle = h;
    w_.data = st_;
    // The wait never ends early: a done context cancels the children, whose ends finish it.
    w_.on_cancel = [](waiter* w) noexcept { static_cast<group_state*>(w->data)->cancel(); };
    st_->waiting = &w_;
    if (!w_.arm(c)) {
        st_->cancel();
    }
    return true;
}

result<void> group_wait_awaiter::await_resume() {
    st_->cancel(); // as errgroup's Wait does, whatever happened
    if (st_->exc) {
        std::rethrow_exception(st_->exc);
    }
    return st_->error;
}

task_group make_group_awaiter::await_resume() const {
    return task_group{*ctx};
}

} // namespace detail

// ---- task_group --------------------------------------------------------------------------

task_group::task_group(const tether::context& parent) : st_(new detail::group_state(parent)) {
}

task_group& task_group::operator=(task_group&& o) noexcept {
    if (this != &o) {
        reset();
        st_ = std::exchange(o.st_, nullptr);
    }
    return *this;
}

task_group::~task_group() {
    reset();
}

void task_group::reset() noexcept {
    detail::group_state* st = std::exchange(st_, nullptr);
    if (st == nullptr) {
        return;
    }
    assert(st->waiting == nullptr && "a task_group destroyed while a coroutine waits on it");
    st->abandon();
}

void task_group::set_limit(std::ptrdiff_t n) {
    assert(st_->running == 0 && "set_limit while children run (Go panics too)");
    st_->limit = n;
    if (st_->lp != nullptr) {
        st_->admit();
    }
}

} // namespace tether
