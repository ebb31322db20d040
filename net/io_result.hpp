#pragma once
// io_result: the bytes an operation transferred, with the error that stopped it.

#include "context/errc.hpp"

#include <cstddef>
#include <system_error>

namespace tether::net {

/// What a transfer of many bytes did: how many it moved, and why it stopped before the end.
///
/// `write_all`, `writev` and `read_exact` return it so that partial progress is never lost:
/// when a reset, an EOF or a cancel interrupts them, `bytes` counts what was transferred
/// before, and `error` says what happened. An empty `error` means everything was transferred.
///
/// Example:
///
///     auto [n, err] = co_await stream.write_all(reply);
///     if (err) {
///         log("sent {} of {} bytes: {}", n, reply.size(), err.message());
///     }
struct io_result {
    std::size_t bytes = 0; ///< bytes transferred, whether or not the operation failed
    std::error_code error = tether::detail::no_error; ///< empty on success

    /// Returns true if everything was transferred.
    bool has_value() const noexcept { return !error; }
    explicit operator bool() const noexcept { return !error; }
};

} // namespace tether::net
