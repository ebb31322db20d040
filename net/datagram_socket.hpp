#pragma once
// datagram_socket: a message socket, the base of udp_socket and unix_datagram.

#include "net/address.hpp"
#include "net/detail/socket_ops.hpp"
#include "runtime/result.hpp"

#include <cstddef>
#include <span>
#include <sys/socket.h>
#include <utility>

namespace tether::net {

/// A datagram socket that owns its file descriptor: each send is one message, each receive
/// takes one whole message (or its beginning, if the buffer is too short).
///
/// Move-only; destroying an open socket closes it. Any number of sends and receives may be in
/// flight at once; each receive takes a different datagram.
///
/// Errors: errnos as `std::system_category()` codes. On a connected socket an ICMP error
/// from the peer (port unreachable) comes back as `std::errc::connection_refused` from a later
/// operation. Sends use MSG_NOSIGNAL.
///
/// Cancellation: as for `stream_socket`: sticky (a done context submits nothing), and a
/// pending operation is canceled in the kernel when its context ends; a receive canceled
/// before a datagram arrived takes none.
///
/// Lifetime: buffers are borrowed until the await resumes; awaitables may be moved until
/// they are awaited. Close or destroy the socket only when no operation is in flight.
class datagram_socket {
public:
    /// Makes a socket that is not open.
    datagram_socket() noexcept = default;
    datagram_socket(datagram_socket&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
    datagram_socket& operator=(datagram_socket&& o) noexcept;
    datagram_socket(const datagram_socket&) = delete;
    datagram_socket& operator=(const datagram_socket&) = delete;
    /// Closes the socket if it is open.
    ~datagram_socket();

    /// Returns true if the socket holds a file descriptor.
    bool is_open() const noexcept { return fd_ >= 0; }
    /// Returns the file descriptor, or -1.
    int native_handle() const noexcept { return fd_; }
    /// Gives up ownership: returns the file descriptor (or -1) and leaves the socket closed.
    int release() noexcept { return std::exchange(fd_, -1); }

    /// Sends `data` as one datagram to `to` and returns its size. An empty `data` sends an
    /// empty datagram.
    ///
    /// Errors: `std::errc::message_size` if it is too long for one datagram.
    /// Lifetime: `to` is copied.
    [[nodiscard]] detail::send_to_awaiter send_to(std::span<const std::byte> data,
                                                  const address& to) const noexcept {
        return {fd_, data, to};
    }
    /// Receives one datagram into `buf` and returns its size, its sender and whether it was
    /// longer than `buf` (the rest is dropped).
    [[nodiscard]] detail::recv_from_awaiter recv_from(std::span<std::byte> buf) const noexcept {
        return {fd_, buf};
    }
    /// Sends `data` as one datagram to the connected peer.
    ///
    /// Errors: `std::errc::destination_address_required` if the socket is not connected.
    [[nodiscard]] detail::some_awaiter send(std::span<const std::byte> data) const noexcept {
        return {detail::transfer_op::kind::send,
                fd_,
                const_cast<std::byte*>(data.data()),
                data.size(),
                MSG_NOSIGNAL,
                false};
    }
    /// Receives one datagram into `buf` and returns the bytes stored; a longer datagram is
    /// cut to `buf` (use `recv_from` to know).
    [[nodiscard]] detail::some_awaiter recv(std::span<std::byte> buf) const noexcept {
        return {detail::transfer_op::kind::recv, fd_, buf.data(), buf.size(), 0, false};
    }

    /// Sets the default peer: `send` and `recv` then talk to `to` only, and datagrams from
    /// others are dropped. Never suspends.
    result<void> connect(const address& to) const noexcept;

    /// Closes the socket; a closed socket is not an error.
    result<void> close() noexcept;
    /// Returns the address the socket is bound to.
    result<address> local_addr() const noexcept;
    /// Returns the connected peer's address.
    result<address> peer_addr() const noexcept;
    /// Sets SO_SNDBUF.
    result<void> set_send_buffer_size(int bytes) const noexcept;
    /// Sets SO_RCVBUF: how many bytes of datagrams wait before the kernel drops new ones.
    result<void> set_receive_buffer_size(int bytes) const noexcept;

protected:
    explicit datagram_socket(int fd) noexcept : fd_(fd) {}

    int fd_ = -1;
};

} // namespace tether::net
