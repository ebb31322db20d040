#pragma once
// task_group: Go's errgroup for tasks: children under one context, the first error cancels
// it, wait() returns that error, set_limit() bounds how many run at once.

#include "context/with_cancel.hpp"
#include "runtime/detail/fanout.hpp"
#include "runtime/detail/waiter.hpp"
#include "runtime/result.hpp"
#include "runtime/task.hpp"

#include <coroutine>
#include <cstddef>
#include <exception>
#include <system_error>
#include <utility>

namespace tether {

class task_group;

namespace detail {

class group_spawn_awaiter;

/// What a group and its children share. It lives on the heap and is freed by the last of
/// the group and its running children; everything runs on the loop's thread.
class group_state final : public fanout_base {
public:
    explicit group_state(const context& parent);

    context ctx;
    cancel_handle cancel;
    loop* lp = nullptr;
    std::size_t refs = 1; // the group and each running child
    std::size_t running = 0;
    std::ptrdiff_t limit = -1;
    bool failed = false;
    std::error_code error;
    std::exception_ptr exc;
    waiter* waiting = nullptr;           // the coroutine in wait()
    group_spawn_awaiter* head = nullptr; // spawners blocked at the limit, oldest first
    group_spawn_awaiter* tail = nullptr;

    bool has_room() const noexcept {
        return limit < 0 || running < static_cast<std::size_t>(limit);
    }
    /// Binds the group to the calling thread's loop (the first spawn does).
    void bind_loop() noexcept;
    /// Queues `d` to start on the loop as a new child.
    void start(child_driver d);
    /// Records `e` as the first error (if it is) and cancels the group's context with it.
    void fail(std::error_code e) noexcept;
    /// Hands free slots to blocked spawners, oldest first.
    void admit();
    void enqueue(group_spawn_awaiter* s) noexcept;
    void unlink(group_spawn_awaiter* s) noexcept;
    /// The group is going away: cancels running children, fails blocked spawners, and
    /// drops the group's reference.
    void abandon() noexcept;
    void release() noexcept;

    void on_exception(std::size_t i, std::exception_ptr e) noexcept override;
    std::coroutine_handle<> on_child_done() noexcept override;
};

/// Records a child's `result` error as the group's error; other values are dropped.
struct group_sink {
    group_state* st;
    template <class V>
    void operator()(const V& v) const noexcept {
        if (std::error_code e = error_of(v)) {
            st->fail(e);
        }
    }
};

/// `co_await g.spawn(t)`: starts the child, first waiting for a free slot at the limit.
class [[nodiscard]] group_spawn_awaiter {
public:
    group_spawn_awaiter(group_state* st, child_driver d) noexcept
        : st_(st), driver_(std::move(d)) {}
    group_spawn_awaiter(const group_spawn_awaiter&) = delete;
    group_spawn_awaiter& operator=(const group_spawn_awaiter&) = delete;
    ~group_spawn_awaiter();

    bool await_ready() const noexcept { return false; }
    template <class P>
    bool await_suspend(std::coroutine_handle<P> h) {
        return suspend(context_of(h), h);
    }
    /// Returns success once the child has started; the awaiting context's error if it was
    /// done while waiting for a slot (the child then never starts).
    result<void> await_resume() const noexcept { return w_.error; }

private:
    friend class group_state;
    bool suspend(const context& c, std::coroutine_handle<> h);
    static void cancel_wait(waiter* w) noexcept;

    group_state* st_;
    child_driver driver_;
    waiter w_;
    bool queued_ = false;
    group_spawn_awaiter* prev_ = nullptr;
    group_spawn_awaiter* next_ = nullptr;
};

/// `co_await g.wait()`: waits for every child, then cancels the group's context.
class [[nodiscard]] group_wait_awaiter {
public:
    explicit group_wait_awaiter(group_state* st) noexcept : st_(st) {}
    group_wait_awaiter(const group_wait_awaiter&) = delete;
    group_wait_awaiter& operator=(const group_wait_awaiter&) = delete;

