#pragma once
// What when_all, when_any and task_group share: children run by driver coroutines under one
// child context, reporting to a fan-out state that records the first error and resumes the
// parent once the last child has finished.
//   child_driver    a coroutine that awaits one child and reports to its fan-out
//   fanout_base     what a driver reports to
//   fanout          the state of one when_all or when_any (it lives in the awaiting frame)
//   unwrapped_t     what a child's value contributes to when_all

#include "context/with_cancel.hpp"
#include "runtime/result.hpp"
#include "runtime/task.hpp"

#include <concepts>
#include <coroutine>
#include <cstddef>
#include <exception>
#include <optional>
#include <system_error>
#include <type_traits>
#include <utility>
#include <variant>

namespace tether::detail {

/// Satisfied by what `co_await` accepts: a type with `await_ready` or `operator co_await`.
template <class A>
concept awaitable = requires(A&& a) {
    { detail::get_awaiter(std::forward<A>(a)).await_ready() } -> std::convertible_to<bool>;
};

template <class T>
struct is_result : std::false_type {};
template <class V>
struct is_result<result<V>> : std::true_type {};

/// What a child returning `T` contributes to when_all's tuple: `V` for `result<V>` (its error
/// is the child's error), `std::monostate` for `void` and `result<void>`, else `T`.
template <class T>
struct unwrapped {
    using type = T;
};
template <>
struct unwrapped<void> {
    using type = std::monostate;
};
template <class V>
struct unwrapped<result<V>> {
    using type = V;
};
template <>
struct unwrapped<result<void>> {
    using type = std::monostate;
};
template <class T>
using unwrapped_t = typename unwrapped<T>::type;

/// `T`, or `std::monostate` for `void`: what a child contributes to when_any.
template <class T>
using value_or_monostate_t = std::conditional_t<std::is_void_v<T>, std::monostate, T>;

/// Returns `t` itself.
template <class T>
task<T> as_task(task<T> t) noexcept {
    return t;
}

/// Returns a task that awaits `a`.
template <class A>
task<await_result_t<A>> as_task(A a) {
    co_return co_await std::move(a);
}

/// Returns the error a child's value carries: a `result`'s error, else none.
template <class T>
std::error_code error_of(const T& v) noexcept {
    if constexpr (is_result<T>::value) {
        return v.error();
    } else {
        return {};
    }
}

/// What a driver reports to. Everything runs on the loop's thread.
class fanout_base {
public:
    /// Child `i` threw `e` (or its value could not be stored).
    virtual void on_exception(std::size_t i, std::exception_ptr e) noexcept = 0;
    /// A child's driver has finished and freed its frame; returns the coroutine to resume
    /// next (by symmetric transfer), or null.
    virtual std::coroutine_handle<> on_child_done() noexcept = 0;

protected:
    fanout_base() = default;
    fanout_base(const fanout_base&) = default;
    fanout_base& operator=(const fanout_base&) = default;
    ~fanout_base() = default;
};

/// A coroutine that awaits one child, hands its value to a sink and reports to its fan-out;
/// it frees its own frame at the end. Owns the frame until `release()`.
class child_driver {
public:
    struct promise_type : promise_base {
        fanout_base* fan_ = nullptr;
        std::size_t index_ = 0;
        chain_owner chain_; // this child's awaits share a registration (see await_chain)

        child_driver get_return_object() noexcept {
            return child_driver{std::coroutine_handle<promise_type>::from_promise(*this)};
        }
        std::suspend_always initial_suspend() const noexcept { return {}; }
        struct final_awaiter {
            bool await_ready() const noexcept { return false; }
            std::coroutine_handle<>
            await_suspend(std::coroutine_handle<promise_type> h) const noexcept {
                fanout_base* fan = h.promise().fan_;
                await_chain::end(&h.promise().chain_);
                h.destroy();
                std::coroutine_handle<> next = fan->on_child_done();
                return next ? next : std::noop_coroutine();
            }
            void await_resume() const noexcept {}
        };
        final_awaiter final_suspend() const noexcept { return {}; }
        void return_void() const noexcept {}
        void unhandled_exception() const noexcept {
            fan_->on_exception(index_, std::current_exception());
        }
    };
    using handle_type = std::coroutine_handle<promise_type>;

    child_driver() noexcept = default;
    explicit child_driver(handle_type h) noexcept : h_(h) {}
    child_driver(child_driver&& o) noexcept : h_(std::exchange(o.h_, {})) {}
    child_driver& operator=(child_driver&& o) noexcept {
        if (this != &o) {
            reset();
            h_ = std::exchange(o.h_, {});
        }
        return *this;
    }
    ~child_driver() { reset(); }

