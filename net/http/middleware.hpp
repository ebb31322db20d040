#pragma once
// Middleware: handler wrappers that put request-scoped values into the request's context.
//   request_id     X-Request-ID taken or generated, in the context and echoed back
//   access_log     one line per request: ID, status, bytes, duration
//   recover        an exception becomes a 500, the server keeps serving
//   timeout        the handler runs under with_timeout; 503 when it expires
//   bearer_auth    a verified bearer token's identity (user, role) in the context

#include "context/context.hpp"
#include "net/http/server.hpp"

#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

namespace tether::http {

/// Returns the request ID that `request_id()` put in `ctx`, or empty.
std::string_view request_id_of(const context& ctx) noexcept;

/// Takes the request's `X-Request-ID` (if it is 1 to 128 visible characters) or generates
/// one, puts it in the request's context (`request_id_of(ctx)`) and echoes it in the
/// response.
middleware request_id();

/// Writes one line per request to `sink` once the handler has returned:
/// `127.0.0.1:5000 "GET /path HTTP/1.1" 200 13 0.123ms id=4f2a...`.
///
/// The default sink writes to stderr.
middleware access_log(std::function<void(std::string_view line)> sink = {});

/// Turns an exception from the handler into a 500 response (when nothing was sent yet) and
/// a line on `sink`, so that one failing request never takes the server down.
middleware recover(std::function<void(std::string_view line)> sink = {});

/// Runs the handler under `with_timeout(request context, d)`: every await in it resumes
/// with `errc::deadline_exceeded` when `d` passes, its I/O is canceled, and the client gets
/// 503 (unless the handler had already started sending its response).
middleware timeout(std::chrono::nanoseconds d);

/// Who a request is from, as a verified credential says.
struct identity {
    std::string subject; ///< the user (a JWT's "sub")
    std::string role;    ///< the role, if the credential names one
};

/// Returns the identity that `bearer_auth` put in `ctx`, or null.
const identity* identity_of(const context& ctx) noexcept;

/// Checks `Authorization: Bearer <token>` with `verify`; on success puts the identity in the
/// request's context (`identity_of(ctx)`), otherwise answers 401 with
/// `WWW-Authenticate: Bearer` and never calls the handler.
///
/// `verify` returns the identity of a valid token, or nullopt.
middleware bearer_auth(std::function<std::optional<identity>(std::string_view token)> verify);

} // namespace tether::http
