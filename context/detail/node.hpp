#pragma once
// The nodes of a context tree. Users hold them through `tether::context`.

#include "context/clock.hpp"
#include "context/detail/spin_lock.hpp"

#include <atomic>
#include <cstdint>
#include <string>
#include <system_error>
#include <thread>

namespace tether::detail {

struct cancel_state;

// `deadline`: a cancel node with a deadline of its own (Go's timerCtx), even one equal to its
// parent's; `cancel`: one whose deadline, if any, is inherited.
enum class node_kind : std::uint8_t { background, todo, cancel, deadline, value, without_cancel };

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
    const void* key = nullptr;               // value nodes: the key's address
    void (*destroy)(node*) noexcept = nullptr;
    void (*describe)(const node*, std::string&) = nullptr; // value nodes: "WithValue(k, v)"

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
};

/// A registration on a cancel state: linked in its list until canceled or removed.
///
/// Once the canceler has called `fn` it never touches the node again, so `fn` may free
/// the node (or drop the last reference to what owns it).
struct callback_node {
    callback_node* prev = nullptr;
    callback_node* next = nullptr;
    // Null for a child's `parent_link`: the canceler cancels the child (data) itself.
    void (*fn)(callback_node*) noexcept = nullptr;
    void* data = nullptr; // what fn works on
    bool linked = false;
    // A cancel_registration's: it holds a reference on the cancel state (not arm_borrowed).
    // Here, in the padding after `linked`, so that the registration stays 64 bytes.
    bool holds_ref = false;
};

/// A node that can be canceled: with_cancel, with_deadline and their cause variants.
///
/// The small fields come first and together, so that the node stays small (a deep tree is
/// thousands of them); what only a deadline needs is in `deadline_state`.
struct cancel_state : node {
    std::atomic<std::uint8_t> state{0}; // 0 active, 1 done
    spin_lock lock;
    bool timer_armed = false;    // a deadline_state whose timer is scheduled
    std::uint32_t callbacks = 0; // registrations currently linked (children included)
    std::error_code err;         // written before state becomes 1
    std::error_code cause;
    callback_node* head = nullptr;
    // The callback being run by the canceler; written under `lock`, and read without it by
    // remove_callback() waiting for that callback to return.
    std::atomic<callback_node*> running{nullptr};
    std::thread::id running_thread;
    callback_node parent_link; // our registration on parent->canceler

    bool is_done() const noexcept { return state.load(std::memory_order_acquire) != 0; }

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
};

/// A cancel state with a deadline of its own (with_deadline, with_timeout): the timer that
/// fires it, armed while `timer_armed`.
struct deadline_state : cancel_state {
    timer_node timer;
    std::error_code deadline_cause; // cause reported when the deadline fires
};

inline node* ancestor_canceler_node(node* n) noexcept {
    return n ? n->canceler : nullptr;
}

} // namespace tether::detail
