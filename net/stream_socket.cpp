#include "net/stream_socket.hpp"

#include <sys/socket.h>

namespace tether::net {

stream_socket& stream_socket::operator=(stream_socket&& o) noexcept {
    if (this != &o) {
        (void)close();
        fd_ = std::exchange(o.fd_, -1);
        rs_ = std::exchange(o.rs_, nullptr);
    }
    return *this;
}

stream_socket::~stream_socket() {
    (void)close();
}

int stream_socket::release() noexcept {
    // The multishot recv, if any, is canceled; it holds its own reference to the socket.
    detail::recv_state_close(std::exchange(rs_, nullptr));
    return std::exchange(fd_, -1);
}

result<void> stream_socket::shutdown(shutdown_how how) const noexcept {
    if (::shutdown(fd_, static_cast<int>(how)) < 0) {
        return system_error_code(errno);
    }
    return {};
}

result<void> stream_socket::close() noexcept {
    // Cancel the multishot recv first; it holds its own reference to the socket, so the
    // descriptor can go at once.
    detail::recv_state_close(std::exchange(rs_, nullptr));
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
