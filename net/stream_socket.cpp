#include "net/stream_socket.hpp"

#include <sys/socket.h>

namespace tether::net {

stream_socket& stream_socket::operator=(stream_socket&& o) noexcept {
    if (this != &o) {
        (void)detail::close_fd(fd_);
        fd_ = std::exchange(o.fd_, -1);
    }
    return *this;
}

stream_socket::~stream_socket() {
    (void)detail::close_fd(fd_);
}

result<void> stream_socket::shutdown(shutdown_how how) const noexcept {
    if (::shutdown(fd_, static_cast<int>(how)) < 0) {
        return system_error_code(errno);
    }
    return {};
}

result<void> stream_socket::close() noexcept {
    return detail::close_fd(fd_);
}

result<address> stream_socket::local_addr() const noexcept {
    return detail::local_address(fd_);
}

result<address> stream_socket::peer_addr() const noexcept {
    return detail::peer_address(fd_);
}

result<void> stream_socket::set_send_buffer_size(int bytes) const noexcept {
    return detail::set_option(fd_, SOL_SOCKET, SO_SNDBUF, bytes);
}

result<void> stream_socket::set_receive_buffer_size(int bytes) const noexcept {
    return detail::set_option(fd_, SOL_SOCKET, SO_RCVBUF, bytes);
}

result<int> stream_socket::send_buffer_size() const noexcept {
    return detail::get_option(fd_, SOL_SOCKET, SO_SNDBUF);
}

result<int> stream_socket::receive_buffer_size() const noexcept {
    return detail::get_option(fd_, SOL_SOCKET, SO_RCVBUF);
}

} // namespace tether::net
