#pragma once
// task<T>: a lazy coroutine that runs under the context of whoever awaits it.
//   task<T>          the coroutine type; co_await runs it under the awaiter's context
//   this_coro        co_await this_coro::context / this_coro::loop
//   with_context     run an awaitable under another context
//   with_timeout     run an awaitable under a child with a timeout (really canceling it)

#include "context/context.hpp"
#include "context/with_deadline.hpp"
#include "runtime/detail/frame_allocator.hpp"
#include "runtime/detail/waiter.hpp"
#include "runtime/result.hpp"

#include <cassert>
#include <coroutine>
#include <cstdint>
#include <exception>
#include <type_traits>
#include <utility>
#include <variant>

namespace tether {

class loop;

template <class T = void>
class task;

/// Queries about the running coroutine, awaited without suspending (as in Asio).
namespace this_coro {
struct context_t {};
struct loop_t {};
/// `co_await this_coro::context` returns a copy of the running task's context.
inline constexpr context_t context{};
/// `co_await this_coro::loop` returns the loop the running task runs on.
inline constexpr loop_t loop{};
} // namespace this_coro

namespace detail {

struct spawn_base;

/// The background context on the real clock: the context of a task started without one.
/// Constant-initialized, so that a new frame points at it without a call or a guard.
inline constinit const context default_context_v{};
/// Returns the background context on the real clock (for tasks started without one).
inline const context& default_context() noexcept {
    return default_context_v;
}
/// Returns the loop running on this thread, or null.
loop* current_loop() noexcept;

/// Suspends until a context is done; resumes early with an error if the awaiting task's
/// own context is done first.
class done_awaiter {
public:
    explicit done_awaiter(done_signal s) noexcept : target_(s) {}
    bool await_ready() const noexcept { return target_.ready(); }
    template <class P>
    bool await_suspend(std::coroutine_handle<P> h) noexcept {
        return suspend(h.promise().get_context(), h);
    }
    result<void> await_resume() const noexcept { return error_; }

private:
    bool suspend(const context& own, std::coroutine_handle<> h) noexcept;
    static void resolve(done_awaiter* self, std::error_code e) noexcept;
    done_signal target_;
    std::error_code error_;
    bool resolved_ = false;
    waiter own_;      // the awaiting task's context: resumes with its error
    waiter target_w_; // the awaited signal: resumes with success
};

template <class T>
struct ready_value {
    T v;
    bool await_ready() const noexcept { return true; }
    void await_suspend(std::coroutine_handle<>) const noexcept {}
    T await_resume() { return std::move(v); }
};

/// What every tether promise holds: the context (borrowed from the awaiter or owned by the
/// root) and the continuation. Carrying the context costs one pointer copy per await.
struct promise_base {
    const context* ctx_ = &default_context_v;
    std::coroutine_handle<> continuation_;
    // What the coroutine's awaits hang their chain on (see await_chain): the address of a
    // spawned task's state, on the task's own frame; with bit 0 set, in a frame the task
    // awaits or a fan-out child's (whose state is not a spawn's); 0 or 1: none.
    std::uintptr_t spawn_ = 0;

    /// Returns the spawned task's state if this is its own frame, else null (spawn.hpp).
    spawn_base* spawned() const noexcept;
    /// Returns what this coroutine's awaits hang their chain on, or null.
    chain_owner* owner() const noexcept {
        return reinterpret_cast<chain_owner*>(spawn_ & ~std::uintptr_t{1});
    }
    /// Makes this the spawned task's own frame (spawn.hpp).
    void set_spawned(spawn_base* s) noexcept;
    /// Makes this frame's awaits hang on `o` (a fan-out child's driver).
    void set_owner(chain_owner* o) noexcept { spawn_ = reinterpret_cast<std::uintptr_t>(o) | 1U; }
    /// Makes this frame one that `parent`'s task awaits.
    void inherit_owner(const promise_base& parent) noexcept { spawn_ = parent.spawn_ | 1U; }

    static void* operator new(std::size_t n) { return allocate_frame(n); }
    static void operator delete(void* p, std::size_t n) noexcept { deallocate_frame(p, n); }

    const tether::context& get_context() const noexcept { return *ctx_; }

