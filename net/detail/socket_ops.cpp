#include "net/detail/socket_ops.hpp"

#include "runtime/detail/loop_impl.hpp"

#include <liburing.h>

#include <algorithm>
#include <cassert>
#include <cerrno>
#include <sys/socket.h>
#include <unistd.h>

namespace tether::net::detail {

namespace {

// Points `sqe` at the stream's registered file when it has one on `l`, counting the op
// toward a registration while it has none; else the SQE keeps the plain fd (a stream that
// does not receive through the pool, or an op issued on another loop: a slot means
// something on its own ring only).
inline void use_fixed_file(const transfer_op* op, io_uring_sqe* sqe, tether::loop* l) noexcept {
    if (op->rs == nullptr) {
        return;
    }
    recv_core* r = *op->rs;
    if (r == nullptr || r->lp != l) {
        return;
    }
    if (r->slot < 0 && !count_fixed_use(*r)) {
        return;
    }
    sqe->fd = r->slot;
    sqe->flags |= IOSQE_FIXED_FILE;
}

void prep_transfer(tether::detail::uring_op* o, void* s) noexcept {
    auto* op = static_cast<transfer_op*>(o);
    auto* sqe = static_cast<io_uring_sqe*>(s);
    switch (op->k) {
    case transfer_op::kind::recv:
        io_uring_prep_recv(sqe, op->fd, op->data + op->done, op->size - op->done, op->msg_flags);
        break;
    case transfer_op::kind::send:
        io_uring_prep_send(sqe, op->fd, op->data + op->done, op->size - op->done, op->msg_flags);
        break;
    case transfer_op::kind::sendmsg:
        io_uring_prep_sendmsg(sqe, op->fd, op->msg, static_cast<unsigned>(op->msg_flags));
        break;
    case transfer_op::kind::recvmsg:
        io_uring_prep_recvmsg(sqe, op->fd, op->msg, static_cast<unsigned>(op->msg_flags));
        break;
    case transfer_op::kind::connect:
        io_uring_prep_connect(sqe, op->fd, reinterpret_cast<const sockaddr*>(op->data),
                              static_cast<socklen_t>(op->size));
        break;
    }
    use_fixed_file(op, sqe, op->lp);
}

// Drops the first `n` bytes from the iovecs of `m` (after a short sendmsg).
void advance_iov(msghdr& m, std::size_t n) noexcept {
    while (n > 0 && m.msg_iovlen > 0) {
        iovec& v = m.msg_iov[0];
        if (n < v.iov_len) {
            v.iov_base = static_cast<std::byte*>(v.iov_base) + n;
            v.iov_len -= n;
            return;
        }
        n -= v.iov_len;
        ++m.msg_iov;
        --m.msg_iovlen;
    }
}

// The rest of a short transfer goes out from the CQE handler, without a trip through the
// coroutine.
[[gnu::noinline]] void resubmit(transfer_op* op, int res) noexcept {
    if (op->k == transfer_op::kind::sendmsg) {
        advance_iov(*op->msg, static_cast<std::size_t>(res));
    }
    io_uring_sqe* sqe = op->lp->impl().get_sqe();
    prep_transfer(op, sqe);
    io_uring_sqe_set_data(sqe, static_cast<tether::detail::completion*>(op));
}

void transfer_complete(tether::detail::completion* c, int res, std::uint32_t) noexcept {
    // Through a reference: the completion is not the op's first base, and a pointer cast
    // would test for null.
    auto* op = &static_cast<transfer_op&>(*c);
    op->res = res; // `flags` says nothing a transfer needs
    // A connect's result is 0 or an error: no bytes.
    assert(op->k != transfer_op::kind::connect || res <= 0);
    if (res > 0) {
        op->done += static_cast<std::size_t>(res);
        // A cancel already requested stops a short transfer (cancel_requested is set on this
        // thread before the cancel SQE is queued, so a resubmitted op is always the target).
        if (op->all && op->done < op->size && !op->cancel_requested) {
            resubmit(op, res);
            return;
        }
    }
    tether::detail::finish_completed(*op);
}

} // namespace

namespace {

// transfer_op::begin() for all but its common case.
[[gnu::noinline]] bool begin_slow(transfer_op* op, const context& c,
                                  std::coroutine_handle<> h) noexcept {
    if (op->stream && op->size == 0 && op->k != transfer_op::kind::connect) {
        // Nothing to move: a 0-byte recv would look like EOF. Still sticky to the context.
        op->error = c.err();
        op->res = 0; // what end_error() reads when the context is not done
        return false;
    }
    op->prep = &prep_transfer;
    if (!op->start(c, h)) {
        return false;
    }
    // Safe to swap after submission: CQEs are dispatched on this thread, later.
    op->complete = &transfer_complete;
    return true;
}

} // namespace

bool transfer_op::begin(const context& c, std::coroutine_handle<> h) noexcept {
    // A stream's reads and writes, once per await: what start() does, without a call on
    // the way. The common case: a send or recv of some bytes under a context that is never
    // done, or one its task's chain is armed on (arm_inline's cases), and room in the SQ.
    // Anything else (and every other kind) takes the general path, as a tail call, so that
    // this one needs no stack frame.
    using namespace tether::detail;
    static_assert(kind::recv < kind::send && kind::send < kind::sendmsg);
    loop* l = tls_loop;
    assert(l != nullptr && "tether I/O must be awaited on a running loop");
    if (k > kind::send || size == 0) {
        return begin_slow(this, c, h);
    }
    const node* n = c.node();
    cancel_state* cs = n != nullptr ? n->canceler : nullptr;
    await_chain* ch = nullptr;
    if (cs != nullptr) {
        ch = owner != nullptr ? owner->chain() : nullptr;
        if (ch == nullptr || ch->bound != cs || ch->w.lp != l || cs->is_done()) {
            return begin_slow(this, c, h);
        }
    }
    io_uring_sqe* sqe = l->impl().sqe_if_room();
    if (sqe == nullptr) {
        return begin_slow(this, c, h);
    }
    lp = l;
    handle = h;
    on_cancel = &uring_op_cancel;
    complete = &transfer_complete;
    ctx = &c;
    // An op begins once: `completed` and `cancel_requested` are still false, as constructed.
    assert(done == 0 && !completed && !cancel_requested && "an op begins once");
    if (ch != nullptr) {
        ch->current = this;
        on_chain = true;
    }
    if (k == kind::send) {
        io_uring_prep_send(sqe, fd, data, size, msg_flags);
    } else {
        io_uring_prep_recv(sqe, fd, data, size, msg_flags);
    }
    use_fixed_file(this, sqe, l);
    io_uring_sqe_set_data(sqe, static_cast<completion*>(this));
    return true;
}

std::error_code transfer_op::end_error() const noexcept {
    if (error) {
        return error; // never submitted: the context was already done
    }
    if (res < 0) {
        if ((res == -ECANCELED || res == -EINTR) && cancel_requested) {
            return cancel_error();
        }
        return system_error_code(-res);
    }
    if (k == kind::connect) {
        return {};
    }
    if (res == 0 && stream && done < size) {
        return io_errc::eof;
    }
    if (all && done < size) {
        // Stopped between two pieces by a cancel, or a send that moved nothing.
        return cancel_requested ? cancel_error() : system_error_code(EIO);
    }
    return {};
}

writev_awaiter::writev_awaiter(int fd, std::span<const std::span<const std::byte>> bufs, int flags,
                               recv_core* const* rs)
    : transfer_awaiter(transfer_op::kind::sendmsg, fd, nullptr, 0, flags) {
    op_.rs = rs;
    op_.all = true;
    op_.stream = true;
    iovec* v = small_;
    if (bufs.size() > std::size(small_)) {
        large_ = std::make_unique<iovec[]>(bufs.size());
        v = large_.get();
    }
    std::size_t n = 0;
    std::size_t total = 0;
    for (std::span<const std::byte> b : bufs) {
        if (b.empty()) {
            continue;
        }
        v[n].iov_base = const_cast<std::byte*>(b.data()); // sendmsg only reads
        v[n].iov_len = b.size();
        total += b.size();
        ++n;
    }
    msg_.msg_iov = v;
    msg_.msg_iovlen = n;
    op_.msg = &msg_;
    op_.size = total;
}

writev_awaiter::writev_awaiter(writev_awaiter&& o) noexcept
    : transfer_awaiter(std::move(o)), msg_(o.msg_), large_(std::move(o.large_)) {
    std::copy(std::begin(o.small_), std::end(o.small_), std::begin(small_));
    if (o.msg_.msg_iov >= o.small_ && o.msg_.msg_iov < std::end(o.small_)) {
        msg_.msg_iov = small_ + (o.msg_.msg_iov - o.small_);
    }
    op_.msg = &msg_;
}

connect_awaiter::connect_awaiter(int fd, const address& to) noexcept
    : transfer_awaiter(transfer_op::kind::connect, fd, nullptr, 0, 0), to_(to) {
    op_.data = reinterpret_cast<std::byte*>(const_cast<sockaddr*>(to_.data()));
    op_.size = to_.size();
}

send_to_awaiter::send_to_awaiter(int fd, std::span<const std::byte> data,
                                 const address& to) noexcept
    : transfer_awaiter(transfer_op::kind::sendmsg, fd, nullptr, data.size(), MSG_NOSIGNAL), to_(to),
      iov_{const_cast<std::byte*>(data.data()), data.size()} {
    msg_.msg_name = const_cast<sockaddr*>(to_.data());
    msg_.msg_namelen = to_.size();
    msg_.msg_iov = &iov_;
    msg_.msg_iovlen = 1;
    op_.msg = &msg_;
}

recv_from_awaiter::recv_from_awaiter(int fd, std::span<std::byte> buf) noexcept
    // MSG_TRUNC: the result is the datagram's real length, which tells a cut one.
    : transfer_awaiter(transfer_op::kind::recvmsg, fd, nullptr, buf.size(), MSG_TRUNC),
      iov_{buf.data(), buf.size()} {
    msg_.msg_name = &from_;
    msg_.msg_namelen = sizeof from_;
    msg_.msg_iov = &iov_;
    msg_.msg_iovlen = 1;
    op_.msg = &msg_;
}

result<datagram> recv_from_awaiter::await_resume() const {
    if (std::error_code e = op_.end_error()) {
        return e;
    }
    datagram d;
    d.size = std::min(op_.done, iov_.iov_len);
    d.truncated = op_.done > iov_.iov_len;
    if (auto a =
            address::from_sockaddr(reinterpret_cast<const sockaddr*>(&from_), msg_.msg_namelen)) {
        d.from = *a;
    } else if (from_.ss_family == AF_UNIX || msg_.msg_namelen == 0) {
        d.from = *address::local(""); // an unbound Unix sender
    }
    return d;
}

// ---- synchronous helpers -----------------------------------------------------------------

result<int> open_socket(int family, int type) noexcept {
    int fd = ::socket(family, type | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return system_error_code(errno);
    }
    return fd;
}

result<void> bind_socket(int fd, const address& a) noexcept {
    if (::bind(fd, a.data(), a.size()) < 0) {
        int e = errno;
        ::close(fd);
        return system_error_code(e);
    }
    return {};
}

result<void> set_option(int fd, int level, int name, int value) noexcept {
    if (::setsockopt(fd, level, name, &value, sizeof value) < 0) {
        return system_error_code(errno);
    }
    return {};
}

result<int> get_option(int fd, int level, int name) noexcept {
    int value = 0;
    socklen_t len = sizeof value;
    if (::getsockopt(fd, level, name, &value, &len) < 0) {
        return system_error_code(errno);
    }
    return value;
}

result<address> local_address(int fd) noexcept {
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) < 0) {
        return system_error_code(errno);
    }
    return address::from_sockaddr(reinterpret_cast<sockaddr*>(&ss), len);
}

result<address> peer_address(int fd) noexcept {
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    if (::getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len) < 0) {
        return system_error_code(errno);
    }
    return address::from_sockaddr(reinterpret_cast<sockaddr*>(&ss), len);
}

result<void> close_fd(int& fd) noexcept {
    if (fd < 0) {
        return {};
    }
    int r = ::close(std::exchange(fd, -1));
    // Linux releases the descriptor even when close reports an error (EINTR included).
    if (r < 0) {
        return system_error_code(errno);
    }
    return {};
}

} // namespace tether::net::detail
