#include "runtime/file.hpp"

#include <liburing.h>

#include <cerrno>
#include <fcntl.h>
#include <unistd.h>

namespace tether {

file& file::operator=(file&& o) noexcept {
    if (this != &o) {
        if (fd_ >= 0) {
            ::close(fd_);
        }
        fd_ = std::exchange(o.fd_, -1);
    }
    return *this;
}

file::~file() {
    if (fd_ >= 0) {
        ::close(fd_);
    }
}

detail::open_request file::open(std::string path, int flags, unsigned mode) {
    return {std::move(path), flags, mode};
}

io_request<detail::void_kind> file::fsync() const noexcept {
    return io_request<detail::void_kind>{{&detail::prep_fsync, fd_, nullptr, 0, 0, 0, 0}};
}

io_request<detail::void_kind> file::fdatasync() const noexcept {
    return io_request<detail::void_kind>{
        {&detail::prep_fsync, fd_, nullptr, 0, 0, IORING_FSYNC_DATASYNC, 0}};
}

detail::close_request file::close() noexcept {
    return detail::close_request{release()};
}

namespace detail {

open_awaiter::open_awaiter(std::string path, int flags, unsigned mode) noexcept
    : path_(std::move(path)) {
    op_.prep = &prep_openat;
    op_.args.prep = &prep_openat;
    op_.args.op_flags = static_cast<std::uint32_t>(flags | O_CLOEXEC);
    op_.args.mode = mode;
}

result<file> open_awaiter::await_resume() const noexcept {
    result<int> r = op_.outcome();
    if (!r) {
        return r.error();
    }
    return file::adopt(*r);
}

close_awaiter::close_awaiter(int fd) noexcept {
    op_.prep = &prep_close;
    op_.args.prep = &prep_close;
    op_.args.fd = fd;
}

result<void> close_awaiter::await_resume() const noexcept {
    if (op_.args.fd < 0) {
        return system_error_code(EBADF);
    }
    result<int> r = op_.outcome();
    if (!r) {
        return r.error();
    }
    return {};
}

close_request::~close_request() {
    if (fd_ >= 0) {
        ::close(fd_);
    }
}

} // namespace detail

} // namespace tether