    struct final_awaiter {
        bool await_ready() const noexcept { return false; }
        template <class P>
        std::coroutine_handle<> await_suspend(std::coroutine_handle<P> h) const noexcept {
            promise_base& p = h.promise();
            if (p.spawn_ != 0 && (p.spawn_ & 1U) == 0) {
                return spawn_finished(p);
            }
            return p.continuation_ ? p.continuation_ : std::noop_coroutine();
        }
        void await_resume() const noexcept {}
    };
    /// Tells a spawned task's handle that the task finished; returns the coroutine to resume
    /// (its joiner, or noop). May destroy the finished frame. Defined in spawn.cpp.
    static std::coroutine_handle<> spawn_finished(promise_base& p) noexcept;
    std::suspend_always initial_suspend() const noexcept { return {}; }
    final_awaiter final_suspend() const noexcept { return {}; }
};

/// Returns the context of the promise behind `h`, or background for foreign coroutines.
template <class P>
const context& context_of(std::coroutine_handle<P> h) noexcept {
    if constexpr (std::is_base_of_v<promise_base, P>) {
        return h.promise().get_context();
    } else {
        return default_context();
    }
}

/// Returns the spawned task the coroutine behind `h` runs in (what its awaits set as their
/// waiter's `owner`), or null.
template <class P>
chain_owner* owner_of(std::coroutine_handle<P> h) noexcept {
    if constexpr (std::is_base_of_v<promise_base, P>) {
        return h.promise().owner();
    } else {
        return nullptr;
    }
}

/// Reads the running task's context without suspending.
struct context_reader {
    tether::context c;
    bool await_ready() const noexcept { return false; }
    template <class P>
    bool await_suspend(std::coroutine_handle<P> h) noexcept {
        c = context_of(h);
        return false;
    }
    tether::context await_resume() noexcept { return std::move(c); }
};

/// Reads the running task's context without suspending or copying it: the reference stays
/// valid while the awaiter that started the task is suspended on it.
struct context_ref_reader {
    const tether::context* c = nullptr;
    bool await_ready() const noexcept { return false; }
    template <class P>
    bool await_suspend(std::coroutine_handle<P> h) noexcept {
        c = &context_of(h);
        return false;
    }
    const tether::context& await_resume() const noexcept { return *c; }
};

/// Sets the running task's context pointer without suspending (used by with_context).
struct set_context {
    const context* ctx;
    bool await_ready() const noexcept { return false; }
    template <class P>
    bool await_suspend(std::coroutine_handle<P> h) const noexcept {
        h.promise().ctx_ = ctx;
        return false;
    }
    void await_resume() const noexcept {}
};

template <class T>
struct task_promise : promise_base {
    std::variant<std::monostate, T, std::exception_ptr> r_;
    task<T> get_return_object() noexcept;
    template <class U>
    void return_value(U&& v) {
        r_.template emplace<1>(std::forward<U>(v));
    }
    void unhandled_exception() noexcept { r_.template emplace<2>(std::current_exception()); }
    T take() {
        if (r_.index() == 2) {
            std::rethrow_exception(std::get<2>(r_));
        }
        return std::move(std::get<1>(r_));
    }
};

template <>
struct task_promise<void> : promise_base {
    std::exception_ptr e_;
    task<void> get_return_object() noexcept;
    void return_void() const noexcept {}
    void unhandled_exception() noexcept { e_ = std::current_exception(); }
    void take() {
        if (e_) {
            std::rethrow_exception(e_);
        }
    }
};

} // namespace detail

namespace this_coro {
/// Awaits the running task's context (a copy).
inline detail::context_reader operator co_await(context_t) noexcept {
    return {};
}
/// Awaits the loop the running task runs on.
inline detail::ready_value<tether::loop*> operator co_await(loop_t) noexcept {
    return {detail::current_loop()};
}
} // namespace this_coro

/// Suspends until the signal's context is done: `co_await ctx.done()`.
///
/// Returns success once it is done; an error (the awaiting task's own context's) if that
/// context is done first. Never suspends for a context that is already done.
inline detail::done_awaiter operator co_await(done_signal s) noexcept {
    return detail::done_awaiter{s};
}

/// A lazy coroutine returning `T`: it starts when awaited and runs under the awaiter's
/// context, with no argument passing.
///
/// Move-only; awaiting it transfers control symmetrically (a chain of a million nested
/// awaits that complete synchronously uses no extra stack). Exceptions thrown in the task
/// are rethrown at its `co_await`. Frames come from a per-thread recycling allocator.
///
/// Lifetime: a task destroyed before it is awaited never runs; parameters are borrowed
/// until it completes, so take them by value.
template <class T>
class [[nodiscard]] task {
public:
    using promise_type = detail::task_promise<T>;
    using handle_type = std::coroutine_handle<promise_type>;
    using value_type = T;

