#pragma once
// The io_uring operations behind the sockets' awaitables. Their SQEs are prepared in
// socket_ops.cpp (liburing stays there). Each awaiter holds its operation, so the operation
// and what it lends the kernel live in the awaiting coroutine's frame until its own CQE
// arrives, canceled or not.

#include "net/address.hpp"
#include "net/detail/recv_ring.hpp"
#include "net/io_errc.hpp"
#include "net/io_result.hpp"
#include "net/recv_buffer.hpp"
#include "runtime/detail/op.hpp"
#include "runtime/result.hpp"
#include "runtime/task.hpp"

#include <cassert>
#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <sys/socket.h>
#include <sys/uio.h>

namespace tether::net {

/// One datagram received by `recv_from`: its size, its sender, and whether it was cut.
struct datagram {
    std::size_t size = 0;   ///< bytes stored in the buffer
    address from;           ///< the sender (unnamed for an unbound Unix socket)
    bool truncated = false; ///< the datagram was longer than the buffer; the rest is lost
};

} // namespace tether::net

namespace tether::net::detail {

/// One socket operation: a recv, send, sendmsg, recvmsg or connect on `fd`.
///
/// With `all`, a short transfer is resubmitted for the rest from the CQE handler, without
/// resuming the coroutine, until everything moved, the peer ended the stream, an error came
/// back or the context was canceled; `done` counts the bytes moved so far.
struct transfer_op : tether::detail::uring_op {
    enum class kind : std::uint8_t { recv, send, sendmsg, recvmsg, connect };

    kind k = kind::recv;
    bool all = false;    // resubmit short transfers until `size` bytes moved
    bool stream = false; // a byte stream: reading 0 bytes means EOF; empty is a no-op
    int fd = -1;
    int msg_flags = 0;
    std::byte* data = nullptr; // recv/send
    std::size_t size = 0;      // bytes asked for (sendmsg: the sum of the iovecs)
    std::size_t done = 0;      // bytes moved so far
    // A stream's receive state, where its registered file is (fixed_file_of()): on the
    // stream's loop the SQE names the slot instead of `fd`. Null: not a stream.
    recv_core* const* rs = nullptr;
    ::msghdr* msg; // sendmsg/recvmsg: set by the awaiter; else unset. Last: a stream's
                   // read or write does not touch it (see uring_op's layout)
    // connect: `data` is the sockaddr and `size` its length.

    // Lazily initialized (see uring_op(lazy_init_t)): begin() sets what the constructor
    // leaves, the awaiters of sendmsg and recvmsg set `msg`.
    transfer_op(kind kd, int f, std::byte* d, std::size_t n, int flags) noexcept
        : uring_op(tether::detail::lazy_init), k(kd), fd(f), msg_flags(flags), data(d), size(n) {}
    /// Copies the parameters of an op that has not started (awaiters move until awaited);
    /// pointers into the old awaiter are fixed by the awaiter.
    transfer_op(transfer_op&& o) noexcept
        : uring_op(tether::detail::lazy_init), k(o.k), all(o.all), stream(o.stream), fd(o.fd),
          msg_flags(o.msg_flags), data(o.data), size(o.size), done(o.done), rs(o.rs) {}
    transfer_op& operator=(transfer_op&&) = delete;

    /// Submits the op under `c` for `h`; false if the coroutine must not suspend (the
    /// context is already done, or there is nothing to transfer).
    bool begin(const context& c, std::coroutine_handle<> h) noexcept;
    /// Returns why the op ended short: empty when everything asked for moved.
    std::error_code end_error() const noexcept;
};

/// What the awaiters of one transfer_op share: the op, and submitting it under the awaiting
/// task's context. Each awaiter adds the op's extra state and its own await_resume.
class transfer_awaiter {
public:
    bool await_ready() const noexcept { return false; }
    template <class P>
    bool await_suspend(std::coroutine_handle<P> h) noexcept {
        op_.owner = tether::detail::owner_of(h);
        return op_.begin(tether::detail::context_of(h), h);
    }

protected:
    transfer_awaiter(transfer_op::kind k, int fd, std::byte* data, std::size_t n,
                     int flags) noexcept
        : op_(k, fd, data, n, flags) {}
    transfer_awaiter(transfer_awaiter&&) noexcept = default;
    transfer_awaiter& operator=(transfer_awaiter&&) = delete;
    ~transfer_awaiter() = default;

    /// The bytes moved, or why the op ended early.
    result<std::size_t> bytes_moved() const noexcept {
        if (std::error_code e = op_.end_error()) {
            return e;
        }
        return op_.done;
    }

