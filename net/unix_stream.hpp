#pragma once
// unix_stream: a connected Unix-domain stream socket; connect to a path, or make a pair.

#include "net/address.hpp"
#include "net/stream_socket.hpp"
#include "runtime/result.hpp"
#include "runtime/task.hpp"

#include <utility>

namespace tether::net {

/// A connected Unix-domain stream socket (AF_UNIX, SOCK_STREAM): `connect` to a listener's
/// path, take one from `unix_listener::accept`, or make a connected `pair`.
///
/// Reads, writes, `shutdown` and `close` come from `stream_socket`, with its errors,
/// cancellation and lifetime rules.
class unix_stream : public stream_socket {
public:
    /// Makes a stream that is not open.
    unix_stream() noexcept = default;

    /// Connects to the listener at `to` (a path or an abstract name).
    ///
    /// Errors: `std::errc::no_such_file_or_directory` if the path does not exist,
    /// `std::errc::connection_refused` if nothing listens there,
    /// `std::errc::invalid_argument` for an address that is not Unix-domain.
    ///
    /// Cancellation: bounded by the awaiting task's context, as `tcp_stream::connect`.
    static task<result<unix_stream>> connect(address to);

    /// Returns two connected streams (socketpair): what one writes, the other reads.
    static result<std::pair<unix_stream, unix_stream>> pair();

    /// Takes ownership of `fd`, a connected Unix-domain stream socket.
    static unix_stream adopt(int fd) noexcept { return unix_stream(fd); }

private:
    explicit unix_stream(int fd) noexcept : stream_socket(fd) {}
};

} // namespace tether::net
