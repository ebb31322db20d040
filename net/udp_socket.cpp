#include "net/udp_socket.hpp"

#include "net/detail/socket_ops.hpp"

#include <sys/socket.h>

namespace tether::net {

result<udp_socket> udp_socket::bind(const address& at) {
    if (!at.is_ip()) {
        return std::make_error_code(std::errc::invalid_argument);
    }
    result<int> fd = detail::open_socket(at.native_family(), SOCK_DGRAM);
    if (!fd) {
        return fd.error();
    }
    if (result<void> r = detail::bind_socket(*fd, at); !r) {
        return r.error();
    }
    return udp_socket(*fd);
}

result<udp_socket> udp_socket::open(address_family family) {
    if (family != address_family::ipv4 && family != address_family::ipv6) {
        return std::make_error_code(std::errc::invalid_argument);
    }
    result<int> fd =
        detail::open_socket(family == address_family::ipv4 ? AF_INET : AF_INET6, SOCK_DGRAM);
    if (!fd) {
        return fd.error();
    }
    return udp_socket(*fd);
}

} // namespace tether::net
