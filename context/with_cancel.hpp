#pragma once
// with_cancel: a child context and the move-only handle that cancels it.

#include "context/context.hpp"

#include <system_error>
#include <utility>

namespace tether {

/// Cancels the context it was returned with: move-only, idempotent, and it cancels when
/// destroyed (Go's `defer cancel()` that can't be forgotten).
///
/// Calling it releases the context's resources: its registration on its parent and its
/// deadline timer. Only the first call has an effect.
///
/// Thread safety: may be called from any thread, concurrently with other cancels.
class cancel_handle {
public:
    cancel_handle() noexcept = default;
    cancel_handle(cancel_handle&& o) noexcept : s_(std::exchange(o.s_, nullptr)) {}
    cancel_handle& operator=(cancel_handle&& o) noexcept {
        if (this != &o) {
            reset();
            s_ = std::exchange(o.s_, nullptr);
        }
        return *this;
    }
    ~cancel_handle() {
        if (s_ != nullptr) { // moved-from handles are common: skip the call
            reset();
        }
    }

    /// Cancels the context with `errc::canceled` (no-op if it is already done).
    void operator()() const noexcept { cancel({}); }
    /// Cancels the context with `errc::canceled` and `cause` (the cause of a
    /// `with_cancel_cause` context; an empty cause means `errc::canceled`).
    void operator()(std::error_code cause) const noexcept { cancel(cause); }
    /// Same as `operator()`.
    void cancel(std::error_code cause = {}) const noexcept;

    /// Cancels, then lets go of the context (the handle becomes empty).
    void reset() noexcept;
    /// Returns true if the handle still refers to a context.
    explicit operator bool() const noexcept { return s_ != nullptr; }

    explicit cancel_handle(detail::cancel_state* s) noexcept : s_(s) {}

private:
    detail::cancel_state* s_ = nullptr;
};

/// Returns a child of `parent` and the handle that cancels it.
///
/// The child is done when `cancel` is called or destroyed, or when `parent` is done,
/// whichever happens first; a parent that is already done gives a child born done.
/// Canceling the child never affects `parent` or its other children.
///
/// Errors: throws std::bad_alloc if the node can't be allocated (one allocation).
///
/// Example:
///
///     auto [ctx, cancel] = tether::with_cancel(parent);
///     // ... hand ctx to work; cancel() (or leaving the scope) stops it.
[[nodiscard]] std::pair<context, cancel_handle> with_cancel(const context& parent);

/// Like `with_cancel`, but the handle's cause (`cancel(cause)`) is kept and reported by
/// `tether::cause()`. `err()` is still `errc::canceled`.
[[nodiscard]] std::pair<context, cancel_handle> with_cancel_cause(const context& parent);

namespace detail {
/// The destroy function of the nodes `with_cancel` makes (a cancel state of their own, and
/// nothing more): what tells them from the others.
extern void (*const cancel_state_destroy)(node*) noexcept;

/// Returns true if `ctx`, made by `with_cancel`, is not done and is seen by nobody but its
/// holder: its only references are `ctx` itself and its cancel handle, and nothing is
/// registered on it (no callback, no child). Canceling such a context could change nothing
/// anyone can observe, so its owner may keep it for the next use instead (the HTTP server
/// reuses a request's context for the next request of the connection that way).
///
/// Thread safety: as any member of `ctx`; the answer holds until `ctx` is copied.
///
/// Inline: the HTTP server asks once per request (the call took 15 instructions more).
inline bool cancel_unobserved(const context& ctx) noexcept {
    node* n = ctx.node();
    if (n == nullptr || n->destroy != cancel_state_destroy) {
        // Not a with_cancel node of its own (a child born done has none; a spawned task's
        // carries the spawn's state too, and is the spawn's to end).
        return false;
    }
    auto* s = static_cast<cancel_state*>(n);
    // Two references, the context's and the handle's (with_cancel counts them): nobody else
    // can copy it, register on it or make a child of it, so after this acquire load only a
    // canceling parent can still touch it, under the node's lock.
    if (s->refs.load(std::memory_order_acquire) != 2 || s->is_done()) {
        return false;
    }
    // No lock: `head` has no writer on another thread. Only a registration links a callback,
    // and a registration needs the context, which only our caller holds; a parent's cancel
    // writes `head` only to unlink a callback from a list that is not empty, and it writes
    // the state first, which the acquire load above saw still 0 (a cancel that starts after
    // it finds the list empty and writes only the state, cause and flags). So the answer is
    // what the lock would have given: the parent's cancel may still come, as it may come
    // right after the lock is released.
    return s->head == nullptr;
}

/// Makes `n` a `with_cancel` child of `parent`: `n` is a `State` derived from `cancel_state`,
/// freshly made by `new` (the node allocator), its own fields set or left to set later (the
/// parent's cancel never reads them). Unlike `with_cancel`, a parent that is already done
/// still gives `n` a cancel state of its own, born done with the parent's error and cause.
///
/// `n` leaves with two references: one for a context (`context::adopt(n)`), one for its
/// cancel (`cancel_handle{n}`, or a cancel and a `release()` of its own). `destroy` frees it
/// once the last reference is gone.
///
/// A type that carries more than a cancel state (a spawned task's state) costs one
/// allocation that way, where a separate `with_cancel` would be a second.
void init_cancel_child(cancel_state* n, const context& parent,
                       void (*destroy)(node*) noexcept) noexcept;

/// Deletes `n`, a `State` made by `new`: a node's `destroy` for `init_cancel_child`.
template <class State>
void destroy_node(node* n) noexcept {
    delete static_cast<State*>(n);
}
} // namespace detail

} // namespace tether
