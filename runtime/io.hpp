#pragma once
// io: awaitable io_uring operations on a file descriptor, canceled in the kernel.
//   read, write      one read or write at an offset (or the file position)
//   readv, writev    the same over several buffers
//   poll             wait until a descriptor is readable or writable
//   io_request       what they return: arguments to `co_await`, movable until then
// `file` (file.hpp) and net/'s streams are built on these.

#include "runtime/detail/op.hpp"
#include "runtime/result.hpp"
#include "runtime/task.hpp"

#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <span>
#include <sys/uio.h>
#include <type_traits>

namespace tether {

/// The offset that makes `read` and `write` use (and advance) the file position, as
/// read(2) and write(2) do. Streams (pipes, sockets) ignore offsets.
inline constexpr std::uint64_t at_position = ~std::uint64_t{0};

namespace detail {

/// Prepares an SQE for an op (defined in the .cpp files, where liburing is).
using prep_fn = void (*)(uring_op*, void* sqe) noexcept;

/// The arguments of one io_uring operation, as its prep function reads them.
struct io_args {
    prep_fn prep = nullptr;
    int fd = -1;
    const void* addr = nullptr; // a buffer, an iovec array or a path
    std::uint32_t len = 0;      // bytes, iovecs, or a poll mask
    std::uint64_t off = 0;
    std::uint32_t op_flags = 0; // open flags, fsync flags
    std::uint32_t mode = 0;     // open mode
};

/// An op with its arguments: what the kernel sees while it is in flight.
struct io_op : uring_op {
    io_args args;
};

// Prep functions for the ops of io.hpp and file.hpp (io.cpp).
void prep_read(uring_op* op, void* sqe) noexcept;
void prep_write(uring_op* op, void* sqe) noexcept;
void prep_readv(uring_op* op, void* sqe) noexcept;
void prep_writev(uring_op* op, void* sqe) noexcept;
void prep_poll(uring_op* op, void* sqe) noexcept;
void prep_openat(uring_op* op, void* sqe) noexcept;
void prep_fsync(uring_op* op, void* sqe) noexcept;
void prep_close(uring_op* op, void* sqe) noexcept;

/// How an op's non-negative CQE result becomes what `co_await` returns.
struct size_kind {
    using value_type = std::size_t;
    static std::size_t from(int res) noexcept { return static_cast<std::size_t>(res); }
};
struct void_kind {
    using value_type = void;
};
struct events_kind {
    using value_type = unsigned;
    static unsigned from(int res) noexcept { return static_cast<unsigned>(res); }
};

/// Suspends on one io_uring op under the awaiting task's context.
///
/// It holds the op, so it never moves once awaited; `io_request` is the movable part.
template <class Kind>
class io_awaiter {
public:
    explicit io_awaiter(const io_args& a) noexcept {
        op_.args = a;
        op_.prep = a.prep;
    }
    io_awaiter(const io_awaiter&) = delete;
    io_awaiter& operator=(const io_awaiter&) = delete;

