#pragma once
// runtime: N loops on N threads (thread-per-core), started and stopped as one.
//   runtime        the loops and their threads; block_on runs a main task on loop 0
//   run(n, main)   Go's main on n loops
// spawn_on (runtime/spawn.hpp) and switch_to (runtime/switch_to.hpp) move work between them.

#include "runtime/loop.hpp"
#include "runtime/spawn.hpp"
#include "runtime/switch_to.hpp"
#include "runtime/task.hpp"

#include <barrier>
#include <condition_variable>
#include <cstddef>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

namespace tether {

/// Runs N loops, each on its own thread, as one: the constructor starts them, the destructor
/// stops and joins them.
///
/// Each loop has its own ring, ready queue and timers; a task stays on the loop it started
/// on unless it moves (`switch_to`) or is started elsewhere (`spawn_on`). Loops wake one
/// another with one IORING_OP_MSG_RING SQE (a pipe write where the kernel lacks it).
///
/// Lifetime: tasks still suspended when the runtime is destroyed are not resumed; stop them
/// first (cancel their context) as with one loop.
///
/// Thread safety: `block_on`, `loop(i)`, `size()` and `stop()` may be called from any thread
/// but a loop's own (`block_on` from a loop thread would deadlock).
///
/// Example:
///
///     tether::runtime rt({.loops = 2});
///     int n = rt.block_on([&]() -> task<int> {
///         auto h = co_await spawn_on(rt.loop(1), count_primes(1'000'000));
///         co_return *co_await h;
///     }());
class runtime {
public:
    struct options {
        /// How many loops (threads): 0 for std::thread::hardware_concurrency() (at least 1).
        std::size_t loops = 0;
        /// Pin loop i's thread to CPU i (modulo the CPUs the process may use).
        bool pin = false;
        /// Options for every loop (each loop still gets its own ring).
        tether::loop::options loop_options{};
    };

    /// Starts the loops. Errors: throws `uring_unavailable` if io_uring can't be used.
    runtime();
    explicit runtime(options opts);
    runtime(const runtime&) = delete;
    runtime& operator=(const runtime&) = delete;
    /// Stops the loops and joins their threads.
    ~runtime();

    /// Returns how many loops run.
    std::size_t size() const noexcept { return loops_.size(); }
    /// Returns loop `i` (0 <= i < size()).
    tether::loop& loop(std::size_t i) noexcept { return *loops_[i]; }

    /// Runs `main` on loop 0 under that loop's background context, blocks the calling thread
    /// until it completes, and returns its value or rethrows its exception. The loops keep
    /// running afterwards (for the next `block_on`) until the runtime is destroyed.
    template <class T>
    T block_on(task<T> main);

    /// Makes every loop stop after its current turn (idempotent); the destructor joins them.
    void stop() noexcept;

private:
    struct done_signal {
        std::mutex mu;
        std::condition_variable cv;
        bool done = false;
        void wait();
        void set();
    };
    template <class T>
    struct root_state : detail::root_outcome<T> {
        done_signal signal;
    };
    /// A coroutine that signals once it is suspended for good (its caller may then destroy
    /// it from another thread).
    struct root {
        struct promise_type : detail::promise_base {
            done_signal* signal = nullptr;
            root get_return_object() noexcept {
                return {std::coroutine_handle<promise_type>::from_promise(*this)};
            }
            std::suspend_always initial_suspend() const noexcept { return {}; }
            struct final_awaiter {
                bool await_ready() const noexcept { return false; }
                void await_suspend(std::coroutine_handle<promise_type> h) const noexcept {
                    h.promise().signal->set();
                }
                void await_resume() const noexcept {}
            };
            final_awaiter final_suspend() const noexcept { return {}; }
            void return_void() const noexcept {}
            void unhandled_exception() const noexcept { std::terminate(); }
        };
        std::coroutine_handle<promise_type> h;
    };
    template <class T>
    static root drive(const context* ctx, task<T> t, root_state<T>* st);

    std::vector<std::unique_ptr<tether::loop>> loops_;
    std::vector<std::thread> threads_;
    std::unique_ptr<std::barrier<>> barrier_;
};

/// Runs `main` on a runtime of `loops` loops (0: one per core) until it completes, and
/// returns its value (Go's `main` with GOMAXPROCS=loops).
template <class T>
T run(std::size_t loops, task<T> main) {
    runtime rt(runtime::options{.loops = loops});
    return rt.block_on(std::move(main));
}

// ---- implementation ----------------------------------------------------------------------

template <class T>
runtime::root runtime::drive(const context* ctx, task<T> t, root_state<T>* st) {
    co_await detail::set_context{ctx};
    co_await st->settle(std::move(t));
}

template <class T>
T runtime::block_on(task<T> main) {
    root_state<T> st;
    context ctx = loops_[0]->background();
    root r = drive(&ctx, std::move(main), &st);
    r.h.promise().signal = &st.signal;
    loops_[0]->post_resume(r.h);
    st.signal.wait();
    r.h.destroy();
    return st.take();
}

} // namespace tether
