#pragma once
// stream_socket: a connected byte-stream socket, the base of tcp_stream and unix_stream.

#include "net/address.hpp"
#include "net/detail/socket_ops.hpp"
#include "net/io_errc.hpp"
#include "net/io_result.hpp"
#include "net/recv_buffer.hpp"
#include "runtime/result.hpp"

#include <cstddef>
#include <span>
#include <string_view>
#include <sys/socket.h>
#include <utility>

namespace tether::net {

/// Which directions `shutdown` ends.
enum class shutdown_how {
    read = SHUT_RD,   ///< no more receives
    write = SHUT_WR,  ///< no more sends: the peer reads EOF (a half-close)
    both = SHUT_RDWR, ///< both
};

/// A connected byte-stream socket that owns its file descriptor; every operation is an
/// io_uring operation bounded by the awaiting task's context.
///
/// Move-only; destroying an open socket closes it. Reads and writes are awaitables that
/// complete on the loop running the awaiting task. One read and one write may be in flight
/// at the same time (from two tasks); two reads or two writes at once interleave bytes.
///
/// Errors: the peer's end comes back as `io_errc::eof`; other failures as
/// `std::system_category()` codes (`std::errc::connection_reset`, `broken_pipe`, ...).
/// Sends use MSG_NOSIGNAL: a closed peer never raises SIGPIPE.
///
/// Cancellation: under a context that is already done, every operation fails with its error
/// without submitting anything. When the context ends during an operation, the operation is
/// canceled in the kernel and the await resumes with the context's error
/// (`errc::canceled` or `errc::deadline_exceeded`) once the kernel has let go of the buffer.
/// Bytes moved before are never lost: `read_some` and `write_some` return them if the
/// operation completed first, `read_exact`, `write_all` and `writev` report them in
/// `io_result::bytes`.
///
/// Lifetime: buffers are borrowed until the await resumes. Awaitables may be moved until
/// they are awaited. Close or destroy the socket only when no operation is in flight.
class stream_socket {
public:
    /// Makes a socket that is not open.
    stream_socket() noexcept = default;
    stream_socket(stream_socket&& o) noexcept
        : fd_(std::exchange(o.fd_, -1)), rs_(std::exchange(o.rs_, nullptr)) {}
    stream_socket& operator=(stream_socket&& o) noexcept;
    stream_socket(const stream_socket&) = delete;
    stream_socket& operator=(const stream_socket&) = delete;
    /// Closes the socket if it is open.
    ~stream_socket();

    /// Returns true if the socket holds a file descriptor.
    bool is_open() const noexcept { return fd_ >= 0; }
    /// Returns the file descriptor, or -1.
    int native_handle() const noexcept { return fd_; }
    /// Gives up ownership: returns the file descriptor (or -1) and leaves the socket closed.
    ///
    /// Bytes `receive` had queued and not returned yet are dropped.
    int release() noexcept;

