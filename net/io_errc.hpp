#pragma once
// io_errc: how a socket operation ends short without an errno, as std::error_code values.

#include <system_error>

namespace tether::net {

/// Names the ends of a socket operation that the kernel reports without an errno.
///
/// Errnos (ECONNRESET, EPIPE, ECONNREFUSED, ETIMEDOUT, ...) come back as
/// `std::system_category()` codes and compare equal to `std::errc` values; a context that
/// ends an operation reports `tether::errc::canceled` or `errc::deadline_exceeded`.
enum class io_errc : int {
    eof = 1,      ///< the peer closed its side: no more bytes will arrive (a read returned 0)
    closed = 2,   ///< the socket or listener was closed while the operation waited
    too_long = 3, ///< a delimited read found no delimiter within the reader's limit
};

/// Returns the error category of `io_errc` (its name is "tether.net").
const std::error_category& io_category() noexcept;

/// Returns `e` as an error code of `io_category()`.
inline std::error_code make_error_code(io_errc e) noexcept {
    return {static_cast<int>(e), io_category()};
}

} // namespace tether::net

template <>
struct std::is_error_code_enum<tether::net::io_errc> : std::true_type {};