    transfer_op op_;
};

/// Awaits one transfer and returns its byte count: `read_some`, `write_some`, `send`, `recv`.
class some_awaiter : public transfer_awaiter {
public:
    some_awaiter(transfer_op::kind k, int fd, std::byte* data, std::size_t n, int flags,
                 bool stream, recv_core* const* rs = nullptr) noexcept
        : transfer_awaiter(k, fd, data, n, flags) {
        op_.rs = rs;
        op_.stream = stream;
    }
    result<std::size_t> await_resume() const noexcept { return bytes_moved(); }
};

/// Awaits a transfer of every byte asked for: `read_exact`, `write_all`, `writev`.
class all_awaiter : public transfer_awaiter {
public:
    all_awaiter(transfer_op::kind k, int fd, std::byte* data, std::size_t n, int flags, bool stream,
                recv_core* const* rs = nullptr) noexcept
        : transfer_awaiter(k, fd, data, n, flags) {
        op_.rs = rs;
        op_.all = true;
        op_.stream = stream;
    }
    all_awaiter(all_awaiter&& o) noexcept = default;
    all_awaiter& operator=(all_awaiter&&) = delete;

    io_result await_resume() const noexcept {
        op_.assume_released();
        if (op_.done == op_.size && !op_.error) {
            // Everything moved (what end_error() finds, without the call).
            return {op_.done, tether::detail::no_error};
        }
        return {op_.done, op_.end_error()};
    }
};

/// Awaits a gathered write of every byte of several buffers (sendmsg): `writev`.
class writev_awaiter : public transfer_awaiter {
public:
    /// The list is copied (8 entries inline, more on the heap); the bytes are borrowed.
    writev_awaiter(int fd, std::span<const std::span<const std::byte>> bufs, int flags,
                   recv_core* const* rs = nullptr);
    writev_awaiter(writev_awaiter&& o) noexcept;
    writev_awaiter& operator=(writev_awaiter&&) = delete;

    io_result await_resume() const noexcept { return {op_.done, op_.end_error()}; }

private:
    ::msghdr msg_{};
    ::iovec small_[8]{};
    std::unique_ptr<::iovec[]> large_;
};

/// Awaits a connect to `to` (copied): `result<void>`.
class connect_awaiter : public transfer_awaiter {
public:
    connect_awaiter(int fd, const address& to) noexcept;
    connect_awaiter(connect_awaiter&& o) noexcept : connect_awaiter(o.op_.fd, o.to_) {}
    result<void> await_resume() const noexcept { return op_.end_error(); }

private:
    address to_;
};

/// Awaits one datagram sent to `to` (copied): `send_to`.
class send_to_awaiter : public transfer_awaiter {
public:
    send_to_awaiter(int fd, std::span<const std::byte> data, const address& to) noexcept;
    send_to_awaiter(send_to_awaiter&& o) noexcept
        : send_to_awaiter(o.op_.fd,
                          {static_cast<const std::byte*>(o.iov_.iov_base), o.iov_.iov_len}, o.to_) {
    }
    result<std::size_t> await_resume() const noexcept { return bytes_moved(); }

private:
    address to_;
    ::msghdr msg_{};
    ::iovec iov_;
};

/// Awaits one datagram and its sender: `recv_from`.
class recv_from_awaiter : public transfer_awaiter {
public:
    recv_from_awaiter(int fd, std::span<std::byte> buf) noexcept;
    recv_from_awaiter(recv_from_awaiter&& o) noexcept
        : recv_from_awaiter(o.op_.fd, {static_cast<std::byte*>(o.iov_.iov_base), o.iov_.iov_len}) {}
    result<datagram> await_resume() const;

private:
    ::msghdr msg_{};
    ::sockaddr_storage from_{};
    ::iovec iov_;
};

/// Awaits a read of a stream: `read_some` (`All` false, `result<size_t>`) or `read_exact`
/// (`All` true, `io_result`). A plain recv into the caller's buffer, unless the stream has been
/// receiving through the loop's buffer pool (`receive`): then bytes already queued come first
/// and the read waits on the queue, so that bytes stay in order.
template <bool All>
class read_awaiter {
public:
    read_awaiter(recv_core** rs, int fd, std::span<std::byte> buf) noexcept
        : rs_(rs), op_(transfer_op::kind::recv, fd, buf.data(), buf.size(), 0),
          rr_(All ? ring_read::mode::all : ring_read::mode::some) {
        op_.rs = rs;
        op_.stream = true;
        op_.all = All;
    }
    read_awaiter(read_awaiter&& o) noexcept : rs_(o.rs_), op_(std::move(o.op_)), rr_(o.rr_.m) {}
    read_awaiter& operator=(read_awaiter&&) = delete;

