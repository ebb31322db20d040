#pragma once
// client: an HTTP/1.1 client with keep-alive connection reuse, bounded by the task's context.

#include "net/address.hpp"
#include "net/http/headers.hpp"
#include "runtime/result.hpp"
#include "runtime/task.hpp"

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace tether::http {

/// A response as the client received it, body included.
struct response {
    int status = 0;
    std::string reason;
    int version_minor = 1;
    header_map headers;
    std::string body;

    /// Returns the first value of header `name` (any case), or empty.
    std::string_view header(std::string_view name) const noexcept {
        return headers.get(name).value_or(std::string_view{});
    }
};

/// How a client behaves.
struct client_options {
    std::size_t max_idle_per_host = 8; ///< kept-alive connections kept per host
    bool follow_redirects = false;     ///< off by default (Go follows; we don't)
    int max_redirects = 10;
    std::uint64_t max_body_bytes = 64u << 20; ///< longer bodies are an error
    std::size_t max_header_bytes = 64 * 1024;
};

/// Errors of the HTTP client that are not socket or context errors.
enum class client_errc : int {
    bad_url = 1,    ///< not "http://host:port/path" with an IP or localhost host
    bad_response,   ///< the server's response could not be parsed
    body_too_large, ///< the body is longer than max_body_bytes
    too_many_redirects,
};
/// Returns the error category of `client_errc` ("tether.http.client").
const std::error_category& client_category() noexcept;
inline std::error_code make_error_code(client_errc e) noexcept {
    return {static_cast<int>(e), client_category()};
}

namespace detail {
struct client_state;
}

/// Sends requests and reads responses, reusing kept-alive connections per host.
///
/// URLs are `http://HOST[:PORT][/PATH][?QUERY]` where HOST is an IPv4 address, a bracketed
/// IPv6 address or `localhost` (no DNS, no TLS yet).
///
/// Cancellation: every request is bounded by the awaiting task's context; a request that
/// is canceled or fails closes its connection (it is never returned to the pool).
///
/// Thread safety: one loop.
class client {
public:
    explicit client(client_options opts = {});
    ~client();
    client(const client&) = delete;
    client& operator=(const client&) = delete;

    /// Sends GET `url`.
    task<result<response>> get(std::string url);
    /// Sends `method` `url` with `headers` and `body` (Content-Length is added when the body
    /// is not empty or the method usually has one).
    task<result<response>> request(std::string method, std::string url, header_map headers = {},
                                   std::string body = {});

    /// Returns how many idle connections the pool holds (for tests).
    std::size_t idle_connections() const noexcept;

private:
    std::shared_ptr<detail::client_state> s_;
};

} // namespace tether::http

template <>
struct std::is_error_code_enum<tether::http::client_errc> : std::true_type {};