    /// Makes the driver run under `ctx` and report to `fan` as child `i`.
    void bind(fanout_base* fan, std::size_t i, const context* ctx) noexcept {
        h_.promise().fan_ = fan;
        h_.promise().index_ = i;
        h_.promise().ctx_ = ctx;
        h_.promise().set_owner(&h_.promise().chain_);
    }
    /// Gives up the frame: once resumed, it frees itself.
    handle_type release() noexcept { return std::exchange(h_, {}); }

private:
    void reset() noexcept {
        if (h_) {
            h_.destroy(); // never started: destroys the child task with it
        }
    }
    handle_type h_;
};

/// Awaits `t` under the driver's context and passes its value (`std::monostate` for
/// `void`) to `sink`.
template <class T, class Sink>
child_driver drive(task<T> t, Sink sink) {
    if constexpr (std::is_void_v<T>) {
        co_await std::move(t);
        sink(std::monostate{});
    } else {
        sink(co_await std::move(t));
    }
}

/// The state of one when_all or when_any: the children's context, how many run, the first
/// error (when_all) or the winner (when_any), and the awaiting coroutine.
///
/// It lives in the awaiting coroutine's frame, which stays suspended until every child has
/// finished, so the drivers may point at it.
class fanout final : public fanout_base {
public:
    enum class mode { all, any };
    static constexpr std::size_t none = static_cast<std::size_t>(-1);

    explicit fanout(mode m) noexcept : mode_(m) {}
    fanout(const fanout&) = delete;
    fanout& operator=(const fanout&) = delete;

    /// Derives the children's context from `parent`; returns false, with `error()` set, if
    /// `parent` is already done (then nothing must start).
    bool open(const context& parent) {
        if (std::error_code e = parent.err()) {
            error_ = e;
            return false;
        }
        auto [c, cancel] = with_cancel_cause(parent);
        ctx_ = std::move(c);
        cancel_ = std::move(cancel);
        starting_ = true;
        return true;
    }

    const context& ctx() const noexcept { return ctx_; }

    /// Starts `d` as child `i` and runs it until it first suspends. Returns false, starting
    /// nothing, once the outcome is decided (an error, or a winner): the rest never start.
    bool start(child_driver& d, std::size_t i) {
        if (decided()) {
            return false;
        }
        d.bind(this, i, &ctx_);
        ++running_;
        d.release().resume();
        return true;
    }

    /// Ends the start phase; returns true if the awaiting coroutine `h` must suspend until
    /// the last child has finished.
    bool suspend(std::coroutine_handle<> h) noexcept {
        starting_ = false;
        if (running_ == 0) {
            return false;
        }
        awaiting_ = h;
        return true;
    }

    /// Records `e` as the first error (if it is) and cancels the children with it as the
    /// cause.
    void fail(std::error_code e) noexcept {
        if (!decided()) {
            failed_ = true;
            error_ = e;
        }
        cancel_(e);
    }

    /// Makes child `i` the winner if there is none yet, and cancels the others; returns
    /// true if it won.
    bool claim(std::size_t i) noexcept {
        if (winner_ != none) {
            return false;
        }
        winner_ = i;
        cancel_();
        return true;
    }

    void on_exception(std::size_t i, std::exception_ptr e) noexcept override {
        if (mode_ == mode::any) {
            if (claim(i) || winner_ == i) { // or it won and then its value failed to move
                exc_ = std::move(e);
            }
            return;
        }
        if (!decided()) {
            failed_ = true;
            exc_ = std::move(e);
        }
        cancel_();
    }

    std::coroutine_handle<> on_child_done() noexcept override {
        if (--running_ == 0 && !starting_) {
            return std::exchange(awaiting_, {});
        }
        return {};
    }

    /// Releases the children's context once they have all finished; rethrows the first
    /// exception (when_all) or the winner's (when_any).
    void finish() {
        cancel_.reset();
        if (exc_) {
            std::rethrow_exception(std::exchange(exc_, nullptr));
        }
    }

    /// The first error: the awaiting context's if it was done before anything started, or
    /// the first child's error (when_all).
    std::error_code error() const noexcept { return error_; }
    std::size_t winner() const noexcept { return winner_; }

private:
    bool decided() const noexcept { return mode_ == mode::all ? failed_ : winner_ != none; }

    mode mode_;
    bool starting_ = false;
    bool failed_ = false;
    std::size_t running_ = 0;
    std::size_t winner_ = none;
    std::error_code error_;
    std::exception_ptr exc_;
    context ctx_;
    cancel_handle cancel_;
    std::coroutine_handle<> awaiting_;
};

/// The awaiter that when_all and when_any (of a pack or of a range) share: derives the
/// children's context from the awaiting task's, makes every child's frame and starts them
/// (`Derived::make_children()`), and suspends until the last one has finished. `Derived`
/// befriends this class and reads the outcome with `finish()`.
template <class Derived>
class fan_awaiter {
public:
    fan_awaiter(const fan_awaiter&) = delete;
    fan_awaiter& operator=(const fan_awaiter&) = delete;

    bool await_ready() const noexcept { return false; }
    template <class P>
    bool await_suspend(std::coroutine_handle<P> h) {
        if (!fan_.open(context_of(h))) {
            return false;
        }
        // Every frame is made before any child starts: if an allocation throws, nothing runs.
        auto drivers = static_cast<Derived*>(this)->make_children();
        for (std::size_t i = 0; i < drivers.size() && fan_.start(drivers[i], i); ++i) {
        }
        return fan_.suspend(h);
    }

protected:
    explicit fan_awaiter(fanout::mode m) noexcept : fan_(m) {}
    ~fan_awaiter() = default;

    /// After the children: rethrows the exception that decided the outcome, else returns
    /// the error (the context's, or when_all's first child error), or none.
    std::error_code finish() {
        fan_.finish();
        return fan_.error();
    }

    fanout fan_;
};

} // namespace tether::detail
