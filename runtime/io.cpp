#include "runtime/io.hpp"

#include <liburing.h>

#include <fcntl.h>

namespace tether::detail {

namespace {
const io_args& args_of(uring_op* op) noexcept {
    return static_cast<io_op*>(op)->args;
}
io_uring_sqe* sqe_of(void* sqe) noexcept {
    return static_cast<io_uring_sqe*>(sqe);
}
} // namespace

void prep_read(uring_op* op, void* sqe) noexcept {
    const io_args& a = args_of(op);
    // liburing takes a mutable buffer; the kernel writes into it.
    io_uring_prep_read(sqe_of(sqe), a.fd, const_cast<void*>(a.addr), a.len, a.off);
}

void prep_write(uring_op* op, void* sqe) noexcept {
    const io_args& a = args_of(op);
    io_uring_prep_write(sqe_of(sqe), a.fd, a.addr, a.len, a.off);
}

void prep_readv(uring_op* op, void* sqe) noexcept {
    const io_args& a = args_of(op);
    io_uring_prep_readv(sqe_of(sqe), a.fd, static_cast<const ::iovec*>(a.addr), a.len, a.off);
}

void prep_writev(uring_op* op, void* sqe) noexcept {
    const io_args& a = args_of(op);
    io_uring_prep_writev(sqe_of(sqe), a.fd, static_cast<const ::iovec*>(a.addr), a.len, a.off);
}

void prep_poll(uring_op* op, void* sqe) noexcept {
    const io_args& a = args_of(op);
    io_uring_prep_poll_add(sqe_of(sqe), a.fd, a.len);
}

void prep_openat(uring_op* op, void* sqe) noexcept {
    const io_args& a = args_of(op);
    io_uring_prep_openat(sqe_of(sqe), AT_FDCWD, static_cast<const char*>(a.addr),
                         static_cast<int>(a.op_flags), a.mode);
}

void prep_fsync(uring_op* op, void* sqe) noexcept {
    const io_args& a = args_of(op);
    io_uring_prep_fsync(sqe_of(sqe), a.fd, a.op_flags);
}

void prep_close(uring_op* op, void* sqe) noexcept {
    io_uring_prep_close(sqe_of(sqe), args_of(op).fd);
}

} // namespace tether::detail
