#pragma once
// spawn: start a task concurrently; join_handle: await or cancel it.

#include "context/with_cancel.hpp"
#include "runtime/detail/waiter.hpp"
#include "runtime/result.hpp"
#include "runtime/task.hpp"

#include <atomic>
#include <coroutine>
#include <exception>
#include <optional>
#include <type_traits>
#include <utility>

namespace tether {

namespace detail {

struct spawn_base {
    std::atomic<int> refs{2}; // the handle and the running task
    context ctx;
    cancel_handle cancel;
    loop* lp = nullptr;
    bool done = false;
    waiter* joiner = nullptr;
    std::exception_ptr exc;

    virtual ~spawn_base() = default;
    void release() noexcept {
        if (refs.fetch_sub(1, std::memory_order_acq_rel) == 1) {
            delete this;
        }
    }
    /// Marks the task finished and resumes the joiner (loop thread).
    void complete() noexcept;
    /// Starts `h` on the current loop (queued, not run inline).
    void start(std::coroutine_handle<> h);
};

template <class T>
struct spawn_state : spawn_base {
    std::conditional_t<std::is_void_v<T>, char, std::optional<T>> value;
};

/// A coroutine that starts when queued and frees itself at the end.
struct detached_task {
    struct promise_type : promise_base {
        detached_task get_return_object() noexcept {
            return {std::coroutine_handle<promise_type>::from_promise(*this)};
        }
        std::suspend_always initial_suspend() const noexcept { return {}; }
        std::suspend_never final_suspend() const noexcept { return {}; }
        void return_void() const noexcept {}
        void unhandled_exception() const noexcept { std::terminate(); }
    };
    std::coroutine_handle<promise_type> h;
};

template <class T>
detached_task run_spawned(spawn_state<T>* st, task<T> t) {
    co_await set_context{&st->ctx};
    try {
        if constexpr (std::is_void_v<T>) {
            co_await std::move(t);
        } else {
            st->value.emplace(co_await std::move(t));
        }
    } catch (...) {
        st->exc = std::current_exception();
    }
    st->complete();
    st->release();
}

} // namespace detail

/// Owns a spawned task: `co_await` it for its result, `cancel()` it, or `detach()` it.
///
/// Destroying a handle that was neither awaited to the end nor detached cancels the task
/// (it then finishes on its own): nothing runs on silently.
///
/// Thread safety: use a handle on the loop that spawned the task.
template <class T>
class [[nodiscard]] join_handle {
public:
    join_handle() noexcept = default;
    explicit join_handle(detail::spawn_state<T>* s) noexcept : s_(s) {}
    join_handle(join_handle&& o) noexcept : s_(std::exchange(o.s_, nullptr)) {}
    join_handle& operator=(join_handle&& o) noexcept {
        if (this != &o) {
            reset();
            s_ = std::exchange(o.s_, nullptr);
        }
        return *this;
    }
    ~join_handle() { reset(); }

    /// Cancels the task's context (its awaits resume with `errc::canceled`).
    void cancel() const noexcept {
        if (s_) {
            s_->cancel();
        }
    }
    /// Lets the task run on without a handle.
    void detach() noexcept {
        if (s_) {
            std::exchange(s_, nullptr)->release();
        }
    }
    /// Returns true once the task has finished.
    bool done() const noexcept { return s_ && s_->done; }
    /// Returns the spawned task's context.
    const context& task_context() const noexcept { return s_->ctx; }

    struct awaiter {
        detail::spawn_state<T>* s;
        detail::waiter w{};
        bool await_ready() const noexcept { return s->done; }
        template <class P>
        bool await_suspend(std::coroutine_handle<P> h) noexcept {
            w.lp = s->lp;
            w.handle = h;
            w.data = s;
            w.on_cancel = [](detail::waiter* me) noexcept {
                static_cast<detail::spawn_base*>(me->data)->joiner = nullptr;
                me->finish(me->cancel_error());
            };
            if (!w.arm(detail::context_of(h))) {
                return false;
            }
            s->joiner = &w;
            return true;
        }
        /// Returns the task's value, or the awaiting context's error if it was done before
        /// the task finished; rethrows the task's exception.
        result<std::conditional_t<std::is_void_v<T>, void, T>> await_resume() {
            if (!s->done) {
                return w.error;
            }
            if (s->exc) {
                std::rethrow_exception(s->exc);
            }
            if constexpr (std::is_void_v<T>) {
                return {};
            } else {
                return std::move(*s->value);
            }
        }
    };
    /// Waits for the task to finish.
    ///
    /// Cancellation: if the awaiting task's context is done first, resumes with its error;
    /// the spawned task goes on (cancel it, or let the handle go, to stop it).
    awaiter operator co_await() const noexcept { return awaiter{s_}; }

private:
    void reset() noexcept {
        if (s_) {
            if (!s_->done) {
                s_->cancel();
            }
            std::exchange(s_, nullptr)->release();
        }
    }
    detail::spawn_state<T>* s_ = nullptr;
};

/// Starts `t` concurrently on the current loop under a child of `parent` and returns its
/// handle.
///
/// Use it for a task that must outlive the spawner (`spawn(background(), t)`); inside a
/// task, `co_await spawn(t)` spawns under the task's own context.
template <class T>
join_handle<T> spawn(const context& parent, task<T> t) {
    auto* st = new detail::spawn_state<T>;
    auto [ctx, cancel] = with_cancel(parent);
    st->ctx = std::move(ctx);
    st->cancel = std::move(cancel);
    detail::detached_task d = detail::run_spawned(st, std::move(t));
    st->start(d.h);
    return join_handle<T>{st};
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

} // namespace tether
