#pragma once
// unix_datagram: a Unix-domain datagram socket; bound to a path, unbound, or a pair.

#include "net/address.hpp"
#include "net/datagram_socket.hpp"
#include "runtime/result.hpp"

#include <utility>

namespace tether::net {

/// A Unix-domain datagram socket (AF_UNIX, SOCK_DGRAM): reliable, ordered messages between
/// processes on one machine. Sends and receives come from `datagram_socket`.
///
/// A socket bound to a path leaves its file behind when closed (as with the socket API);
/// remove it when done. An unbound sender shows up as the unnamed address in `recv_from`
/// and can't be answered.
class unix_datagram : public datagram_socket {
public:
    /// Makes a socket that is not open.
    unix_datagram() noexcept = default;

    /// Opens a socket bound to `at` (a path or an abstract name).
    ///
    /// Errors: `std::errc::address_in_use` if the path exists; `std::errc::invalid_argument`
    /// for an address that is not Unix-domain.
    static result<unix_datagram> bind(const address& at);
    /// Opens a socket that is not bound (it can send, and receive once connected to).
    static result<unix_datagram> open();
    /// Returns two connected sockets (socketpair).
    static result<std::pair<unix_datagram, unix_datagram>> pair();
    /// Takes ownership of `fd`, a Unix-domain datagram socket.
    static unix_datagram adopt(int fd) noexcept { return unix_datagram(fd); }

private:
    explicit unix_datagram(int fd) noexcept : datagram_socket(fd) {}
};

} // namespace tether::net
