#pragma once
// The nodes of a context tree. Users hold them through `tether::context`.

#include "context/clock.hpp"
#include "context/detail/spin_lock.hpp"
#include "context/errc.hpp"

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <new>
#include <string>
#include <system_error>
#include <thread>
#include <utility>

namespace tether::detail {

struct cancel_state;

// `deadline`: a cancel node with a deadline of its own (Go's timerCtx), even one equal to its
// parent's; `cancel`: one whose deadline, if any, is inherited.
enum class node_kind : std::uint8_t { background, todo, cancel, deadline, value, without_cancel };

/// Returns a block of at least `size` bytes for a node, from the calling thread's cache of
/// freed node blocks when it has one of that size, else from `::operator new`.
///
/// Errors: throws std::bad_alloc.
void* allocate_node(std::size_t size);
/// Returns a nonzero number naming the calling thread among the threads alive (numbers are
/// handed out in order, wrapping after 2^32 - 1 threads).
std::uint32_t thread_tag() noexcept;
/// Gives back a block that `allocate_node(size)` returned, on any thread: it joins the calling
/// thread's cache, or goes back to `::operator delete` when the cache is full.
void deallocate_node(void* p, std::size_t size) noexcept;
/// Returns how many freed node blocks the calling thread keeps for reuse (tests).
std::size_t cached_node_blocks() noexcept;
/// Returns how many cached blocks threads have given back to `::operator delete` when they
/// exited, since the process started (tests).
std::size_t reaped_node_blocks() noexcept;

/// One link of a context chain. Every derived context is one allocation of a type
/// derived from `node`; the chain is immutable once built, except for the cancel state.
struct node {
    std::atomic<std::uint32_t> refs{1};
    node_kind kind = node_kind::background;
    bool immortal = false;
    node* parent = nullptr;           // strong reference, null for roots
    cancel_state* canceler = nullptr; // nearest cancelable ancestor-or-self; null: never done
    tether::clock* clk = nullptr;     // never null
    time_point deadline = time_point::max(); // effective deadline (min rule); max(): none
    void (*destroy)(node*) noexcept = nullptr;

    void add_ref() noexcept {
        if (!immortal) {
            refs.fetch_add(1, std::memory_order_relaxed);
        }
    }
    void release() noexcept {
        if (!immortal && drop_ref()) {
            release_slow();
        }
    }
    /// Drops a reference; returns true if it was the last.
    ///
    /// The last reference needs no atomic read-modify-write: whoever holds it is the only
    /// one who could take or drop another, so seeing 1 (with acquire, after every other
    /// owner's release) is enough.
    bool drop_ref() noexcept {
        return refs.load(std::memory_order_acquire) == 1 ||
               refs.fetch_sub(1, std::memory_order_acq_rel) == 1;
    }
    void release_slow() noexcept;

    // Every node type (value nodes too) comes from the per-thread cache of node blocks: a
    // context made and dropped costs no malloc once the thread has dropped one like it.
    static void* operator new(std::size_t size) { return allocate_node(size); }
    static void operator delete(void* p, std::size_t size) noexcept { deallocate_node(p, size); }
    // Over-aligned values bypass the cache.
    static void* operator new(std::size_t size, std::align_val_t al) {
        return ::operator new(size, al);
    }
    static void operator delete(void* p, std::size_t size, std::align_val_t al) noexcept {
        ::operator delete(p, size, al);
    }
};

/// Tag of the constructors that leave uninitialized the fields written before every read:
/// for the waiters an await makes each time on hot paths (a stream's reads and writes),
/// where zeroing them cost a store each.
struct lazy_init_t {
    explicit lazy_init_t() = default;
};
inline constexpr lazy_init_t lazy_init{};

/// A registration on a cancel state: linked in its list until canceled or removed.
///
/// Once the canceler has called `fn` it never touches the node again, so `fn` may free
/// the node (or drop the last reference to what owns it).
struct callback_node {
    callback_node() noexcept
        : prev(nullptr), next(nullptr), fn(nullptr), data(nullptr), linked(false),
          holds_ref(false) {}
    /// Every field is set by add_callback() and the registration that links the node before
    /// anything reads it.
    explicit callback_node(lazy_init_t) noexcept {}

    callback_node* prev;
    callback_node* next;
    // Null for a child's `parent_link`: the canceler cancels the child (data) itself.
    void (*fn)(callback_node*) noexcept;
    void* data; // what fn works on
    bool linked;
    // A cancel_registration's: it holds a reference on the cancel state (not arm_borrowed).
    // Here, in the padding after `linked`, so that the registration stays 56 bytes.
    bool holds_ref;
};

/// A node that can be canceled: with_cancel, with_deadline and their cause variants.
///
/// The small fields come first and together, so that the node stays small (a deep tree is
/// thousands of them); what only a deadline needs is in `deadline_state`.
struct cancel_state : node {
    // 0 active; done: 1 canceled, 2 deadline exceeded (err(), a context's error being one of
    // those two, as in Go: a byte where an error_code takes 16, and a load that tells both).
    std::atomic<std::uint8_t> state{0};
    spin_lock lock;
    // Set (release) once the parent's cancel state will never touch this node again: it was
    // never linked there, it was unlinked, or the parent's cancel has finished with it. Its
    // owner may then free it without asking the parent (remove_callback takes its lock).
    std::atomic<bool> unlinked{false};
    // Set with the state, under the lock, while a cancel runs the node's callbacks and
    // cancels its subtree (running_thread is that cancel's thread); a concurrent cancel waits
    // until it is clear.
    std::atomic<bool> propagating{false};
    // The thread running the cancel (thread_tag(), not std::thread::id: 4 bytes, in what
    // would be padding, keep the state in a smaller malloc chunk).
    std::uint32_t running_thread = 0;
    // In the node's first 64 bytes with `refs`, `destroy` and `state`: what an owner asking
    // cancel_unobserved() reads.
    callback_node* head = nullptr;
    std::error_code cause;
    // The callback being run by the canceler; written under `lock`, and read without it by
    // remove_callback() waiting for that callback to return.
    std::atomic<callback_node*> running{nullptr};
    callback_node parent_link; // our registration on parent->canceler

