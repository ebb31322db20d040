#include "net/unix_listener.hpp"

#include "net/detail/socket_ops.hpp"

#include <cerrno>
#include <sys/socket.h>
#include <unistd.h>

namespace tether::net {

unix_listener& unix_listener::operator=(unix_listener&& o) noexcept {
    if (this != &o) {
        close();
        acc_ = std::exchange(o.acc_, nullptr);
        path_ = std::move(o.path_);
    }
    return *this;
}

result<unix_listener> unix_listener::bind(const address& at) {
    return bind(at, listen_options{});
}

result<unix_listener> unix_listener::bind(const address& at, const listen_options& opts) {
    std::string path = at.path();
    if (at.family() != address_family::local || path.empty()) {
        return std::make_error_code(std::errc::invalid_argument);
    }
    result<int> fd = detail::open_socket(AF_UNIX, SOCK_STREAM);
    if (!fd) {
        return fd.error();
    }
    if (result<void> r = detail::bind_socket(*fd, at); !r) {
        return r.error();
    }
    if (path.front() == '@') {
        path.clear(); // abstract: no file to remove
    }
    if (::listen(*fd, opts.backlog) < 0) {
        int e = errno;
        ::close(*fd);
        if (!path.empty()) {
            ::unlink(path.c_str());
        }
        return system_error_code(e);
    }
    return unix_listener(detail::acceptor_open(*fd, at.to_string()), std::move(path));
}

result<address> unix_listener::local_addr() const noexcept {
    return detail::local_address(detail::acceptor_fd(acc_));
}

void unix_listener::close() noexcept {
    if (acc_ == nullptr) {
        return;
    }
    detail::acceptor_close(std::exchange(acc_, nullptr));
    if (!path_.empty()) {
        ::unlink(path_.c_str());
        path_.clear();
    }
}

} // namespace tether::net
