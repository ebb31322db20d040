#pragma once
// loop: one io_uring, its ready queue and its timers, run by one thread.

#include "context/clock.hpp"
#include "context/context.hpp"
#include "runtime/task.hpp"

#include <chrono>
#include <coroutine>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <utility>

namespace tether {

namespace detail {
class loop_impl;
struct completion;
struct waiter;
} // namespace detail

/// Thrown by `loop`'s constructor when io_uring can't be set up (old kernel, or a
/// container's seccomp profile that blocks io_uring_setup); `what()` says which.
class uring_unavailable : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

/// An event loop on one io_uring: runs `task`s, their I/O and their timers on one thread.
///
/// The ring uses IORING_SETUP_SINGLE_ISSUER | DEFER_TASKRUN (or COOP_TASKRUN, or nothing,
/// as the kernel allows). Each turn runs the ready coroutines, fires due timers, then makes
/// one `io_uring_enter` that submits everything queued and waits for at least one completion
/// (or the next timer), and reaps completions in a batch.
///
/// Thread safety: a loop is driven by one thread at a time (the first that runs it; the ring
/// is bound to it). `post`, `stop`, `wake` and cancellation of its contexts may come from any
/// thread; coroutines always resume on the loop's thread.
class loop {
public:
    struct options {
        /// Submission queue entries (the completion queue gets twice as many).
        unsigned entries = 1024;
        /// The loop's clock: null for the real steady clock, or a `manual_clock` in tests.
        /// Lifetime: must outlive the loop.
        tether::clock* clock = nullptr;
        /// Ask for SINGLE_ISSUER | DEFER_TASKRUN (falls back when the kernel refuses).
        bool defer_taskrun = true;
        /// Let other loops wake this one with IORING_OP_MSG_RING where the kernel has it
        /// (false: always through the wake pipe, as a foreign thread does).
        bool msg_ring = true;
        /// How long an idle loop busy-polls for work from other loops before it sleeps in
        /// the kernel (0: it sleeps at once). A loop that spins is woken without a MSG_RING
        /// or a syscall, for the price of the CPU it burns while idle: worth it when each
        /// loop has a core to itself. The spin also ends at the next timer and when the
        /// kernel has a completion for the loop. A spin that finds its thread was preempted
        /// (more runnable threads than cores: spinning would only take CPU from the thread
        /// it waits for) ends, and the loop sleeps at once for the next 20 ms. The spin
        /// adapts: one that ends empty-handed halves the next (down to spin / 64), one that
        /// finds work doubles it (up to spin). Only a loop that spins asks for
        /// IORING_SETUP_TASKRUN_FLAG (the kernel's sign of completions queued for it), which
        /// costs the kernel an atomic on every batch of completions.
        duration spin = duration::zero();
        /// Slots in the ring's table of registered files (also capped by RLIMIT_NOFILE;
        /// 0: none). A stream (or an HTTP server's connection) that has issued a few dozen
        /// reads and writes on this loop registers its fd in a free slot, and its later SQEs
        /// on this loop name the slot (IOSQE_FIXED_FILE): the kernel then takes no file
        /// reference per operation. Those beyond the table keep their plain fds. The table
        /// is made on first use.
        unsigned fixed_files = 1024;
    };

    /// Sets up the ring. Errors: throws `uring_unavailable` if io_uring can't be used.
    loop();
    explicit loop(options opts);
    loop(const loop&) = delete;
    loop& operator=(const loop&) = delete;
    ~loop();

    /// Runs until `stop()` is called.
    void run();
    /// Makes `run()` return after the current turn. Thread safety: any thread.
    void stop() noexcept;

    /// Runs one turn, waiting at most `timeout` for something to do (nullopt: until
    /// something happens). Returns true if any coroutine, timer or completion was processed.
    bool run_once(std::optional<duration> timeout = std::nullopt);
    /// Runs what is ready without blocking; returns true if anything was processed.
    bool poll() { return run_once(duration::zero()); }
    /// Runs turns until nothing is ready and no completion is waiting (timers in the future
    /// and I/O in flight may remain). Tests use it with a manual clock.
    void run_until_idle();

    /// Runs `t` under `ctx` (default: this loop's background) to completion, driving the
    /// loop; returns its value or rethrows its exception.
    template <class T>
    T block_on(task<T> t);
    template <class T>
    T block_on(context ctx, task<T> t);

