#pragma once
// context: Go's context package for C++.
//   context              a cheap-to-copy handle on an immutable chain of nodes
//   background(), todo() the roots
//   cause()              why a context ended
//   cancel_registration  O(1), allocation-free callback on cancellation (used by awaitables)
//   cancel_callback<F>   the same with a callable, like std::stop_callback
// Derived contexts live in with_cancel.hpp, with_deadline.hpp, with_value.hpp,
// without_cancel.hpp and after_func.hpp; fmt formatters in format.hpp.

#include "context/clock.hpp"
#include "context/detail/node.hpp"
#include "context/errc.hpp"

#include <optional>
#include <system_error>
#include <utility>

namespace tether {

template <class T>
class context_key;

class context;

/// The done signal of a context, as returned by `context::done()`.
///
/// `if (ctx.done())` checks without waiting (Go's `select { case <-ctx.Done(): default: }`);
/// inside a tether task, `co_await ctx.done()` suspends until the context is done (the
/// awaitable comes from the runtime). Awaiting or checking a done context never suspends.
class done_signal {
public:
    /// Returns true if the context is done.
    bool ready() const noexcept { return c_ && c_->is_done(); }
    explicit operator bool() const noexcept { return ready(); }
    /// Returns true if the context can ever become done (Go: `Done() != nil`).
    bool can_be_done() const noexcept { return c_ != nullptr; }
    /// The cancel state behind the signal; null for a context that is never done.
    detail::cancel_state* state() const noexcept { return c_; }

private:
    friend class context;
    explicit done_signal(detail::cancel_state* c) noexcept : c_(c) {}
    detail::cancel_state* c_;
};

/// A handle on a context: a cancellation signal, an optional deadline and request-scoped
/// values, shared by every copy.
///
/// A default-constructed context is `background()`. Copying costs one atomic increment;
/// contexts are immutable, so copies may be used from any thread.
///
/// Thread safety: every member may be called from any thread.
class context {
public:
    /// Makes `background()`.
    context() noexcept = default;
    context(const context& o) noexcept : n_(o.n_) {
        if (n_) {
            n_->add_ref();
        }
    }
    context(context&& o) noexcept : n_(std::exchange(o.n_, nullptr)) {}
    context& operator=(context o) noexcept {
        std::swap(n_, o.n_);
        return *this;
    }
    ~context() {
        if (n_) {
            n_->release();
        }
    }

    /// Returns the reason the context is done: empty while it is not,
    /// `errc::canceled` or `errc::deadline_exceeded` once it is.
    ///
    /// Once non-empty, it never changes. Costs one atomic load.
    std::error_code err() const noexcept {
        detail::cancel_state* c = n_ ? n_->canceler : nullptr;
        if (c == nullptr || !c->is_done()) {
            return {};
        }
        return c->error();
    }

    /// Returns true if the context is done (canceled or past its deadline).
    bool is_done() const noexcept {
        detail::cancel_state* c = n_ ? n_->canceler : nullptr;
        return c != nullptr && c->is_done();
    }

    /// Returns the done signal: test it with `if (ctx.done())`, or `co_await` it in a task.
    done_signal done() const noexcept { return done_signal{n_ ? n_->canceler : nullptr}; }

    /// Returns the deadline, or nullopt if the context has none.
    ///
    /// A derived context's deadline is the earlier of its own and its parent's.
    std::optional<time_point> deadline() const noexcept {
        if (n_ == nullptr || n_->deadline == time_point::max()) {
            return std::nullopt;
        }
        return n_->deadline;
    }
    /// Returns true if the context has a deadline.
    bool has_deadline() const noexcept {
        return n_ != nullptr && n_->deadline != time_point::max();
    }

    /// Returns the value stored under `key` by the nearest `with_value`, or null.
    ///
    /// Keys compare by identity (their address): two keys never collide, whatever their
    /// types or names. The pointer lives as long as any copy of this context.
    template <class T>
    const T* value(const context_key<T>& key) const noexcept;

    /// Returns the clock of the tree: the root's, inherited by every descendant.
    tether::clock& clock() const noexcept { return n_ ? *n_->clk : real_clock(); }

    /// Returns true if the context can never be done (background, todo, without_cancel).
    bool is_never_done() const noexcept { return n_ == nullptr || n_->canceler == nullptr; }

    /// Returns true if both handles name the same context.
    friend bool operator==(const context& a, const context& b) noexcept { return a.n_ == b.n_; }

