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
#include <cstdio>
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
/// The duration runs from when the server read the request's first bytes until its handler
/// returned, as nginx's `$request_time` counts from the first bytes read: the pipelined
/// requests that one read brings share that start, so a request's time includes its wait
/// behind the requests before it. (One clock reading per read, not one per request. A
/// request whose first bytes came while its connection waited for something else, such as
/// an earlier request's handler that suspended, is timed from when the connection takes them
/// in; one that no `server` read, from when the access log's step runs.)
///
/// Without a sink, the lines go to stderr as `access_log(stderr)` writes them.
middleware access_log(std::function<void(std::string_view line)> sink = {});

/// Writes the lines of `access_log(sink)`, each followed by '\n', to `out`, in batches: the
/// lines of the requests a connection answers in one turn (a pipelined batch) go out in one
/// `fwrite`, just before their responses are written. A line is written at the latest when
/// its response is, or when its connection ends, so every line is in `out` once
/// `server::shutdown()` has returned (flush `out` to see it in the file). The lines of a
/// request not served by a `server` are written at once.
///
/// A line's duration starts as `access_log(sink)`'s does and ends when its batch is
/// written, just before its response (nginx's `$request_time` ends once the response is
/// sent): the requests of a batch share that end, so a request's time includes its wait for
/// the handlers of the requests after it in the batch, as its response does. (One clock
/// reading per batch, not one per request.)
///
/// Buffering: the access log keeps no lines past their turn; `out`'s own buffer decides how
/// often they reach the file (`setvbuf` sizes it; stderr, the default, has none). A bigger
/// buffer saves `write` calls, not time: writing to a file costs the kernel per byte, and
/// one call per 4 KiB of lines (BUFSIZ) costs no more per line than one per 64 KiB.
///
/// Thread safety: `fwrite` locks `out`; servers on several loops may share it (their lines
/// never interleave within a line).
middleware access_log(std::FILE* out);

/// Like `access_log(std::FILE*)`, with the batches given to `sink`: one or more lines, each
/// ending in '\n'. `sink` must not throw (what it throws is dropped).
///
/// Thread safety: `sink` is called on the loop of the connection; a handler shared by the
/// servers of several loops calls it from each of their threads.
middleware access_log_batched(std::function<void(std::string_view lines)> sink);

/// Turns an exception from the handler into a 500 response (when nothing was sent yet) and
/// a line on `sink`, so that one failing request never takes the server down.
///
/// Synchronous, as `request_id()` and `access_log()` are: among the outermost middleware of
/// a server's handler it costs no coroutine frame per request; the middleware outside it see
/// the 500 as a request that succeeded, those inside it see the failure.
middleware recover(std::function<void(std::string_view line)> sink = {});

/// Runs the handler under `with_timeout(request context, d)`: every await in it resumes
/// with `errc::deadline_exceeded` when `d` passes, its I/O is canceled, and the client gets
/// 503 (unless the handler had already started sending its response).
///
/// Synchronous steps, as `recover()`'s: the handler's own context is the one with the
/// deadline (`req.ctx()`), and no coroutine frame is added per request.
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
///
/// Synchronous steps, as `recover()`'s: the handler runs under the context with the
/// identity (`req.ctx()`), no coroutine frame is added per request, and a `serve_mux` route
/// of `bearer_auth` around `from_sync`'s handler is served as a synchronous one.
middleware bearer_auth(std::function<std::optional<identity>(std::string_view token)> verify);

} // namespace tether::http