    bool await_ready() const noexcept { return st_->running == 0; }
    template <class P>
    bool await_suspend(std::coroutine_handle<P> h) noexcept {
        return suspend(context_of(h), h);
    }
    result<void> await_resume();

private:
    bool suspend(const context& c, std::coroutine_handle<> h) noexcept;
    group_state* st_;
    waiter w_;
};

struct make_group_awaiter {
    const context* ctx = nullptr;
    bool await_ready() const noexcept { return false; }
    template <class P>
    bool await_suspend(std::coroutine_handle<P> h) noexcept {
        ctx = &context_of(h);
        return false;
    }
    task_group await_resume() const;
};

} // namespace detail

/// A set of child tasks with Go's errgroup semantics: they run concurrently under the
/// group's context, the first error cancels it, and `wait()` returns that error once all
/// have finished.
///
/// A child fails by throwing or by returning a `result` holding an error; its value, if
/// any, is otherwise dropped. Children run on the loop of the first `spawn`.
///
/// Lifetime: always `co_await wait()` before the group goes away; children may borrow the
/// group (to spawn more) until then. A group destroyed while children still run cancels its
/// context; they finish on their loop on their own (their frames are freed as they do) but
/// nobody sees their errors, and blocked spawners resume with `errc::canceled`.
///
/// Thread safety: use a group on the thread of its loop only.
///
/// Example:
///
///     task_group g = co_await task_group::make();
///     g.set_limit(8);
///     for (const url& u : urls) {
///         if (auto r = co_await g.spawn(fetch(u)); !r) { break; } // we were canceled
///     }
///     if (auto r = co_await g.wait(); !r) { co_return r.error(); }
class task_group {
public:
    /// Makes an empty group whose context is a child of `parent`.
    ///
    /// Errors: throws std::bad_alloc if its state can't be allocated.
    explicit task_group(const tether::context& parent);
    task_group(task_group&& o) noexcept : st_(std::exchange(o.st_, nullptr)) {}
    task_group& operator=(task_group&& o) noexcept;
    task_group(const task_group&) = delete;
    task_group& operator=(const task_group&) = delete;
    /// Cancels the group's context if children still run; see `Lifetime:` above.
    ~task_group();

    /// Returns an awaitable that makes a group under the awaiting task's context:
    /// `task_group g = co_await task_group::make();`.
    static detail::make_group_awaiter make() noexcept { return {}; }

    /// Returns the group's context, under which its children run.
    ///
    /// It is canceled by the first error, by `wait()` returning, or when the parent is.
    const tether::context& context() const noexcept { return st_->ctx; }

    /// Bounds how many children run at once to `n`; a negative `n` removes the bound.
    ///
    /// With `n == 0` no child can start: `spawn` waits until the limit is raised or it is
    /// canceled. Like Go's `SetLimit`, it must not be called while children run (an assert
    /// checks); raising it lets blocked spawners start.
    void set_limit(std::ptrdiff_t n);

    /// Returns an awaitable that starts `t` as a child under the group's context, waiting
    /// first while the limit's number of children run: `co_await g.spawn(t)`.
    ///
    /// The child starts on the next loop turn, even if the group's context is already
    /// canceled (as Go's `Go` does: it then sees a done context). The awaitable returns
    /// success once the child is started.
    ///
    /// Cancellation: only a spawn that waits for a slot can be canceled: when the awaiting
    /// task's context is done (or is done already and there's no free slot), it resumes with
    /// that error and `t` never starts. Spawners waiting for a slot start in order.
    template <class T>
    detail::group_spawn_awaiter spawn(task<T> t) {
        return {st_, detail::drive(std::move(t), detail::group_sink{st_})};
    }

    /// Starts `t` as a child if a slot is free and returns true; returns false, leaving `t`
    /// untouched, at the limit. Never suspends.
    template <class T>
    bool try_spawn(task<T>&& t) {
        if (!st_->has_room()) {
            return false;
        }
        st_->bind_loop();
        st_->start(detail::drive(std::move(t), detail::group_sink{st_}));
        return true;
    }

    /// Returns an awaitable that waits until every child has finished, cancels the group's
    /// context, and returns the first error.
    ///
    /// The first error is the first child's to fail: a `result` error is returned, an
    /// exception rethrown. With no child at all it returns success at once. It may be
    /// awaited again (after more spawns): it returns the same first error. One coroutine at
    /// a time may wait.
    ///
    /// Cancellation: never returns while a child runs. If the awaiting task's context is
    /// done, or becomes done, the group's context is canceled and the wait goes on until the
    /// children have finished; it then returns their first error (typically the
    /// cancellation).
    detail::group_wait_awaiter wait() noexcept { return detail::group_wait_awaiter{st_}; }

private:
    void reset() noexcept;
    detail::group_state* st_;
};

} // namespace tether
