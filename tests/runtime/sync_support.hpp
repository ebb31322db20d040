#pragma once
// Helpers for the sync primitive tests (channel, select, mutex, semaphore, event, wait_group).
//   start        spawns a task on a loop from outside it; its handle finishes it when dropped
//   await_into   a task that awaits something and stores what it gave
//   yield_now    lets the other ready tasks run before the caller goes on

#include "runtime/loop.hpp"
#include "runtime/spawn.hpp"
#include "runtime/task.hpp"

#include <coroutine>
#include <optional>
#include <utility>

namespace tether::test {

/// A task started by `start`: when dropped while the task still waits, cancels it and runs
/// the loop until it has finished, so that the primitive it waits on (declared before the
/// handle) can be destroyed next.
template <class T>
class started {
public:
    started(loop& l, join_handle<T> h) noexcept : l_(&l), h_(std::move(h)) {}
    started(started&& o) noexcept : l_(std::exchange(o.l_, nullptr)), h_(std::move(o.h_)) {}
    started& operator=(started&&) = delete;
    ~started() {
        if (l_ != nullptr && !h_.done()) {
            h_.cancel();
            l_->run_until_idle();
        }
    }
    /// Returns true once the task has finished.
    bool done() const noexcept { return h_.done(); }
    /// Cancels the task's own context.
    void cancel() const noexcept { h_.cancel(); }

private:
    loop* l_;
    join_handle<T> h_;
};

/// Spawns `t` on `l` under a child of `ctx` and returns its handle; it runs on the loop's
/// next turns (`l.run_until_idle()`).
template <class T>
started<T> start(loop& l, const context& ctx, task<T> t) {
    join_handle<T> h = l.block_on(ctx, [](task<T> inner) -> task<join_handle<T>> {
        co_return co_await spawn(std::move(inner));
    }(std::move(t)));
    return {l, std::move(h)};
}

/// Returns a task that awaits `a` and stores its result in `*out`.
///
/// Lifetime: `out` must outlive the task.
template <class A>
task<void> await_into(std::optional<await_result_t<A>>* out, A a) {
    out->emplace(co_await std::move(a));
}

/// Suspends the running task to the back of its loop's ready queue (a point inside a
/// critical section where other tasks get to run).
struct yield_now {
    bool await_ready() const noexcept { return false; }
    void await_suspend(std::coroutine_handle<> h) const { loop::current()->schedule(h); }
    void await_resume() const noexcept {}
};

} // namespace tether::test
