#pragma once
// udp_socket: a UDP socket; send_to, recv_from, and send/recv once connected.

#include "net/address.hpp"
#include "net/datagram_socket.hpp"
#include "runtime/result.hpp"

namespace tether::net {

/// A UDP socket (IPv4 or IPv6). Sends and receives come from `datagram_socket`.
///
/// Example:
///
///     result<udp_socket> s = udp_socket::bind(address::ipv4_loopback());
///     std::array<std::byte, 1500> buf;
///     result<datagram> d = co_await s->recv_from(buf);
///     co_await s->send_to(std::span(buf.data(), d->size), d->from);
class udp_socket : public datagram_socket {
public:
    /// Makes a socket that is not open.
    udp_socket() noexcept = default;

    /// Opens a socket bound to `at` (port 0 lets the kernel choose).
    ///
    /// Errors: `std::errc::address_in_use`; `std::errc::invalid_argument` for an address that
    /// is not IP.
    static result<udp_socket> bind(const address& at);
    /// Opens a socket of `family` (ipv4 or ipv6) that is not bound: the kernel binds it to
    /// an ephemeral port on its first send.
    static result<udp_socket> open(address_family family);
    /// Takes ownership of `fd`, a UDP socket.
    static udp_socket adopt(int fd) noexcept { return udp_socket(fd); }

private:
    explicit udp_socket(int fd) noexcept : datagram_socket(fd) {}
};

} // namespace tether::net