    static constexpr std::uint8_t canceled_state = 1;
    static constexpr std::uint8_t deadline_exceeded_state = 2;

    bool is_done() const noexcept { return state.load(std::memory_order_acquire) != 0; }
    /// The error of a done state (read after is_done()).
    std::error_code error() const noexcept {
        return state.load(std::memory_order_relaxed) == deadline_exceeded_state
                   ? make_error_code(errc::deadline_exceeded)
                   : make_error_code(errc::canceled);
    }

    /// Links `cb`; returns false (and links nothing) if already done.
    bool add_callback(callback_node* cb) noexcept;
    /// Unlinks `cb`, or waits until it has finished running on another thread. Returns at
    /// once when called from inside `cb` itself.
    void remove_callback(callback_node* cb) noexcept;
    /// Cancels with `err` and `cause` (cause defaults to err) unless already done.
    ///
    /// With `remove_from_parent`, also unlinks the node from its parent's cancel state, or
    /// waits while the parent is propagating into it on another thread: once this returns,
    /// the parent no longer refers to this node, so the caller may drop its reference.
    void cancel(std::error_code e, std::error_code c, bool remove_from_parent) noexcept;
    /// The rest of `cancel()` for a node with registrations: called with the lock held and
    /// the node just made done, runs them and cancels the subtree.
    void cancel_subtree(bool remove_from_parent) noexcept;
    /// Makes sure the parent's cancel state no longer refers to this node: unlinks it, or
    /// waits while the parent's cancel, on another thread, is still propagating into it.
    void unlink_from_parent() noexcept {
        if (!unlinked.load(std::memory_order_acquire)) {
            unlink_from_parent_slow();
        }
    }
    void unlink_from_parent_slow() noexcept;
    /// Waits until the cancel propagating through this node on another thread is done.
    void wait_propagation() noexcept;
    /// Called under `lock` by the cancel that made the node done: returns true if it is a
    /// deadline_state whose timer was scheduled, and marks that timer no longer armed.
    inline bool take_timer() noexcept;
};

struct deadline_state;

/// A second timer for a deadline, on the clock of a loop that waits under it: that loop
/// fires the deadline on its own thread, whatever the thread of the node's clock is doing
/// (see arm_foreign_deadline).
///
/// Owned by whoever takes it out of its clock's heap: the cancel that unschedules it (under
/// the owner's lock), its own firing, or the loop that drops it on destruction.
struct foreign_timer {
    timer_node timer;
    deadline_state* owner = nullptr; // holds a reference on it
    tether::clock* clk = nullptr;    // where `timer` is scheduled
    foreign_timer* prev = nullptr;   // on owner->foreign, under the owner's lock
    foreign_timer* next = nullptr;
    bool linked = false;
};

/// A cancel state with a deadline of its own (with_deadline, with_timeout): the timer that
/// fires it, armed while `timer_armed`.
struct deadline_state : cancel_state {
    timer_node timer;
    std::error_code deadline_cause; // cause reported when the deadline fires
    // Timers of loops that wait under this deadline on other clocks (under `lock`; only
    // while `timer_armed`, so that the cancel of a node without one doesn't look).
    foreign_timer* foreign = nullptr;
    // The timer is scheduled; written under `lock`. Here and not in cancel_state, which it
    // would push into the next size class (every spawned task has a cancel_state).
    bool timer_armed = false;
};

inline bool cancel_state::take_timer() noexcept {
    return kind == node_kind::deadline &&
           std::exchange(static_cast<deadline_state*>(this)->timer_armed, false);
}

/// Makes sure that `clk`, a loop's clock with the time base of `c`'s clock, fires `c`'s
/// deadline too: schedules one foreign_timer per deadline node and clock, unless there is
/// one already, or the node is done. When it fires it cancels the node as the node's own
/// timer would (errc::deadline_exceeded, the deadline's cause); whichever fires first wins.
/// `c` must have a deadline. Out of memory, it does nothing: the node's own timer remains.
///
/// Thread safety: any thread, but the clock fires the timer on its loop's thread.
void arm_foreign_deadline(cancel_state* c, tether::clock& clk) noexcept;
/// Returns true if `t` is a foreign_timer's.
bool is_foreign_timer(const timer_node* t) noexcept;
/// Releases the foreign timer `t`, which its clock has taken out of its heap without firing
/// it (its loop is being destroyed).
void drop_foreign_timer(timer_node* t) noexcept;
/// Returns how many foreign timers exist (tests).
std::size_t foreign_timer_count() noexcept;

inline node* ancestor_canceler_node(node* n) noexcept {
    return n ? n->canceler : nullptr;
}

} // namespace tether::detail