    /// Reads at least one byte into `buf` and returns how many.
    ///
    /// An empty `buf` returns 0 at once. Errors: `io_errc::eof` once the peer has shut down
    /// its side and every byte before has been read.
    ///
    /// Cancellation: cancel-safe: a read canceled before it completed consumed nothing.
    [[nodiscard]] detail::read_awaiter<false> read_some(std::span<std::byte> buf) noexcept {
        return {&rs_, fd_, buf};
    }
    /// Reads until `buf` is full.
    ///
    /// Returns the bytes read and, if it stopped before, why: `io_errc::eof` if the peer
    /// ended the stream, a reset, or the context's error.
    ///
    /// Cancellation: bytes read before a cancel are in `buf` and counted in `bytes`;
    /// nothing is lost, but a retry must continue after them.
    [[nodiscard]] detail::read_awaiter<true> read_exact(std::span<std::byte> buf) noexcept {
        return {&rs_, fd_, buf};
    }
    /// Returns the next bytes received, in a buffer lent by the loop's pool (up to 4 KiB):
    /// `result<recv_buffer>`.
    ///
    /// The stream keeps one multishot recv in the kernel (IORING_RECV_MULTISHOT with a
    /// provided buffer ring): a buffer is taken from the pool only when bytes arrive, so a
    /// connection waiting for its peer holds none, and bytes that arrive between two
    /// receives wait in a short queue (past 16 buffers the stream stops receiving until it
    /// is read, and the kernel's socket buffer slows the sender). If the pool runs dry, the
    /// stream receives into a buffer of its own until buffers come back. The pool (1024
    /// buffers of 4 KiB, on transparent huge pages where the kernel has them) is made by the
    /// loop's first pool-backed read and stays resident, about 4 MiB, until the loop ends.
    ///
    /// Once a stream has used `receive`, `read_some` and `read_exact` read through the same
    /// queue (copying), so bytes stay in order; mixing them is fine.
    ///
    /// Such a stream also registers its fd in the loop's table of registered files once it
    /// has issued a few dozen reads and writes there (loop::options::fixed_files): its later
    /// SQEs on that loop name the slot, which spares the kernel a file reference per
    /// operation. The fd stays an ordinary fd; `close` and `release` empty the slot.
    ///
    /// Errors: `io_errc::eof` once the peer has shut down its side and every byte before
    /// has been returned; resets as `read_some`.
    ///
    /// Cancellation: cancel-safe: the multishot recv belongs to the stream, not to the await;
    /// a canceled receive takes nothing, and bytes arriving later wait for the next read.
    ///
    /// Lifetime: the stream is borrowed until the await resumes; the buffer must go back
    /// (be destroyed) on this loop.
    [[nodiscard]] detail::receive_awaiter receive() noexcept { return {&rs_, fd_}; }
    /// Writes some of `buf` (at least one byte, usually all) and returns how many.
    ///
    /// Errors: `std::errc::broken_pipe` or `connection_reset` if the peer has gone.
    [[nodiscard]] detail::some_awaiter write_some(std::span<const std::byte> buf) const noexcept {
        return {detail::transfer_op::kind::send,
                fd_,
                const_cast<std::byte*>(buf.data()),
                buf.size(),
                MSG_NOSIGNAL,
                true,
                &rs_};
    }
    /// Writes all of `buf`, resubmitting short writes.
    ///
    /// Returns the bytes written and, if it stopped before the end, why (EPIPE,
    /// ECONNRESET, or the context's error): the first `bytes` bytes were handed to the
    /// kernel, the rest were not.
    [[nodiscard]] detail::all_awaiter write_all(std::span<const std::byte> buf) const noexcept {
        return {detail::transfer_op::kind::send,
                fd_,
                const_cast<std::byte*>(buf.data()),
                buf.size(),
                MSG_NOSIGNAL,
                true,
                &rs_};
    }
    /// Writes all of `text`; as above.
    [[nodiscard]] detail::all_awaiter write_all(std::string_view text) const noexcept {
        return write_all(std::as_bytes(std::span(text.data(), text.size())));
    }
    /// Writes all of `bufs`, in order, with as few system calls as the kernel allows
    /// (sendmsg), resubmitting short writes; as `write_all`.
    ///
    /// Lifetime: the list is copied when called (up to 8 entries inline, more on the heap);
    /// the bytes it names are borrowed until the await resumes.
    [[nodiscard]] detail::writev_awaiter
    writev(std::span<const std::span<const std::byte>> bufs) const {
        return {fd_, bufs, MSG_NOSIGNAL, &rs_};
    }

    /// Ends one or both directions; `shutdown_how::write` sends EOF to the peer while
    /// reads go on (a half-close). Never suspends.
    result<void> shutdown(shutdown_how how) const noexcept;
    /// Closes the socket; a closed socket is not an error. Never suspends.
    result<void> close() noexcept;

    /// Returns the address the socket is bound to.
    result<address> local_addr() const noexcept;
    /// Returns the address of the peer.
    result<address> peer_addr() const noexcept;

    /// Sets SO_SNDBUF (the kernel doubles it and applies its limits).
    result<void> set_send_buffer_size(int bytes) const noexcept;
    /// Sets SO_RCVBUF (as above).
    result<void> set_receive_buffer_size(int bytes) const noexcept;
    /// Returns SO_SNDBUF as the kernel applied it.
    result<int> send_buffer_size() const noexcept;
    /// Returns SO_RCVBUF as the kernel applied it.
    result<int> receive_buffer_size() const noexcept;

    /// Returns counters of the pool-backed receive path (for tests).
    detail::recv_stats receive_stats() const noexcept { return detail::recv_state_stats(rs_); }

protected:
    explicit stream_socket(int fd) noexcept : fd_(fd) {}

    int fd_ = -1;
    detail::recv_core* rs_ = nullptr; // created by the first receive()
};

} // namespace tether::net