    bool await_ready() const noexcept { return false; }
    template <class P>
    bool await_suspend(std::coroutine_handle<P> h) noexcept {
        const context& c = tether::detail::context_of(h);
        op_.owner = tether::detail::owner_of(h);
        rr_.owner = op_.owner;
        if (ring_active(*rs_)) {
            ring_ = true;
            rr_.dest = op_.data;
            rr_.size = op_.size;
            return ring_read_suspend(*rs_, op_.fd, rr_, c, h);
        }
        return op_.begin(c, h);
    }
    auto await_resume() const noexcept {
        if constexpr (All) {
            if (ring_) {
                return io_result{rr_.done, rr_.error ? rr_.error : rr_.end};
            }
            return io_result{op_.done, op_.end_error()};
        } else {
            if (ring_) {
                if (rr_.error) {
                    return result<std::size_t>(rr_.error);
                }
                if (rr_.done == 0 && rr_.end) {
                    return result<std::size_t>(rr_.end);
                }
                return result<std::size_t>(rr_.done);
            }
            if (std::error_code e = op_.end_error()) {
                return result<std::size_t>(e);
            }
            return result<std::size_t>(op_.done);
        }
    }

private:
    recv_core** rs_;
    transfer_op op_;
    copy_read rr_;
    bool ring_ = false;
};

/// Awaits one buffer of received bytes from the loop's pool: `receive`.
class receive_awaiter {
public:
    receive_awaiter(recv_core** rs, int fd) noexcept
        : rs_(rs), fd_(fd), rr_(ring_read::mode::lease) {}
    receive_awaiter(receive_awaiter&& o) noexcept : receive_awaiter(o.rs_, o.fd_) {}
    receive_awaiter& operator=(receive_awaiter&&) = delete;

    bool await_ready() const noexcept { return false; }
    template <class P>
    bool await_suspend(std::coroutine_handle<P> h) noexcept {
        const context& c = tether::detail::context_of(h);
        rr_.owner = tether::detail::owner_of(h);
        if (recv_core* s = *rs_; s != nullptr && s->lease_waits()) {
            // A connection's receive loop: nothing queued, the multishot recv armed. Wait
            // for its next CQE without a call (arm_inline fails the read under a context
            // that is done, as ring_read_suspend's check does). The stream receives on one
            // loop, the one running this coroutine: `lp` is that loop.
            assert(s->reader == nullptr && "one read at a time");
            rr_.rs = s;
            rr_.lp = s->lp;
            rr_.handle = h;
            rr_.on_cancel = &ring_read_cancel;
            if (!tether::detail::arm_inline<true>(rr_, c, s->lp)) {
                return false;
            }
            s->reader = &rr_;
            return true;
        }
        return ring_read_suspend(*rs_, fd_, rr_, c, h);
    }
    result<recv_buffer> await_resume() noexcept {
        rr_.assume_released();
        if (rr_.error) {
            return rr_.error;
        }
        if (rr_.data == nullptr) {
            return rr_.end ? rr_.end : make_error_code(io_errc::eof);
        }
        return recv_buffer(rr_.pool, rr_.bid, rr_.data, rr_.len);
    }

private:
    recv_core** rs_;
    int fd_;
    ring_read rr_;
};

// Awaiters may be moved until they are awaited (into `with_timeout`, `spawn`, ...), never
// after: the kernel holds their address.

// ---- synchronous helpers (socket_ops.cpp) ------------------------------------------------

/// Returns a new socket (close-on-exec, blocking: io_uring waits for it) or the errno.
result<int> open_socket(int family, int type) noexcept;
/// Binds `fd` to `a`; on failure closes `fd`.
result<void> bind_socket(int fd, const address& a) noexcept;
/// Sets an int socket option.
result<void> set_option(int fd, int level, int name, int value) noexcept;
/// Reads an int socket option.
result<int> get_option(int fd, int level, int name) noexcept;
/// Returns the socket's own address (getsockname).
result<address> local_address(int fd) noexcept;
/// Returns the connected peer's address (getpeername).
result<address> peer_address(int fd) noexcept;
/// Closes `fd` if it is open and sets it to -1; reports close's error.
result<void> close_fd(int& fd) noexcept;

} // namespace tether::net::detail
