#pragma once
// wait_list: the intrusive FIFO of suspended waits that every sync primitive keeps.
//   list_hook     the links a queued wait carries
//   wait_list     O(1) push, pop and unlink from the middle; no allocation
//   list_waiter   a waiter queued in a wait_list: canceled, it leaves the list
//   wait_awaiter  awaits a primitive until it is ready (event, wait_group)

#include "context/context.hpp"
#include "context/detail/spin_lock.hpp"
#include "runtime/detail/waiter.hpp"
#include "runtime/result.hpp"
#include "runtime/task.hpp"

#include <coroutine>
#include <system_error>

namespace tether::detail {

/// The links of an entry in a `wait_list`.
struct list_hook {
    list_hook* prev = nullptr;
    list_hook* next = nullptr;
    bool linked = false;
};

/// An intrusive FIFO of `list_hook`s: push at the back, pop at the front, and unlink any
/// entry (a canceled wait leaves from the middle).
///
/// Thread safety: none; the primitive that owns it serializes access (today: by running on
/// one loop).
class wait_list {
public:
    wait_list() noexcept = default;
    wait_list(const wait_list&) = delete;
    wait_list& operator=(const wait_list&) = delete;

    /// Returns true if nothing is queued.
    bool empty() const noexcept { return head_ == nullptr; }
    /// Returns the oldest entry, or null.
    list_hook* front() const noexcept { return head_; }

    /// Queues `n` at the back. `n` must not be linked.
    void push_back(list_hook* n) noexcept {
        n->prev = tail_;
        n->next = nullptr;
        if (tail_) {
            tail_->next = n;
        } else {
            head_ = n;
        }
        tail_ = n;
        n->linked = true;
    }

    /// Unlinks `n`, which must be linked in this list.
    void remove(list_hook* n) noexcept {
        if (n->prev) {
            n->prev->next = n->next;
        } else {
            head_ = n->next;
        }
        if (n->next) {
            n->next->prev = n->prev;
        } else {
            tail_ = n->prev;
        }
        n->prev = n->next = nullptr;
        n->linked = false;
    }

    /// Unlinks and returns the oldest entry, or null if the list is empty.
    list_hook* pop_front() noexcept {
        list_hook* n = head_;
        if (n) {
            remove(n);
        }
        return n;
    }

private:
    list_hook* head_ = nullptr;
    list_hook* tail_ = nullptr;
};

/// A coroutine suspended on a sync primitive (mutex, semaphore, event, wait_group): queued
/// in the primitive's wait list and armed on the awaiting task's context.
///
/// The primitive grants it with `grant()` (after popping it, or while it is still queued);
/// when the context is done first, it leaves the list and finishes with the context's error,
/// then `after_cancel` lets the primitive wake whoever the leaver was holding back.
///
/// Whoever unlinks the waiter owns it: a grant unlinks it (under the primitive's `lock`, if
/// it has one) and the cancel path does nothing to a waiter that is no longer linked, so a
/// waiter is either granted or canceled, never both: nothing a primitive hands over is lost
/// to a racing cancel. A primitive shared between loops (mutex, semaphore) has a `lock`; a
/// grant from another loop finishes the waiter on its own loop (`waiter::lp`).
struct list_waiter : list_hook {
    waiter w;
    wait_list* list = nullptr;
    spin_lock* lock = nullptr; // the primitive's lock, or null for a loop-local one
    /// Called on the loop's thread after a canceled waiter left the list (may be null).
    void (*after_cancel)(void* owner) noexcept = nullptr;
    void* owner = nullptr;

    list_waiter() noexcept = default;
    list_waiter(const list_waiter&) = delete;
    list_waiter& operator=(const list_waiter&) = delete;

    /// Arms on `c` and queues in `l` to resume `h`; returns false, queuing nothing, if `c`
    /// is already done (`w.error` then says why).
    bool enqueue(wait_list& l, const context& c, std::coroutine_handle<> h) noexcept;

    /// Leaves the list if still in it and finishes with success (the coroutine is queued to
    /// resume, not resumed inline). Called with the primitive's lock held, if it has one;
    /// from another loop's thread the finish is posted to the waiter's loop.
    void grant() noexcept {
        if (linked) {
            list->remove(this);
        }
        if (w.lp == current_loop()) {
            w.finish(no_error);
        } else {
            grant_remote();
        }
    }

    /// Returns the waiter behind a hook taken from a list of list_waiters.
    static list_waiter* from(list_hook* h) noexcept { return static_cast<list_waiter*>(h); }

private:
    void grant_remote() noexcept;
    static void canceled(waiter* w) noexcept;
};

/// Awaits `Sync` (event, wait_group) until `is_ready()` holds; `Sync` wakes its `waiters_`
/// with `grant()` when it becomes ready.
///
/// Movable until awaited, so that it can be passed to `with_context` and the like.
template <class Sync>
class wait_awaiter {
public:
    explicit wait_awaiter(Sync& s) noexcept : s_(&s) {}
    wait_awaiter(wait_awaiter&& o) noexcept : s_(o.s_) {}

    bool await_ready() const noexcept { return false; }
    template <class P>
    bool await_suspend(std::coroutine_handle<P> h) noexcept {
        const context& c = context_of(h);
        if (std::error_code e = c.err()) {
            lw_.w.error = e; // sticky: fail even if ready
            return false;
        }
        if (s_->is_ready()) {
            return false;
        }
        lw_.w.owner = owner_of(h);
        return lw_.enqueue(s_->waiters_, c, h);
    }
    result<void> await_resume() const noexcept { return lw_.w.error; }

private:
    Sync* s_;
    list_waiter lw_;
};

} // namespace tether::detail
