#pragma once
// async_fd: readiness waits and non-blocking reads and writes on a file descriptor that tether
// did not open (a pipe, an eventfd, a tty, a device, a C library's socket), with one kernel
// poll per fd and direction shared by every task waiting on it (Tokio's AsyncFd, Asio's
// posix::stream_descriptor). Waiters queue in user space, so canceling one costs no syscall.

#include "runtime/detail/wait_list.hpp"
#include "runtime/result.hpp"
#include "runtime/task.hpp"

#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <span>
#include <type_traits>

namespace tether {

class async_fd;

namespace detail {

struct fd_poll; // an async_fd's polls and wait queues (async_fd.cpp)

/// One task waiting on an async_fd: for readiness, or to read or write once it is ready.
struct fd_waiter : list_waiter {
    enum class op : std::uint8_t { wait, read, write };
    op kind = op::wait;
    bool write_side = false; // waits on the writable queue
    void* buf = nullptr;     // read, write
    std::size_t len = 0;
    std::size_t done = 0; // bytes moved
};

/// Tries `w`'s read or write, or queues it on `a`'s poll; returns false if the coroutine must
/// not suspend (`w` holds the outcome).
bool fd_suspend(async_fd& a, fd_waiter& w, const context& c, std::coroutine_handle<> h) noexcept;

/// Awaits readiness (`T` = void) or a read or write (`T` = std::size_t) on an async_fd.
///
/// Movable until awaited, so that it can be passed to `with_timeout` and the like.
template <class T>
class fd_awaiter {
public:
    fd_awaiter(async_fd& a, fd_waiter::op k, bool write_side, void* buf, std::size_t len) noexcept
        : a_(&a) {
        w_.kind = k;
        w_.write_side = write_side;
        w_.buf = buf;
        w_.len = len;
    }
    fd_awaiter(fd_awaiter&& o) noexcept
        : fd_awaiter(*o.a_, o.w_.kind, o.w_.write_side, o.w_.buf, o.w_.len) {}
    fd_awaiter& operator=(const fd_awaiter&) = delete;

    bool await_ready() const noexcept { return false; }
    template <class P>
    bool await_suspend(std::coroutine_handle<P> h) noexcept {
        w_.w.owner = owner_of(h);
        return fd_suspend(*a_, w_, context_of(h), h);
    }
    result<T> await_resume() const noexcept {
        if (w_.w.error) {
            return w_.w.error;
        }
        if constexpr (std::is_void_v<T>) {
            return {};
        } else {
            return w_.done;
        }
    }

private:
    async_fd* a_;
    fd_waiter w_;
};

/// What an async_fd's polls have done, for tests.
struct fd_poll_stats {
    std::uint64_t polls = 0;   ///< IORING_OP_POLL_ADDs submitted
    std::uint64_t cancels = 0; ///< IORING_OP_ASYNC_CANCELs submitted (by close)
    bool read_armed = false;   ///< a poll for readability is in the kernel now
    bool write_armed = false;  ///< a poll for writability is in the kernel now
    std::size_t readers = 0;   ///< tasks queued for readability now
    std::size_t writers = 0;   ///< tasks queued for writability now
};

} // namespace detail

/// A file descriptor read and written by tasks through readiness, as Go's poller, Tokio's
/// `AsyncFd` and Asio's `posix::stream_descriptor` do: `read_some` and `write_some` try the
/// non-blocking syscall first and, if it would block, wait until a poll says the fd is ready
/// and try again; `readable()` and `writable()` only wait.
///
/// The async_fd owns the fd and closes it when closed or destroyed (`release()` gives it
/// back instead). It puts the fd in non-blocking mode (`O_NONBLOCK`, which the fd's dups
/// share).
///
/// Any number of tasks may wait on one async_fd. Each direction has at most one poll in the
/// kernel (a one-shot IORING_OP_POLL_ADD, armed by the first waiter and re-armed while
/// waiters remain), owned by the async_fd and not by any await; the waiters queue in user
/// space. When the poll fires, every `readable()` (`writable()`) waiter resumes, and queued
/// reads (writes) are tried in order until one would block: those after it keep waiting on
/// the re-armed poll, so readiness that one read consumed wakes no one in vain and none is
/// lost. A waiter can still see the fd not ready (another task, or another process, took
/// the data first): `readable()` and `writable()` may return spuriously, and a caller that
/// reads by itself loops until its read succeeds. Why one-shot polls and not multishot: a
/// one-shot poll reports the fd's level when it is armed (a wait on an fd that is already
/// readable returns at once), where a multishot poll reports edges only, which a readiness
/// wait would have to track with a flag the caller clears.
///
/// Cancellation: every await fails at once with the context's error under a context that is
/// already done, before any syscall (cancellation is sticky). A waiter whose context is done
/// leaves the queue and resumes with `errc::canceled` or `errc::deadline_exceeded` with no
/// syscall and nothing submitted; the poll stays armed for the others (and, if none is left,
/// until the fd is ready or the async_fd closes: canceling it would cost the kernel's
/// IORING_OP_ASYNC_CANCEL, about 1.3 us, that the queue exists to avoid). A read that
/// completed before the cancel took effect returns its bytes. So canceling 100,000 tasks
/// waiting on one fd, or on 10,000, costs user-space work only (`benches/runtime_bench
/// --case cancel_fanout_fd`).
///
/// Lifetime: an async_fd belongs to the loop of its first wait until that loop ends; then
/// it may be closed, or used on another loop. Closing it resumes its waiters with `EBADF`
/// and cancels its polls in the kernel; the memory they use stays alive until their last
/// CQE arrives (or the loop ends). The buffer of a `read_some` or `write_some` is borrowed
/// until the await resumes.
///
/// Thread safety: use an async_fd on its loop's thread (construct, move or destroy it on
/// any thread while its loop is not running it). The contexts of waiting tasks may be
/// canceled from any thread.
///
/// Example:
///
///     async_fd ev(::eventfd(0, EFD_CLOEXEC));
///     std::uint64_t n = 0;
///     auto buf = std::as_writable_bytes(std::span(&n, 1));
///     result<std::size_t> r = co_await with_timeout(2s, ev.read_some(buf));
///     if (!r && r.error() == errc::deadline_exceeded) {
///         // nobody wrote the eventfd in time; nothing of the read is left in the kernel
///     }
class async_fd {
public:
    /// Makes an async_fd that holds no fd (`is_open()` is false).
    async_fd() noexcept = default;
    /// Adopts `fd`, putting it in non-blocking mode. A negative `fd` gives an async_fd
    /// that is not open; an fd that is not valid shows up as `EBADF` from the first
    /// operation.
    explicit async_fd(int fd) noexcept;
    /// Takes `o`'s fd and polls, waiters included; `o` is left not open.
    async_fd(async_fd&& o) noexcept;
    /// Closes this async_fd, then takes `o`'s fd.
    async_fd& operator=(async_fd&& o) noexcept;
    async_fd(const async_fd&) = delete;
    async_fd& operator=(const async_fd&) = delete;
    /// Closes the fd (see `close()`).
    ~async_fd();

