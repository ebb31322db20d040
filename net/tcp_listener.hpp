#pragma once
// tcp_listener: a listening TCP socket; accept() takes connections from a multishot accept.

#include "net/address.hpp"
#include "net/detail/acceptor.hpp"
#include "net/listen_options.hpp"
#include "net/tcp_stream.hpp"
#include "runtime/result.hpp"

#include <cstddef>
#include <utility>
#include <vector>

namespace tether::net {

/// A TCP socket listening for connections.
///
/// One multishot accept (IORING_ACCEPT_MULTISHOT) runs in the kernel while accepts are
/// wanted; connections it accepts before anyone awaits `accept()` wait in a short queue
/// (past 128 the multishot is paused and the rest wait in the kernel's backlog).
///
/// When the process runs out of descriptors or memory (EMFILE, ENFILE, ENOMEM, ENOBUFS),
/// the listener stops accepting and tries again after 5 ms, doubling up to 1 s, until the
/// kernel has resources again; pending connections wait in the backlog meanwhile. Each such
/// episode is logged once to stderr. Waiting accepts keep waiting: nothing spins and nothing
/// fails.
///
/// Thread safety: a listener accepts on the loop of its first `accept()`; close and destroy
/// it there, before that loop.
class tcp_listener {
public:
    /// Makes a listener that is not open.
    tcp_listener() noexcept = default;
    tcp_listener(tcp_listener&& o) noexcept : acc_(std::exchange(o.acc_, nullptr)) {}
    tcp_listener& operator=(tcp_listener&& o) noexcept;
    tcp_listener(const tcp_listener&) = delete;
    tcp_listener& operator=(const tcp_listener&) = delete;
    /// Closes the listener (as `close()`).
    ~tcp_listener() { close(); }

    /// Binds a socket to `at` and listens on it. Port 0 lets the kernel choose: read it
    /// back with `local_addr()`.
    ///
    /// Errors: `std::errc::address_in_use`, `std::errc::permission_denied`,
    /// `std::errc::invalid_argument` for an address that is not IP.
    static result<tcp_listener> bind(const address& at);
    /// As above, with `opts`.
    static result<tcp_listener> bind(const address& at, const listen_options& opts);

    /// Binds `n` sockets to `at` in one SO_REUSEPORT group and listens on each: one accept
    /// path per loop, the kernel spreading new connections over them by their addresses. Port
    /// 0 lets the kernel choose the port for the first; the others bind the same one.
    /// `opts.reuse_port` is implied. `n` of 0 is taken as 1.
    ///
    /// Each listener accepts on the loop of its first `accept()`, like any listener: give
    /// each loop its own. Closing one resets the connections waiting in its own backlog (the
    /// kernel does not move them to the others): close them together, at shutdown.
    ///
    /// Errors: as `bind`; nothing stays bound on error.
    static result<std::vector<tcp_listener>> bind_group(const address& at, std::size_t n,
                                                        listen_options opts = {});

    /// Awaits the next connection: `result<tcp_stream>`.
    ///
    /// Errors: `io_errc::closed` if the listener is closed (before or while waiting).
    ///
    /// Cancellation: cancel-safe: a canceled accept takes no connection (a connection
    /// accepted meanwhile waits for the next `accept()`). Under a context already done, it
    /// returns the context's error and takes nothing.
    [[nodiscard]] detail::accept_awaiter<tcp_stream> accept() const noexcept {
        return detail::accept_awaiter<tcp_stream>{acc_};
    }

    /// Returns the address the listener is bound to (with the port the kernel chose).
    result<address> local_addr() const noexcept;
    /// Returns true if the listener is open.
    bool is_open() const noexcept { return acc_ != nullptr; }
    /// Returns the listening socket's descriptor, or -1.
    int native_handle() const noexcept { return detail::acceptor_fd(acc_); }

    /// Stops listening: closes the socket and the connections accepted that nobody took,
    /// and resumes waiting accepts with `io_errc::closed`. Closing twice does nothing.
    void close() noexcept;

    /// Returns counters of the accept machinery (for tests and monitoring).
    detail::acceptor_stats stats() const noexcept { return detail::acceptor_get_stats(acc_); }

private:
    explicit tcp_listener(detail::acceptor* a) noexcept : acc_(a) {}
    detail::acceptor* acc_ = nullptr;
};

} // namespace tether::net
