#pragma once
// file: an owned file descriptor with open, read_at, write_at, fsync and close on io_uring.

#include "runtime/detail/op.hpp"
#include "runtime/io.hpp"
#include "runtime/result.hpp"
#include "runtime/task.hpp"

#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <utility>

namespace tether {

namespace detail {
class open_request;
class close_request;
} // namespace detail

/// An open file: owns its descriptor and reads and writes it through the loop's ring.
///
/// Move-only. A default-constructed file is not open. Destroying a file that is still open
/// closes it synchronously (close(2)); `co_await f.close()` closes it on the ring and reports
/// the error.
///
/// Thread safety: a file may be used from one loop at a time; its operations may be in flight
/// together (positional reads and writes don't share the file position).
///
/// Example:
///
///     result<file> f = co_await file::open("data.bin", O_RDONLY);
///     if (!f) { co_return f.error(); }
///     std::array<std::byte, 4096> buf;
///     result<std::size_t> n = co_await f->read_at(buf, 0);
class file {
public:
    file() noexcept = default;
    file(file&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
    file& operator=(file&& o) noexcept;
    file(const file&) = delete;
    file& operator=(const file&) = delete;
    ~file();

    /// Opens `path` (relative to the working directory) with open(2)'s `flags` and, when
    /// creating, `mode` (less the umask), through IORING_OP_OPENAT; returns the open file.
    ///
    /// O_CLOEXEC is always added.
    ///
    /// Errors: open(2)'s errno (`ENOENT`, `EACCES`, ...) as a `std::system_category()` code.
    ///
    /// Cancellation: canceled in the kernel when the context is done, resuming with the
    /// context's error; if the open completed first, the file is returned (never a leaked
    /// descriptor). Under a context that is already done, nothing is submitted.
    [[nodiscard]] static detail::open_request open(std::string path, int flags,
                                                   unsigned mode = 0666);

    /// Takes ownership of the open descriptor `fd` (a pipe, a socket, an inherited file).
    ///
    /// The file closes it when destroyed. A negative `fd` gives a file that is not open.
    [[nodiscard]] static file adopt(int fd) noexcept {
        file f;
        f.fd_ = fd;
        return f;
    }

    /// Reads up to `buf.size()` bytes at `offset` (pread(2) on the ring) and returns how many
    /// were read: zero at end of file, fewer than asked near it.
    ///
    /// Errors, Cancellation: as `tether::read`; nothing read is lost to a cancel.
    ///
    /// Lifetime: `buf` and the file stay borrowed until the await resumes.
    [[nodiscard]] io_request<detail::size_kind> read_at(std::span<std::byte> buf,
                                                        std::uint64_t offset) const noexcept {
        return tether::read(fd_, buf, offset);
    }

    /// Writes up to `buf.size()` bytes at `offset` (pwrite(2) on the ring) and returns how many
    /// were written.
    ///
    /// Errors, Cancellation: as `tether::write`.
    ///
    /// Lifetime: `buf` and the file stay borrowed until the await resumes.
    [[nodiscard]] io_request<detail::size_kind> write_at(std::span<const std::byte> buf,
                                                         std::uint64_t offset) const noexcept {
        return tether::write(fd_, buf, offset);
    }

    /// Flushes the file's data and metadata to the device (IORING_OP_FSYNC).
    ///
    /// Errors: fsync(2)'s errno. Cancellation: as `read_at`; a canceled fsync may or may not
    /// have flushed.
    [[nodiscard]] io_request<detail::void_kind> fsync() const noexcept;
    /// Flushes the file's data, and only the metadata needed to read it (fdatasync(2)).
    [[nodiscard]] io_request<detail::void_kind> fdatasync() const noexcept;

    /// Closes the file on the ring (IORING_OP_CLOSE); the file is no longer open as soon as
    /// `close()` is called.
    ///
    /// Closing a file that is not open fails with `EBADF`. If the request is destroyed without
    /// being awaited, the descriptor is closed synchronously.
    ///
    /// Errors: close(2)'s errno (`EIO` from a network file system); the descriptor is released
    /// anyway.
    ///
    /// Cancellation: none. A close always completes, even under a done context, so that
    /// cleanup code can close without `without_cancel`.
    [[nodiscard]] detail::close_request close() noexcept;

    /// Returns the descriptor, or -1 if the file is not open. The file still owns it.
    int fd() const noexcept { return fd_; }
    /// Returns true if the file holds a descriptor.
    bool is_open() const noexcept { return fd_ >= 0; }
    /// Gives up ownership: returns the descriptor (-1 if not open) and leaves the file closed.
    int release() noexcept { return std::exchange(fd_, -1); }

private:
    int fd_ = -1;
};

namespace detail {

/// Suspends on IORING_OP_OPENAT; owns the path until the kernel has read it.
class open_awaiter {
public:
    open_awaiter(std::string path, int flags, unsigned mode) noexcept;
    open_awaiter(const open_awaiter&) = delete;
    open_awaiter& operator=(const open_awaiter&) = delete;

    bool await_ready() const noexcept { return false; }
    template <class P>
    bool await_suspend(std::coroutine_handle<P> h) noexcept {
        op_.args.addr = path_.c_str(); // read by the kernel when the SQE is submitted
        op_.owner = owner_of(h);
        return op_.start(context_of(h), h);
    }
    result<file> await_resume() const noexcept;

private:
    std::string path_;
    io_op op_;
};

/// The arguments of `file::open`, movable until awaited.
class [[nodiscard]] open_request {
public:
    open_request(std::string path, int flags, unsigned mode) noexcept
        : path_(std::move(path)), flags_(flags), mode_(mode) {}
    open_awaiter operator co_await() && noexcept { return {std::move(path_), flags_, mode_}; }

private:
    std::string path_;
    int flags_;
    unsigned mode_;
};

/// Suspends on IORING_OP_CLOSE, under no context: a close is never canceled.
class close_awaiter {
public:
    explicit close_awaiter(int fd) noexcept;
    close_awaiter(const close_awaiter&) = delete;
    close_awaiter& operator=(const close_awaiter&) = delete;

    bool await_ready() const noexcept { return op_.args.fd < 0; }
    bool await_suspend(std::coroutine_handle<> h) noexcept {
        return op_.start(default_context(), h);
    }
    result<void> await_resume() const noexcept;

private:
    io_op op_;
};

/// Owns the descriptor that `file::close` took until it is awaited (or closes it when
/// dropped).
class [[nodiscard]] close_request {
public:
    explicit close_request(int fd) noexcept : fd_(fd) {}
    close_request(close_request&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
    close_request& operator=(close_request&&) = delete;
    ~close_request();
    close_awaiter operator co_await() && noexcept { return close_awaiter{std::exchange(fd_, -1)}; }

private:
    int fd_;
};

} // namespace detail

} // namespace tether
