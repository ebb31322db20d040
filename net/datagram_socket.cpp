#include "net/datagram_socket.hpp"

#include <cerrno>
#include <sys/socket.h>

namespace tether::net {

datagram_socket& datagram_socket::operator=(datagram_socket&& o) noexcept {
    if (this != &o) {
        (void)detail::close_fd(fd_);
        fd_ = std::exchange(o.fd_, -1);
    }
    return *this;
}

datagram_socket::~datagram_socket() {
    (void)detail::close_fd(fd_);
}

result<void> datagram_socket::connect(const address& to) const noexcept {
    if (::connect(fd_, to.data(), to.size()) < 0) {
        return system_error_code(errno);
    }
    return {};
}

result<void> datagram_socket::close() noexcept {
    return detail::close_fd(fd_);
}

result<address> datagram_socket::local_addr() const noexcept {
    return detail::local_address(fd_);
}

result<address> datagram_socket::peer_addr() const noexcept {
    return detail::peer_address(fd_);
}

result<void> datagram_socket::set_send_buffer_size(int bytes) const noexcept {
    return detail::set_option(fd_, SOL_SOCKET, SO_SNDBUF, bytes);
}

result<void> datagram_socket::set_receive_buffer_size(int bytes) const noexcept {
    return detail::set_option(fd_, SOL_SOCKET, SO_RCVBUF, bytes);
}

} // namespace tether::net