    /// The node behind the handle (null for background on the real clock).
    detail::node* node() const noexcept { return n_; }
    /// Adopts a reference to `n` (no increment).
    static context adopt(detail::node* n) noexcept {
        context c;
        c.n_ = n;
        return c;
    }

private:
    detail::node* n_ = nullptr;
};

/// Returns the root context: never canceled, no deadline, no values, on `real_clock()`.
inline context background() noexcept {
    return context{};
}

/// Returns a root context like `background()` whose tree reads time and fires deadlines on
/// `clk`.
///
/// Lifetime: `clk` must outlive every context derived from the result.
context background(clock& clk);

/// Returns the context to use when it is unclear which one applies (Go's `context.TODO()`).
///
/// It behaves as `background()` and prints as `context.TODO`.
context todo() noexcept;

/// Returns why `ctx` ended: the cause given to its cancel, or `ctx.err()` if none was
/// given; empty while `ctx` is not done.
///
/// The cause is the first one: a later cancel with another cause changes nothing. A child
/// canceled because its parent was canceled reports the parent's cause.
std::error_code cause(const context& ctx) noexcept;

/// A callback slot that runs once when a context is done: O(1) to arm and disarm, no
/// allocation.
///
/// The runtime embeds one in every awaitable that can be suspended.
///
/// Thread safety: the callback runs on the thread that cancels (or fires the deadline).
/// `disarm()` may be called from any thread: if the callback is running on another
/// thread, it waits until it has returned; from inside the callback itself it returns at
/// once (the callback may even destroy its registration). One thread at a time may call
/// `arm()`, `disarm()` and `is_armed()` on a registration.
///
/// Lifetime: an armed registration holds a reference on the context's cancel state until
/// `disarm()`, so the context itself need not outlive it.
class cancel_registration {
public:
    /// The callback: receives the `data` pointer given to `arm()`.
    using function = void (*)(void* data) noexcept;

    cancel_registration() noexcept : fn_(nullptr) {}
    /// Leaves the node and the callback uninitialized (arm() sets them): for registrations
    /// made per await on hot paths.
    explicit cancel_registration(detail::lazy_init_t) noexcept : node_(detail::lazy_init) {}
    cancel_registration(const cancel_registration&) = delete;
    cancel_registration& operator=(const cancel_registration&) = delete;
    ~cancel_registration() { disarm(); }

    /// Arms `fn` on `ctx`; returns false, arming nothing, if `ctx` is already done.
    ///
    /// For a context that is never done, arms nothing and returns true. Arming an armed
    /// slot first disarms it.
    bool arm(const context& ctx, function fn, void* data) noexcept;
    /// Arms `fn` on the cancel state behind a done signal (`done_signal::state()`); as
    /// above. A null state is never done: arms nothing and returns true.
    bool arm(detail::cancel_state* state, function fn, void* data) noexcept;
    /// As `arm(ctx, fn, data)`, for a caller that keeps `ctx` (or another context naming
    /// the same cancel state) alive until `disarm()`: takes no reference on the cancel
    /// state, which saves two atomic read-modify-writes. The runtime's awaits use it: the
    /// awaiting coroutine's context outlives every await.
    bool arm_borrowed(const context& ctx, function fn, void* data) noexcept;

    /// Removes the callback if it has not run; returns after it finished if it is running.
    void disarm() noexcept {
        if (owner_ != nullptr) {
            disarm_armed();
        }
    }

    /// Returns true from a successful `arm()` on a context that can be done until
    /// `disarm()`, whether or not the callback has run.
    bool is_armed() const noexcept { return owner_ != nullptr; }

private:
    static void trampoline(detail::callback_node* cb) noexcept;
    void disarm_armed() noexcept;
    /// Links `fn` on `c` (null: never done); takes a reference on `c` if `hold`.
    bool link(detail::cancel_state* c, function fn, void* data, bool hold) noexcept;
    detail::callback_node node_;
    function fn_; // called with node_.data; set by arm()
    // Last: what is_armed() reads, next to whatever the registration is followed by (a
    // waiter's fields that every await touches).
    detail::cancel_state* owner_ = nullptr;
};

/// Runs `f` once when a context is done, like `std::stop_callback`; unregistered on
/// destruction.
///
/// If the context is already done, `f` runs inside the constructor.
///
/// Thread safety: as `cancel_registration`.
template <class F>
class cancel_callback {
public:
    cancel_callback(const context& ctx, F f) : f_(std::move(f)) {
        if (!reg_.arm(ctx, &run, this)) {
            f_();
        }
    }
    cancel_callback(const cancel_callback&) = delete;
    cancel_callback& operator=(const cancel_callback&) = delete;

private:
    static void run(void* self) noexcept { static_cast<cancel_callback*>(self)->f_(); }
    F f_; // declared first: destroyed after reg_ has been disarmed
    cancel_registration reg_;
};

template <class F>
cancel_callback(const context&, F) -> cancel_callback<F>;

namespace detail {
/// Returns how many callbacks and children are registered on `ctx`'s own cancel state
/// (tests check that finished children are removed from their parent).
std::uint32_t registration_count(const context& ctx) noexcept;
} // namespace detail

} // namespace tether

#include "context/with_value.hpp" // context::value() and context_key