    /// Returns the fd, or -1 if not open.
    int fd() const noexcept { return fd_; }
    /// Returns true while the async_fd holds an fd.
    bool is_open() const noexcept { return fd_ >= 0; }

    /// Returns an awaitable that waits until the fd is readable (or at its end, or in
    /// error): `co_await afd.readable()` gives `result<void>`.
    ///
    /// Readiness is a hint: the data may be gone by the time the task runs. Returns at once
    /// if the fd is already readable, after one poll.
    ///
    /// Errors: the poll's errno; `EBADF` if the async_fd is not open or is closed meanwhile;
    /// `errc::canceled` or `errc::deadline_exceeded` when the task's context is done first.
    [[nodiscard]] detail::fd_awaiter<void> readable() noexcept {
        return {*this, detail::fd_waiter::op::wait, false, nullptr, 0};
    }
    /// Returns an awaitable that waits until the fd is writable (or in error); as
    /// `readable()`.
    [[nodiscard]] detail::fd_awaiter<void> writable() noexcept {
        return {*this, detail::fd_waiter::op::wait, true, nullptr, 0};
    }

    /// Returns an awaitable that reads up to `buf.size()` bytes: `co_await afd.read_some(buf)`
    /// gives `result<std::size_t>`, the bytes read.
    ///
    /// It calls read(2) at once and returns what it gives unless the fd has nothing to read;
    /// then it waits for readability and tries again. Zero means end of file (or an empty
    /// `buf`). A short read is not an error.
    ///
    /// Errors: the read(2) errno as a `std::system_category()` code; `EBADF` if the
    /// async_fd is not open or is closed meanwhile.
    ///
    /// Cancellation: cancel-safe. Under a context that is already done it fails at once
    /// without reading. A canceled wait took no bytes: what arrives later is left for the
    /// next read.
    ///
    /// Lifetime: `buf` is borrowed until the await resumes.
    [[nodiscard]] detail::fd_awaiter<std::size_t> read_some(std::span<std::byte> buf) noexcept {
        return {*this, detail::fd_waiter::op::read, false, buf.data(), buf.size()};
    }
    /// Returns an awaitable that writes up to `buf.size()` bytes: `co_await
    /// afd.write_some(buf)` gives `result<std::size_t>`, the bytes written (a short write is
    /// not an error); as `read_some`, waiting for writability when the fd is full.
    ///
    /// Errors: the write(2) errno: `EPIPE` for a pipe with no reader, which also raises
    /// SIGPIPE unless it is ignored.
    [[nodiscard]] detail::fd_awaiter<std::size_t>
    write_some(std::span<const std::byte> buf) noexcept {
        return {*this, detail::fd_waiter::op::write, true, const_cast<std::byte*>(buf.data()),
                buf.size()};
    }

    /// Closes the fd: waiting tasks resume with `EBADF`, the polls are canceled in the
    /// kernel, and the fd is closed at once (a poll in flight holds its own reference to
    /// the file). Returns close(2)'s error, if any; does nothing if not open.
    result<void> close() noexcept;
    /// Gives the fd back without closing it, as `close()` does otherwise; returns -1 if not
    /// open. The fd stays non-blocking.
    int release() noexcept;

    /// Returns counters of the polls, for tests.
    detail::fd_poll_stats stats() const noexcept;

private:
    friend bool detail::fd_suspend(async_fd&, detail::fd_waiter&, const context&,
                                   std::coroutine_handle<>) noexcept;
    int fd_ = -1;
    detail::fd_poll* poll_ = nullptr; // made by the first wait
};

} // namespace tether
