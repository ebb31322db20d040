#include "net/unix_datagram.hpp"

#include "net/detail/socket_ops.hpp"

#include <cerrno>
#include <sys/socket.h>

namespace tether::net {

result<unix_datagram> unix_datagram::bind(const address& at) {
    if (at.family() != address_family::local) {
        return std::make_error_code(std::errc::invalid_argument);
    }
    result<int> fd = detail::open_socket(AF_UNIX, SOCK_DGRAM);
    if (!fd) {
        return fd.error();
    }
    if (result<void> r = detail::bind_socket(*fd, at); !r) {
        return r.error();
    }
    return unix_datagram(*fd);
}

result<unix_datagram> unix_datagram::open() {
    result<int> fd = detail::open_socket(AF_UNIX, SOCK_DGRAM);
    if (!fd) {
        return fd.error();
    }
    return unix_datagram(*fd);
}

result<std::pair<unix_datagram, unix_datagram>> unix_datagram::pair() {
    int fds[2];
    if (::socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, fds) < 0) {
        return system_error_code(errno);
    }
    return std::pair{unix_datagram(fds[0]), unix_datagram(fds[1])};
}

} // namespace tether::net
