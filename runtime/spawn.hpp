#pragma once
// spawn: start a task concurrently; join_handle: await or cancel it.

#include "context/with_cancel.hpp"
#include "runtime/detail/frame_allocator.hpp"
#include "runtime/detail/waiter.hpp"
#include "runtime/result.hpp"
#include "runtime/task.hpp"

#include <cassert>
#include <coroutine>
#include <cstddef>
#include <type_traits>
#include <utility>

namespace tether {

namespace detail {

/// What a spawned task and its join handle share: the task's own context, a child of the
/// spawner's so that it can be canceled alone, and the spawn's fields, in one block from the
/// context node allocator (one allocation per spawn, and a cancel fan-out touches one block
/// per task).
///
/// The node's reference count and the spawn's are separate: the task may copy its context
/// and keep it after the handle and the frame are gone. The spawn holds two references on
/// the node: its context's (`ctx`, dropped with the last of the handle and the task), and
/// its cancel's (dropped, after a cancel, when the task finishes).
///
/// The task runs without a wrapper coroutine: its promise points here (`spawned()`), a joiner
/// waits as the task's continuation, and the final awaiter calls
/// `promise_base::spawn_finished`, which cancels the context (unlinking it from the parent)
/// and resumes the joiner directly. The finished frame keeps the task's value or exception
/// until the handle lets go; the last of the handle and the task to let go destroys the
/// frame and drops the spawn's context.
///
/// A task that finishes on another loop than the one that spawned it (`spawn_on`, or a
/// `switch_to` inside it) hands its end to `home`: every spawn field here is touched on the
/// home loop's thread only, and the joiner resumes there.
///
/// Thread safety: the spawn fields, loop thread only (the home loop's), as the handle; the
/// cancel state, any thread.
struct spawn_base : cancel_state, chain_owner {
    context ctx;                   // this node: the task's promise's ctx_ points here
    loop* home = nullptr;          // the spawner's loop: where the handle lives
    std::coroutine_handle<> frame; // the task's
    std::uint32_t spawn_refs = 2;  // the handle and the running task
    bool done = false;

    /// Makes the state of a task spawned under `parent`, from `home` (null: spawned from
    /// no loop). Errors: throws std::bad_alloc.
    static spawn_base* make(const context& parent, loop* home, std::coroutine_handle<> frame);
    /// Cancels the task's context, unless the task has finished.
    void cancel_task() noexcept {
        if (!done) {
            cancel(make_error_code(errc::canceled), {}, true);
        }
    }
    /// Drops one reference; the last destroys the frame and drops the spawn's context.
    void release() noexcept;
    /// Starts `frame` on the current loop (queued, not run inline).
    static void start(std::coroutine_handle<> frame);
    /// Starts `frame` on `target` (queued there; from any loop).
    static void start_on(loop& target, std::coroutine_handle<> frame);
};

inline spawn_base* promise_base::spawned() const noexcept {
    return (spawn_ & 1U) != 0 ? nullptr
                              : static_cast<spawn_base*>(reinterpret_cast<chain_owner*>(spawn_));
}

inline void promise_base::set_spawned(spawn_base* s) noexcept {
    spawn_ = reinterpret_cast<std::uintptr_t>(static_cast<chain_owner*>(s));
}

} // namespace detail

/// Owns a spawned task: `co_await` it for its result, `cancel()` it, or `detach()` it.
///
/// Destroying a handle that was neither awaited to the end nor detached cancels the task
/// (it then finishes on its own): nothing runs on silently.
///
/// Thread safety: use a handle on the loop that spawned the task, even when the task runs
/// on another (`spawn_on`): its end comes back to that loop, where the joiner resumes.
template <class T>
class [[nodiscard]] join_handle {
    using handle_type = typename task<T>::handle_type;

public:
    join_handle() noexcept = default;
    explicit join_handle(handle_type h) noexcept : h_(h) {}
    join_handle(join_handle&& o) noexcept : h_(std::exchange(o.h_, {})) {}
    join_handle& operator=(join_handle&& o) noexcept {
        if (this != &o) {
            reset();
            h_ = std::exchange(o.h_, {});
        }
        return *this;
    }
    ~join_handle() { reset(); }

    /// Cancels the task's context (its awaits resume with `errc::canceled`).
    void cancel() const noexcept {
        if (h_) {
            state().cancel_task();
        }
    }
    /// Lets the task run on without a handle.
    void detach() noexcept {
        if (h_) {
            detail::spawn_base& s = state();
            h_ = {};
            s.release();
        }
    }
    /// Returns true once the task has finished.
    bool done() const noexcept { return h_ && state().done; }
    /// Returns the spawned task's context.
    const context& task_context() const noexcept { return state().ctx; }

