#pragma once
// signal: Go's signal.NotifyContext, a context canceled when the process gets a signal.
//   notify_context    the context and the handle that stops it
//   notify_stop       that handle: unregisters the signals and cancels the context
//   signal_category   the error category of the cause ("interrupt signal received")

#include "context/context.hpp"

#include <csignal>
#include <initializer_list>
#include <memory>
#include <system_error>
#include <utility>

namespace tether {

namespace detail {
struct signal_entry;
}

/// Returns the error category of the cause of a `notify_context` canceled by a signal: the
/// code's value is the signal number, its message Go's ("interrupt signal received").
///
/// Thread safety: returns the same immortal object from every thread.
const std::error_category& signal_category() noexcept;

/// Stops what `notify_context` started: move-only and idempotent, and it stops when
/// destroyed, as `cancel_handle` cancels.
///
/// Stopping cancels the context (with `errc::canceled` if no signal came first) and
/// unregisters its signals; a signal that no other `notify_context` still watches gets back
/// the disposition it had before the first one watched it (for SIGINT usually the default:
/// a second Ctrl-C then ends the process, as in Go).
///
/// Thread safety: may be called from any thread, concurrently with a signal arriving.
class notify_stop {
public:
    notify_stop() noexcept = default;
    explicit notify_stop(std::shared_ptr<detail::signal_entry> e) noexcept : e_(std::move(e)) {}
    notify_stop(notify_stop&&) noexcept = default;
    notify_stop& operator=(notify_stop&& o) noexcept {
        if (this != &o) {
            stop();
            e_ = std::move(o.e_);
        }
        return *this;
    }
    ~notify_stop() { stop(); }

    /// Unregisters the signals and cancels the context; later calls do nothing.
    void operator()() noexcept { stop(); }
    /// Same as `operator()`.
    void stop() noexcept;
    /// Returns true until `stop()`.
    explicit operator bool() const noexcept { return e_ != nullptr; }

private:
    std::shared_ptr<detail::signal_entry> e_;
};

/// Returns a child of `parent` that is canceled when the process receives one of `signals`,
/// and the handle that stops watching them (Go's `signal.NotifyContext`).
///
/// The child is done when a listed signal arrives, when `parent` is done, or when `stop` is
/// called or destroyed, whichever happens first. After a signal, `ctx.err()` is
/// `errc::canceled` and `tether::cause(ctx)` is a `signal_category()` code whose value is
/// the signal number. Until `stop`, the signals stay caught: a second one does not end the
/// process. An empty list watches nothing (the child is canceled only by `parent` or `stop`).
///
/// How: the first call installs a handler (sigaction) for each listed signal that writes
/// the signal number to a pipe, and starts one thread that reads the pipe and cancels the
/// contexts watching that signal. signalfd was not chosen: it sees a signal only if every
/// thread of the process blocks it, which a library can't ensure for threads it did not
/// start (the offload pool, the real clock's timer thread, the user's). Signal masks are
/// left alone: a signal blocked in every thread is never seen, as with any handler.
///
/// Errors: throws `std::system_error` if the pipe, the thread or sigaction fails (an
/// invalid or uncatchable signal such as SIGKILL: `EINVAL`).
///
/// Thread safety: may be called from any thread; the context is canceled on tether's
/// signal thread (its `done()` waiters on loops resume on their loops' threads).
///
/// Example:
///
///     auto [ctx, stop] = tether::notify_context(loop.background(), {SIGINT, SIGTERM});
///     loop.block_on(ctx, serve(listener)); // returns once Ctrl-C cancels ctx
[[nodiscard]] std::pair<context, notify_stop> notify_context(const context& parent,
                                                             std::initializer_list<int> signals);

} // namespace tether