    /// Queues `fn` to run on the loop's thread. Thread safety: any thread.
    void post(std::function<void()> fn);

    /// Returns a file descriptor that becomes readable when the loop has work, for a
    /// foreign epoll/poll loop to watch; then call `poll()`. Created on first call
    /// (io_uring_register_eventfd). The loop drains it itself.
    ///
    /// Work is a completion, a post or cancel from another thread, a coroutine left ready,
    /// or a timer (sleep or context deadline) that is due: once an fd exists, each turn
    /// submits what it queued and keeps a kernel timeout on the next timer, so the foreign
    /// loop needs no timeout of its own. It is readable right after the first call (the first
    /// turn submits the loop's own wake read), and may be readable once more after a turn
    /// that reaped completions; `poll()` then finds nothing and returns false.
    ///
    /// With DEFER_TASKRUN the kernel still signals the eventfd when a completion is queued
    /// for the ring's thread (tests/runtime/embed_test.cpp checks it), so the fd works with
    /// every ring flag set.
    int fd();

    /// Returns the loop's clock: the clock of `background()` and of every context derived
    /// from it (its deadlines fire on this loop).
    tether::clock& clock() noexcept;
    /// Returns a root context on the loop's clock.
    context background() const noexcept;

    /// Returns the loop running on the calling thread, or null.
    static loop* current() noexcept;

    /// Returns the ring's setup flags that the kernel accepted (IORING_SETUP_*).
    std::uint32_t ring_flags() const noexcept;
    /// Returns how many slots of the table of registered files streams and HTTP connections
    /// hold (for tests).
    unsigned fixed_files_in_use() noexcept;

    // ---- for awaitables (detail) -------------------------------------------------------
    /// Queues a coroutine to resume on this loop (loop thread only).
    void schedule(std::coroutine_handle<> h);
    /// Queues a coroutine to resume on this loop. Thread safety: any thread (from another
    /// loop it wakes this one with one MSG_RING SQE, from a foreign thread through a pipe).
    void post_resume(std::coroutine_handle<> h);
    detail::loop_impl& impl() noexcept { return *impl_; }

private:
    std::unique_ptr<detail::loop_impl> impl_;
};

/// Runs `main` on a new loop until it completes and returns its value (Go's `main`).
template <class T>
T run(task<T> main) {
    loop l;
    return l.block_on(std::move(main));
}

// ---- implementation ----------------------------------------------------------------------

namespace detail {

/// What a task run to completion by block_on left: its value or its exception.
template <class T>
struct root_outcome {
    std::conditional_t<std::is_void_v<T>, char, std::optional<T>> value;
    std::exception_ptr error;

    /// Awaits `t` and keeps its value or exception (run inside block_on's root coroutine).
    task<void> settle(task<T> t) {
        try {
            if constexpr (std::is_void_v<T>) {
                co_await std::move(t);
            } else {
                value.emplace(co_await std::move(t));
            }
        } catch (...) {
            error = std::current_exception();
        }
    }
    /// Rethrows the task's exception, or returns its value.
    T take() {
        if (error) {
            std::rethrow_exception(error);
        }
        if constexpr (!std::is_void_v<T>) {
            return std::move(*value);
        }
    }
};

template <class T>
struct root_state : root_outcome<T> {
    bool done = false;
};

struct root_task {
    struct promise_type : promise_base {
        root_task get_return_object() noexcept {
            return {std::coroutine_handle<promise_type>::from_promise(*this)};
        }
        std::suspend_always initial_suspend() const noexcept { return {}; }
        std::suspend_always final_suspend() const noexcept { return {}; }
        void return_void() const noexcept {}
        void unhandled_exception() const noexcept { std::terminate(); }
    };
    std::coroutine_handle<promise_type> h;
};

template <class T>
root_task drive(const context* ctx, task<T> t, root_state<T>* st) {
    co_await set_context{ctx};
    co_await st->settle(std::move(t));
    st->done = true;
}

} // namespace detail

template <class T>
T loop::block_on(task<T> t) {
    return block_on(background(), std::move(t));
}

template <class T>
T loop::block_on(context ctx, task<T> t) {
    detail::root_state<T> st;
    detail::root_task r = detail::drive(&ctx, std::move(t), &st);
    schedule(r.h);
    while (!st.done) {
        run_once();
    }
    r.h.destroy();
    return st.take();
}

} // namespace tether
