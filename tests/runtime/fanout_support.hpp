#pragma once
// Helpers for the when_all, when_any and task_group tests.
//   outcome      what a task returned or threw, and whether it has finished
//   start        runs a task on a loop from outside it, capturing its outcome
//   sleeper      a child that sleeps, notes that it finished, and returns a value or its error
//   fail_after   a child that sleeps, then returns an error
//   throw_after  a child that sleeps, then throws

#include "runtime/loop.hpp"
#include "runtime/sleep.hpp"
#include "runtime/spawn.hpp"
#include "runtime/task.hpp"

#include <exception>
#include <optional>
#include <stdexcept>
#include <system_error>
#include <utility>

namespace tether::test {

/// What a task started with `start` returned or threw.
template <class T>
struct outcome {
    std::optional<T> value;
    std::exception_ptr exception;
    bool done = false;
};

template <class T>
task<void> capture(outcome<T>* o, task<T> t) {
    try {
        o->value.emplace(co_await std::move(t));
    } catch (...) {
        o->exception = std::current_exception();
    }
    o->done = true;
}

inline task<join_handle<void>> spawn_on_loop(task<void> t) {
    co_return co_await spawn(std::move(t));
}

/// Spawns `t` on `l` under a child of `ctx`; it runs on the loop's next turns
/// (`l.run_until_idle()`) and stores what it returns or throws in `*o`.
///
/// Lifetime: `o` must outlive the task; keep the handle until the task is done (dropping it
/// cancels the task).
template <class T>
join_handle<void> start(loop& l, const context& ctx, outcome<T>* o, task<T> t) {
    return l.block_on(ctx, spawn_on_loop(capture(o, std::move(t))));
}

/// What a child saw: whether it finished, and the error its sleep returned.
struct trace {
    bool finished = false;
    std::error_code error;
    std::error_code cause; // tether::cause() of its context, once its sleep returned
};

/// Sleeps `d`, records what happened in `*t`, and returns `v`, or its sleep's error.
inline task<result<int>> sleeper(duration d, int v, trace* t) {
    result<void> r = co_await sleep_for(d);
    t->finished = true;
    t->error = r.error();
    t->cause = cause(co_await this_coro::context);
    if (!r) {
        co_return r.error();
    }
    co_return v;
}

/// Sleeps `d`, then returns `e` (or the sleep's error if it was canceled first).
inline task<result<int>> fail_after(duration d, std::error_code e) {
    if (result<void> r = co_await sleep_for(d); !r) {
        co_return r.error();
    }
    co_return e;
}

/// Sleeps `d`, then throws std::runtime_error(what) (even if the sleep was canceled).
inline task<int> throw_after(duration d, const char* what) {
    (void)co_await sleep_for(d);
    throw std::runtime_error(what);
    co_return 0;
}

/// An error no runtime code returns, to tell a child's error from a cancellation.
inline std::error_code io_error() {
    return std::make_error_code(std::errc::io_error);
}

} // namespace tether::test