    struct awaiter {
        handle_type task;
        detail::waiter w{};
        bool suspended = false;
        bool await_ready() const noexcept { return task.promise().spawned()->done; }
        template <class P>
        bool await_suspend(std::coroutine_handle<P> h) noexcept {
            w.lp = detail::current_loop();
            w.handle = h;
            w.data = static_cast<detail::promise_base*>(&task.promise());
            w.on_cancel = [](detail::waiter* me) noexcept {
                auto* p = static_cast<detail::promise_base*>(me->data);
                if (p->spawned()->done) {
                    // The task's end has queued us already (a task that ended on another
                    // loop: its end came home and scheduled its continuation, which has
                    // not run yet). Queueing again would resume us twice.
                    return;
                }
                p->continuation_ = nullptr;
                me->finish(me->cancel_error());
            };
            w.owner = detail::owner_of(h);
            if (!w.arm(detail::context_of(h))) {
                return false;
            }
            task.promise().continuation_ = h; // the final awaiter resumes us
            suspended = true;
            return true;
        }
        /// Returns the task's value, or the awaiting context's error if it was done before
        /// the task finished; rethrows the task's exception.
        result<std::conditional_t<std::is_void_v<T>, void, T>> await_resume() {
            if (suspended) {
                // Suspended: resumed either by the task's end (disarm our registration now)
                // or by our context's cancel (then finish_quietly does nothing).
                w.finish_quietly({});
            }
            if (!task.promise().spawned()->done) {
                return w.error;
            }
            if constexpr (std::is_void_v<T>) {
                task.promise().take();
                return {};
            } else {
                return task.promise().take();
            }
        }
    };
    /// Waits for the task to finish.
    ///
    /// Cancellation: if the awaiting task's context is done first, resumes with its error;
    /// the spawned task goes on (cancel it, or let the handle go, to stop it).
    awaiter operator co_await() const noexcept { return awaiter{h_}; }

private:
    detail::spawn_base& state() const noexcept { return *h_.promise().spawned(); }
    void reset() noexcept {
        if (h_) {
            detail::spawn_base& s = state();
            s.cancel_task();
            h_ = {};
            s.release();
        }
    }
    handle_type h_;
};

/// Starts `t` concurrently on the current loop under a child of `parent` and returns its
/// handle.
///
/// Use it for a task that must outlive the spawner (`spawn(background(), t)`); inside a
/// task, `co_await spawn(t)` spawns under the task's own context.
template <class T>
join_handle<T> spawn(const context& parent, task<T> t) {
    auto* st = detail::spawn_base::make(parent, detail::current_loop(), t.handle());
    typename task<T>::handle_type h = t.release();
    h.promise().ctx_ = &st->ctx;
    h.promise().set_spawned(st);
    detail::spawn_base::start(h);
    return join_handle<T>{h};
}

/// Starts `t` on `target` (another loop of the runtime, or this one) under a child of
/// `parent`, and returns its handle, which stays on the calling loop.
///
/// The task runs on `target`'s thread; awaiting the handle resumes the joiner on the calling
/// loop with the task's value or exception. Canceling `parent` or the handle cancels the
/// task on `target`: its awaits there resume, on `target`, with `errc::canceled`.
///
/// Must be called on a running loop (the handle's home).
///
/// Lifetime: `target` must outlive the task.
///
/// Thread safety: `target` may be any loop; the handle belongs to the calling loop.
template <class T>
join_handle<T> spawn_on(loop& target, const context& parent, task<T> t) {
    assert(detail::current_loop() != nullptr && "spawn_on must be called on a running loop");
    auto* st = detail::spawn_base::make(parent, detail::current_loop(), t.handle());
    typename task<T>::handle_type h = t.release();
    h.promise().ctx_ = &st->ctx;
    h.promise().set_spawned(st);
    detail::spawn_base::start_on(target, h);
    return join_handle<T>{h};
}

namespace detail {
template <class T>
struct spawn_awaiter {
    task<T> t;
    join_handle<T> h;
    bool await_ready() const noexcept { return false; }
    template <class P>
    bool await_suspend(std::coroutine_handle<P> parent) {
        h = tether::spawn(context_of(parent), std::move(t));
        return false;
    }
    join_handle<T> await_resume() noexcept { return std::move(h); }
};
} // namespace detail

/// Starts `t` concurrently as a child of the running task's context: `auto h = co_await
/// spawn(work());`. Canceling the parent's context cancels it; `h.cancel()` cancels only it.
template <class T>
[[nodiscard]] detail::spawn_awaiter<T> spawn(task<T> t) {
    return {std::move(t), {}};
}

namespace detail {
template <class T>
struct spawn_on_awaiter {
    loop* target;
    task<T> t;
    join_handle<T> h;
    bool await_ready() const noexcept { return false; }
    template <class P>
    bool await_suspend(std::coroutine_handle<P> parent) {
        h = tether::spawn_on(*target, context_of(parent), std::move(t));
        return false;
    }
    join_handle<T> await_resume() noexcept { return std::move(h); }
};
} // namespace detail

/// Starts `t` on `target` as a child of the running task's context: `auto h = co_await
/// spawn_on(rt.loop(1), work());`. The task carries the spawner's context (its values and
/// deadline) to `target`; `co_await h` resumes here with its result. See `spawn_on` above.
template <class T>
[[nodiscard]] detail::spawn_on_awaiter<T> spawn_on(loop& target, task<T> t) {
    return {&target, std::move(t), {}};
}

} // namespace tether