    bool await_ready() const noexcept { return false; }
    template <class P>
    bool await_suspend(std::coroutine_handle<P> h) noexcept {
        op_.owner = owner_of(h);
        return op_.start(context_of(h), h);
    }
    result<typename Kind::value_type> await_resume() const noexcept {
        result<int> r = op_.outcome();
        if (!r) {
            return r.error();
        }
        if constexpr (std::is_void_v<typename Kind::value_type>) {
            return {};
        } else {
            return Kind::from(*r);
        }
    }

private:
    io_op op_;
};

/// Clamps a buffer size to what one io_uring read or write takes (the kernel's
/// MAX_RW_COUNT): a larger buffer gives a short transfer, as read(2) does.
constexpr std::uint32_t io_len(std::size_t n) noexcept {
    constexpr std::size_t max_rw = 0x7ffff000;
    return static_cast<std::uint32_t>(n < max_rw ? n : max_rw);
}

} // namespace detail

/// The arguments of an I/O operation, submitted when the request is awaited.
///
/// A request can be moved (into `with_timeout`, `when_all`, a task) until it is awaited;
/// awaiting it submits the operation under the awaiting task's context.
template <class Kind>
class [[nodiscard]] io_request {
public:
    explicit io_request(const detail::io_args& a) noexcept : args_(a) {}
    /// Submits the operation; the result of `co_await` is `result<value_type>`.
    detail::io_awaiter<Kind> operator co_await() && noexcept {
        return detail::io_awaiter<Kind>{args_};
    }

private:
    detail::io_args args_;
};

/// Reads up to `buf.size()` bytes from `fd` at `offset` (IORING_OP_READ) and returns how
/// many were read.
///
/// Zero means end of file (or an empty `buf`). With `at_position` (the default) it reads at
/// the file position and advances it; streams ignore the offset. A short read is not an error.
///
/// Errors: the read(2) errno as a `std::system_category()` code.
///
/// Cancellation: when the awaiting task's context is done, the read is canceled in the kernel
/// (IORING_OP_ASYNC_CANCEL) and resumes with the context's error once the kernel confirms it.
/// Nothing is lost: if the read completed before the cancel took effect, its bytes are
/// returned. Under a context that is already done, it fails at once and submits nothing.
///
/// Lifetime: `buf` is borrowed until the await resumes; the kernel may write into it until
/// then, even after a cancel.
[[nodiscard]] inline io_request<detail::size_kind>
read(int fd, std::span<std::byte> buf, std::uint64_t offset = at_position) noexcept {
    return io_request<detail::size_kind>{
        {&detail::prep_read, fd, buf.data(), detail::io_len(buf.size()), offset, 0, 0}};
}

/// Writes up to `buf.size()` bytes to `fd` at `offset` (IORING_OP_WRITE) and returns how many
/// were written; as `read`.
///
/// A short write is not an error: write the rest again (a pipe or socket takes what fits).
///
/// Errors: the write(2) errno: `EPIPE` for a pipe with no reader, which also raises SIGPIPE
/// as write(2) does, unless the process ignores it (Go ignores it for you; tether does not).
///
/// Cancellation: as `read`. If the write completed before the cancel took effect, the count
/// is returned; a canceled write wrote nothing.
///
/// Lifetime: `buf` is borrowed until the await resumes.
[[nodiscard]] inline io_request<detail::size_kind>
write(int fd, std::span<const std::byte> buf, std::uint64_t offset = at_position) noexcept {
    return io_request<detail::size_kind>{
        {&detail::prep_write, fd, buf.data(), detail::io_len(buf.size()), offset, 0, 0}};
}

/// Reads into several buffers in order (IORING_OP_READV) and returns the total read; as `read`.
///
/// Lifetime: `iov` and the buffers it points to are borrowed until the await resumes.
[[nodiscard]] inline io_request<detail::size_kind>
readv(int fd, std::span<const ::iovec> iov, std::uint64_t offset = at_position) noexcept {
    return io_request<detail::size_kind>{{&detail::prep_readv, fd, iov.data(),
                                          static_cast<std::uint32_t>(iov.size()), offset, 0, 0}};
}

/// Writes several buffers in order (IORING_OP_WRITEV) and returns the total written; as
/// `write`.
///
/// Lifetime: `iov` and the buffers it points to are borrowed until the await resumes.
[[nodiscard]] inline io_request<detail::size_kind>
writev(int fd, std::span<const ::iovec> iov, std::uint64_t offset = at_position) noexcept {
    return io_request<detail::size_kind>{{&detail::prep_writev, fd, iov.data(),
                                          static_cast<std::uint32_t>(iov.size()), offset, 0, 0}};
}

/// Waits until `fd` has one of `events` (POLLIN, POLLOUT, ...; IORING_OP_POLL_ADD, one shot)
/// and returns the events that are set, which may include POLLERR and POLLHUP.
///
/// Returns at once if an event is already set.
///
/// Cancellation: as `read`; a poll that fired before the cancel took effect returns its
/// events.
[[nodiscard]] inline io_request<detail::events_kind> poll(int fd, unsigned events) noexcept {
    return io_request<detail::events_kind>{{&detail::prep_poll, fd, nullptr, events, 0, 0, 0}};
}

} // namespace tether
