#pragma once
// offload: run a blocking function on a shared thread pool and resume on the loop.

#include "runtime/detail/waiter.hpp"
#include "runtime/result.hpp"
#include "runtime/task.hpp"

#include <concepts>
#include <coroutine>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <tuple>
#include <type_traits>
#include <utility>

namespace tether {

namespace detail {

/// What an offloaded call and its awaiter share. The awaiter may resume (canceled) and go
/// away while the function still runs on the pool, so both hold a reference.
struct offload_shared {
    std::mutex mu;
    bool ready = false;     // the function has returned (guarded by mu)
    bool abandoned = false; // the awaiter resumed without the result (guarded by mu)
    waiter w;               // the awaiting coroutine, on the loop
    std::exception_ptr exc;

    offload_shared() = default;
    offload_shared(const offload_shared&) = delete;
    offload_shared& operator=(const offload_shared&) = delete;
    virtual ~offload_shared() = default;
    /// Calls the function and stores its value or exception (pool thread).
    virtual void run() noexcept = 0;
};

template <class F, class T>
struct offload_state final : offload_shared {
    explicit offload_state(F&& f) : fn(std::move(f)) {}
    F fn;
    std::conditional_t<std::is_void_v<T>, char, std::optional<T>> value;
    void run() noexcept override {
        try {
            if constexpr (std::is_void_v<T>) {
                fn();
            } else {
                value.emplace(fn());
            }
        } catch (...) {
            exc = std::current_exception();
        }
    }
};

/// Arms cancellation on `c` and queues the call on the pool; false if `c` is already done
/// (then nothing runs). Errors: throws if no pool thread can be started.
bool offload_begin(const std::shared_ptr<offload_shared>& st, const context& c,
                   std::coroutine_handle<> h);

template <class F>
class [[nodiscard]] offload_awaiter {
public:
    using value_type = std::invoke_result_t<F&>;

    explicit offload_awaiter(F fn) : fn_(std::move(fn)) {}

    bool await_ready() const noexcept { return false; }
    template <class P>
    bool await_suspend(std::coroutine_handle<P> h) {
        const context& c = context_of(h);
        if (std::error_code e = c.err()) {
            error_ = e;
            return false;
        }
        state_ = std::make_shared<offload_state<F, value_type>>(std::move(fn_));
        return offload_begin(state_, c, h);
    }
    result<value_type> await_resume() {
        if (error_) {
            return error_;
        }
        if (state_->w.error) {
            return state_->w.error;
        }
        if (state_->exc) {
            // Taken, not shared: the pool may drop the state last, and the exception must
            // then be this thread's alone.
            std::rethrow_exception(std::exchange(state_->exc, nullptr));
        }
        if constexpr (std::is_void_v<value_type>) {
            return {};
        } else {
            auto* st = static_cast<offload_state<F, value_type>*>(state_.get());
            return std::move(*st->value);
        }
    }

private:
    F fn_;
    std::error_code error_;
    std::shared_ptr<offload_shared> state_;
};

/// `fn` with its arguments, called once on the pool.
template <class F, class... Args>
struct bound_call {
    F fn;
    std::tuple<Args...> args;
    decltype(auto) operator()() { return std::apply(fn, std::move(args)); }
};

} // namespace detail

/// Runs `fn(args...)` on a shared pool of threads, for blocking calls (a library that does
/// its own I/O, getaddrinfo, heavy computation), and resumes on the loop with its value.
///
/// `co_await offload(fn, args...)` returns `result<T>` where `T` is what `fn` returns. The
/// arguments are moved to the pool with `fn`, as `std::async` takes them. An exception
/// thrown by `fn` is rethrown at the `co_await`.
///
/// The pool is shared by every loop in the process: up to 16 threads, started on demand
/// and kept for the life of the process. Calls beyond that wait in order for a thread, so
/// a function that blocks forever holds one thread forever.
///
/// Cancellation: under a context that is already done, `fn` never runs and the await
/// returns the context's error. If the context is done while `fn` runs, the await resumes
/// at once with the context's error; `fn` runs on to its end on the pool (a thread can't
/// be canceled) and its value or exception is discarded. If `fn` had returned before the
/// cancel was seen, its value is returned.
///
/// Lifetime: `fn` and `args` are moved to the pool and destroyed there, possibly after the
/// awaiting task has ended: they must own what they use (values, not references into the
/// awaiting frame, unless the await can't be canceled).
///
/// GCC 12: a lambda that captures something with a destructor (a string, a shared_ptr),
/// written inside the `co_await` expression, is destroyed twice when the await suspends
/// (a compiler bug, seen with GCC 12.2; captures of pointers and integers are harmless).
/// Pass such values as `args`, or name the lambda before the `co_await`.
///
/// Thread safety: `fn` runs on a pool thread, never on the loop's.
///
/// Example:
///
///     result<addrinfo_list> r = co_await offload(&resolve, host);
template <class F, class... Args>
    requires std::invocable<F&, Args...>
[[nodiscard]] auto offload(F fn, Args... args) {
    if constexpr (sizeof...(Args) == 0) {
        return detail::offload_awaiter<F>{std::move(fn)};
    } else {
        // Bound here, in a plain function, not in the awaiting coroutine's expression.
        return detail::offload_awaiter<detail::bound_call<F, Args...>>{
            detail::bound_call<F, Args...>{std::move(fn), {std::move(args)...}}};
    }
}

} // namespace tether
