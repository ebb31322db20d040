#pragma once
// unix_listener: a listening Unix-domain socket; accept() as tcp_listener's.

#include "net/address.hpp"
#include "net/detail/acceptor.hpp"
#include "net/listen_options.hpp"
#include "net/unix_stream.hpp"
#include "runtime/result.hpp"

#include <string>
#include <utility>

namespace tether::net {

/// A Unix-domain stream socket listening at a path or an abstract name.
///
/// Accepting works as `tcp_listener`'s (multishot accept, a short queue, back-off when
/// descriptors run out). Closing the listener removes the socket file it created, as Go's
/// UnixListener does; an abstract name disappears by itself.
///
/// Thread safety: as `tcp_listener`.
class unix_listener {
public:
    /// Makes a listener that is not open.
    unix_listener() noexcept = default;
    unix_listener(unix_listener&& o) noexcept
        : acc_(std::exchange(o.acc_, nullptr)), path_(std::move(o.path_)) {}
    unix_listener& operator=(unix_listener&& o) noexcept;
    unix_listener(const unix_listener&) = delete;
    unix_listener& operator=(const unix_listener&) = delete;
    /// Closes the listener (as `close()`).
    ~unix_listener() { close(); }

    /// Binds a socket to `at` (a path or an abstract name) and listens on it.
    /// `opts.backlog` applies; the reuse options do not.
    ///
    /// Errors: `std::errc::address_in_use` if the path exists (remove a stale socket file
    /// first), `std::errc::no_such_file_or_directory` if its directory does not,
    /// `std::errc::invalid_argument` for an address that is not Unix-domain or is unnamed.
    static result<unix_listener> bind(const address& at);
    /// As above, with `opts`.
    static result<unix_listener> bind(const address& at, const listen_options& opts);

    /// Awaits the next connection: `result<unix_stream>`; as `tcp_listener::accept`.
    [[nodiscard]] detail::accept_awaiter<unix_stream> accept() const noexcept {
        return detail::accept_awaiter<unix_stream>{acc_};
    }

    /// Returns the address the listener is bound to.
    result<address> local_addr() const noexcept;
    /// Returns true if the listener is open.
    bool is_open() const noexcept { return acc_ != nullptr; }
    /// Returns the listening socket's descriptor, or -1.
    int native_handle() const noexcept { return detail::acceptor_fd(acc_); }
    /// Stops listening and removes the socket file; as `tcp_listener::close`.
    void close() noexcept;

private:
    unix_listener(detail::acceptor* a, std::string path) noexcept
        : acc_(a), path_(std::move(path)) {}
    detail::acceptor* acc_ = nullptr;
    std::string path_; // the socket file to remove on close (empty for an abstract name)
};

} // namespace tether::net
