#pragma once
// tcp_stream: a TCP connection; connect, read, write, shut down, socket options.

#include "net/address.hpp"
#include "net/stream_socket.hpp"
#include "runtime/result.hpp"
#include "runtime/task.hpp"

#include <chrono>
#include <cstdint>
#include <string>

namespace tether::net {

/// A TCP connection (IPv4 or IPv6): `connect` one, or take one from `tcp_listener::accept`.
///
/// Reads, writes, `shutdown`, `close` and the buffer-size options come from
/// `stream_socket`, with its errors, cancellation and lifetime rules.
///
/// Example:
///
///     result<tcp_stream> s = co_await tcp_stream::connect(*address::parse("127.0.0.1:7"));
///     if (!s) { co_return s.error(); }
///     auto [n, err] = co_await s->write_all("ping");
class tcp_stream : public stream_socket {
public:
    /// Makes a stream that is not open.
    tcp_stream() noexcept = default;

    /// Connects to `to` and returns the connected stream.
    ///
    /// Errors: `std::errc::connection_refused` when nothing listens there,
    /// `std::errc::timed_out` when the kernel gives up, `std::errc::invalid_argument` for an
    /// address that is not IP.
    ///
    /// Cancellation: the connect is bounded by the awaiting task's context: at its deadline
    /// it is canceled in the kernel and the await returns `errc::deadline_exceeded` (run it
    /// under `with_timeout` to bound it alone). Under a context already done it returns the
    /// context's error without creating a socket.
    static task<result<tcp_stream>> connect(address to);

    /// Resolves `host` (`resolve`) and connects to its addresses in order until one
    /// answers, as Go's Dial does; returns the first stream that connects.
    ///
    /// Errors: the resolver's, or the last address's connect error.
    ///
    /// Cancellation: the whole of it is bounded by the awaiting task's context; when it
    /// ends, the address being tried is abandoned and the rest are not tried.
    static task<result<tcp_stream>> connect(std::string host, std::uint16_t port);

    /// Takes ownership of `fd`, a connected TCP socket (from another library, or inherited).
    ///
    /// The socket may be blocking or not: io_uring waits for it either way.
    static tcp_stream adopt(int fd) noexcept { return tcp_stream(fd); }

    /// Sets TCP_NODELAY: send small writes at once instead of coalescing them (Nagle).
    result<void> set_nodelay(bool on) const noexcept;
    /// Returns TCP_NODELAY.
    result<bool> nodelay() const noexcept;
    /// Sets SO_KEEPALIVE: probe an idle connection so that a vanished peer is noticed.
    result<void> set_keepalive(bool on) const noexcept;
    /// Turns keepalive on with its timings: the first probe after `idle` without traffic,
    /// then every `interval`, giving up (the next operation fails with ETIMEDOUT) after
    /// `count` unanswered probes. Times are rounded down to whole seconds, at least 1.
    result<void> set_keepalive(std::chrono::seconds idle, std::chrono::seconds interval,
                               int count) const noexcept;
    /// Returns SO_KEEPALIVE.
    result<bool> keepalive() const noexcept;

private:
    explicit tcp_stream(int fd) noexcept : stream_socket(fd) {}
};

} // namespace tether::net
