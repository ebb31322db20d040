#pragma once
// The base of every suspendable awaitable: a suspended coroutine, the context it waits
// under, and how it is canceled.

#include "context/context.hpp"

#include <atomic>
#include <cassert>
#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <system_error>

namespace tether {
class loop;
}

namespace tether::detail {

struct await_chain;

/// What a chain of awaits belongs to: a spawned task's state, or the driver of one child of
/// a when_all, when_any or task_group. Touched on the thread running its task only.
///
/// One word, so that a million sleeping tasks don't pay for it: the awaits armed so far
/// (below `chain_after`), then the chain's address.
struct chain_owner {
    /// The armed await that makes the chain. A chain costs ~170 bytes and saves ~140
    /// instructions per await: tasks that wait a few times (a sleeper, an idle connection)
    /// are better off without it.
    static constexpr std::uintptr_t chain_after = 4;
    std::uintptr_t state = 0;

    await_chain* chain() const noexcept {
        return state >= chain_after ? reinterpret_cast<await_chain*>(state) : nullptr;
    }
};

/// A coroutine suspended on some event, cancelable through its context.
///
/// Protocol (all on the owning loop's thread unless said otherwise):
/// - `arm(ctx)` before suspending: false if ctx is already done (then `error` holds why and
///   the caller must not suspend).
/// - The event completes: `finish(err)` disarms, makes sure no cross-thread cancel still
///   refers to this waiter, and queues the coroutine to resume.
/// - The context is done: on the loop's thread `on_cancel(this)` runs at once; from another
///   thread the waiter is queued on its loop, which calls `on_cancel` on its own thread
///   unless the waiter finished first. `on_cancel` either finishes the waiter with
///   `cancel_error()` or starts a kernel cancel whose completion finishes it.
struct waiter_ext;

struct waiter {
    // Only `data` is cold: what a registration of its own and a cross-thread cancel need
    // (waiter_ext) is elsewhere, made by the first arm that needs it. An await under its
    // task's chain (a connection's reads and writes) or under a context that is never done
    // has none: its waiter is the 80 bytes every await touches (arm, finish, resume), next
    // to the fields the awaitable adds after it, so a connection's read or write touches two
    // or three cache lines of its frame. With many connections each round trip finds them
    // cold.
    void* data; // for on_cancel
    // The registration and the remote-queue place, once an arm needed them (null before);
    // kept until the waiter is destroyed. Tested by every finish.
    waiter_ext* ext;
    union {
        // In a union so that the lazy constructor leaves it uninitialized.
        std::coroutine_handle<> handle;
    };
    std::error_code error;
    const context* ctx;
    void (*on_cancel)(waiter*) noexcept;
    // Set by the awaitable before arm(), with owner_of(h): the spawned task (or fan-out
    // child) the awaiting coroutine runs in. Null: arm() always arms a registration.
    chain_owner* owner;
    loop* lp; // last of the pointers: await_chain's `bound` and `current` follow it
    bool completed;
    // Set while queued on the remote queue (guarded by the loop's remote mutex). Next to
    // `completed`: finish() tests both with one load (completed_or_queued).
    bool remote_queued;
    bool cancel_requested;
    bool on_chain; // the current await of its owner's chain (see await_chain)

    waiter() noexcept
        : data(nullptr), ext(nullptr), handle(nullptr), error(no_error), ctx(nullptr),
          on_cancel(nullptr), owner(nullptr), lp(nullptr), completed(false), remote_queued(false),
          cancel_requested(false), on_chain(false) {}
    /// Leaves uninitialized what is set before every read: `lp`, `handle`, `on_cancel` and
    /// `owner` (by the awaitable, before arm()), `ctx` (by arm()) and `data`. For the waiters a
    /// stream's reads and writes make per await.
    explicit waiter(lazy_init_t) noexcept
        : ext(nullptr), error(no_error), completed(false), remote_queued(false),
          cancel_requested(false), on_chain(false) {}
    waiter(const waiter&) = delete;
    waiter& operator=(const waiter&) = delete;
    ~waiter() {
        if (on_chain) {
            leave_chain();
        }
        if (ext != nullptr) {
            release_ext();
        }
    }