    task() noexcept = default;
    explicit task(handle_type h) noexcept : h_(h) {}
    task(task&& o) noexcept : h_(std::exchange(o.h_, {})) {}
    task& operator=(task&& o) noexcept {
        if (this != &o) {
            if (h_) {
                h_.destroy();
            }
            h_ = std::exchange(o.h_, {});
        }
        return *this;
    }
    ~task() {
        if (h_) {
            h_.destroy();
        }
    }

    /// Returns true if the task has run to completion.
    bool done() const noexcept { return h_ && h_.done(); }
    /// Returns true if the task holds a coroutine.
    explicit operator bool() const noexcept { return static_cast<bool>(h_); }

    struct awaiter {
        handle_type h;
        bool await_ready() const noexcept { return false; }
        template <class P>
        std::coroutine_handle<> await_suspend(std::coroutine_handle<P> parent) noexcept {
            h.promise().ctx_ = &detail::context_of(parent);
            if constexpr (std::is_base_of_v<detail::promise_base, P>) {
                h.promise().inherit_owner(parent.promise());
            }
            h.promise().continuation_ = parent;
            return h;
        }
        T await_resume() { return h.promise().take(); }
    };
    /// Starts the task under the awaiting coroutine's context; returns its value.
    awaiter operator co_await() && noexcept {
        assert(h_ && !h_.done());
        return awaiter{h_};
    }

    /// Releases the coroutine handle (the caller now owns the frame).
    handle_type release() noexcept { return std::exchange(h_, {}); }
    handle_type handle() const noexcept { return h_; }

private:
    handle_type h_;
};

namespace detail {
template <class T>
task<T> task_promise<T>::get_return_object() noexcept {
    return task<T>{std::coroutine_handle<task_promise>::from_promise(*this)};
}
inline task<void> task_promise<void>::get_return_object() noexcept {
    return task<void>{std::coroutine_handle<task_promise>::from_promise(*this)};
}

template <class A>
decltype(auto) get_awaiter(A&& a) {
    if constexpr (requires { std::forward<A>(a).operator co_await(); }) {
        return std::forward<A>(a).operator co_await();
    } else {
        return std::forward<A>(a);
    }
}
} // namespace detail

/// The type `co_await a` produces for an awaitable of type `A`.
template <class A>
using await_result_t = decltype(detail::get_awaiter(std::declval<A>()).await_resume());

/// Runs `a` under `ctx` instead of the awaiting task's context and returns its result.
///
/// Use it to detach cleanup from a canceled request (`with_context(without_cancel(ctx),
/// flush())`) or to run work under a context derived by hand.
///
/// Lifetime: `a` is moved into the returned task.
template <class A>
task<await_result_t<A>> with_context(context ctx, A a) {
    co_await detail::set_context{&ctx};
    co_return co_await std::move(a);
}

/// Runs `a` under a child of the awaiting task's context whose deadline is `timeout` from
/// now; when it passes, every await inside `a` resumes with `errc::deadline_exceeded` and
/// its I/O is canceled in the kernel (unlike a timeout that only stops waiting).
template <class A>
task<await_result_t<A>> with_timeout(duration timeout, A a) {
    // The awaiter's context, borrowed: a copy would cost two atomic reference counts.
    const context& parent = co_await detail::context_ref_reader{};
    auto [ctx, cancel] = tether::with_timeout(parent, timeout);
    co_await detail::set_context{&ctx};
    co_return co_await std::move(a);
}

/// Like `with_timeout`, with an absolute deadline on the context's clock.
template <class A>
task<await_result_t<A>> with_deadline(time_point deadline, A a) {
    const context& parent = co_await detail::context_ref_reader{};
    auto [ctx, cancel] = tether::with_deadline(parent, deadline);
    co_await detail::set_context{&ctx};
    co_return co_await std::move(a);
}

} // namespace tether