    /// Returns true while a registration of its own is armed.
    bool has_registration() const noexcept;
    /// Disarms its own registration, if it has one (waiting for a callback running on
    /// another thread).
    void disarm_own() noexcept;
    /// Returns the waiter's registration and remote-queue place, making them first.
    waiter_ext& ensure_ext() noexcept;
    /// Arms cancellation on `c`; returns false (with `error` set) if `c` is already done.
    ///
    /// With `owner` set, an await under the cancel state its chain is armed on arms
    /// nothing: it becomes the chain's current await (see await_chain).
    ///
    /// If c's deadline is another clock's (another loop's, or the real clock's thread), `lp`'s
    /// clock gets a timer for it too (arm_foreign_deadline), so that the wait times out on
    /// its own loop; a deadline of lp's own clock costs a pointer compare. A chain does this
    /// once, when it is made.
    bool arm(const context& c) noexcept;
    /// Arms on the cancel state behind a done signal (not the task's own context).
    bool arm_on(cancel_state* c) noexcept;
    /// Finishes the waiter with `e` and queues its coroutine; a second call is ignored.
    void finish(std::error_code e) noexcept;
    /// Finishes without queueing the coroutine (the caller resumes it another way).
    bool finish_quietly(std::error_code e) noexcept;
    /// Returns the error a canceled wait reports: the context's err().
    std::error_code cancel_error() const noexcept;
    /// Stops being its chain's current await.
    void leave_chain() noexcept;
    /// Returns `completed || remote_queued`: the two adjacent bytes with one load. Only once
    /// the registration is known disarmed (or absent): a cancel callback on another thread may be
    /// queueing an armed waiter (writing `remote_queued`).
    bool completed_or_queued() const noexcept {
        static_assert(offsetof(waiter, remote_queued) == offsetof(waiter, completed) + 1);
        std::uint16_t both;
        std::memcpy(&both,
                    reinterpret_cast<const unsigned char*>(this) + offsetof(waiter, completed),
                    sizeof both);
        return both != 0;
    }
    /// Tells the compiler what every end of an await leaves: off its chain and disarmed
    /// (finish() does both; an arm that fails sets neither), so that the destructor's two
    /// tests fold away in an await_resume() that calls this.
    void assume_released() const noexcept {
        assert(!on_chain && !has_registration());
        if (on_chain) {
            __builtin_unreachable();
        }
    }

private:
    void release_ext() noexcept;
};

/// The part of a waiter that only an await arming a registration of its own needs: the
/// registration, and the waiter's place in its loop's queue of cancels from other threads.
/// Made from the thread's frame lists (frame_allocator.hpp) by the first arm that needs it,
/// freed with the waiter.
struct waiter_ext {
    cancel_registration reg;
    // Cross-thread cancel queue (guarded by the loop's remote mutex).
    waiter* remote_prev = nullptr;
    waiter* remote_next = nullptr;
};

inline bool waiter::has_registration() const noexcept {
    return ext != nullptr && ext->reg.is_armed();
}

inline void waiter::disarm_own() noexcept {
    if (ext != nullptr) {
        ext->reg.disarm();
    }
}

/// One cancel registration shared by the awaits of a spawned task (or fan-out child): its own
/// frame and the tasks it awaits in turn, which are suspended at one place at a time.
///
/// An await links and unlinks a callback on its context's cancel state under that state's
/// lock; a task that waits many times under one context (a connection's reads and writes, a
/// channel loop) pays that once instead. The chain is made at the task's fourth armed await
/// (chain_owner::chain_after), armed on that await's cancel state, and torn down when the
/// task ends or moves to another loop.
/// An await under the same cancel state only sets `current`; when the state is canceled,
/// `current`'s on_cancel runs on the task's loop (through its remote queue when the cancel
/// comes from another thread), as it would for the await's own registration.
///
/// Thread safety: the task's loop thread only (the registration's callback excepted).
///
/// Layout: an await under the chain reads `w.lp`, `bound` and `current`, which end the
/// struct, in one cache line (the struct is aligned to one).
struct alignas(64) await_chain {
    waiter w;                      // the registration, its loop and its remote-queue place
    cancel_state* bound = nullptr; // what w is armed on
    waiter* current = nullptr;     // the await suspended under `bound`, if any

    /// Returns the chain of `owner` that an await under `c` on this thread may use, making
    /// it at the owner's chain_after-th armed await; null if the await must arm its own.
    static await_chain* of(chain_owner* owner, cancel_state* c) noexcept;
    /// Tears down `owner`'s chain, if any; on the loop thread it was made on.
    static void end(chain_owner* owner) noexcept;
};

/// Everything waiter::arm() does but its common cases (loop.cpp).
bool arm_slow(waiter* w, const context& c) noexcept;

/// waiter::arm() for an await on loop `here` (the loop running the awaiting coroutine), with
/// its common cases inline for the hot paths of runtime and net: an await under a context that
/// is never done (background(): its done channel is nil, in Go's terms, so there is nothing to
/// register), and another await of a task whose chain is armed on this context's cancel state
/// (a connection's reads and writes), on its loop.
///
/// `Fresh`: the caller knows the waiter is neither on its chain nor armed, nor was it ever
/// (one made for this await: its flags are as constructed), which saves testing and resetting
/// them.
template <bool Fresh = false>
inline bool arm_inline(waiter& w, const context& c, const loop* here) noexcept {
    w.ctx = &c;
    if constexpr (Fresh) {
        assert(!w.completed && !w.cancel_requested && "as constructed");
    } else {
        w.completed = false;
        w.cancel_requested = false;
    }
    const node* n = c.node();
    if (Fresh || (!w.on_chain && !w.has_registration())) {
        assert(!w.on_chain && !w.has_registration());
        cancel_state* cs = n != nullptr ? n->canceler : nullptr;
        if (cs == nullptr) {
            return true;
        }
        if (w.owner != nullptr) {
            if (await_chain* ch = w.owner->chain();
                ch != nullptr && ch->bound == cs && ch->w.lp == here && !cs->is_done()) {
                ch->current = &w;
                w.on_chain = true;
                return true;
            }
        }
    }
    return arm_slow(&w, c);
}

} // namespace tether::detail
