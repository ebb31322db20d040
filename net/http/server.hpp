#pragma once
// The HTTP/1.1 server: every request runs under its own child context.
//   request          the head, path parameters, and a streaming body reader
//   response_writer  status, headers and body; Content-Length or chunked
//   handler          task<void>(request&, response_writer&), Go's ServeHTTP
//   sync_handler     void(request&, response_writer&): a handler that never awaits
//   serve_mux        routes patterns ("GET /items/{id}") to handlers
//   server           accept loop, keep-alive, pipelining, timeouts, graceful shutdown

#include "context/context.hpp"
#include "context/with_cancel.hpp"
#include "net/address.hpp"
#include "net/http/headers.hpp"
#include "net/http/parser.hpp"
#include "net/http/route.hpp"
#include "net/tcp_listener.hpp"
#include "runtime/result.hpp"
#include "runtime/task.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

namespace tether::http {

class serve_mux;

namespace detail {
struct conn;
struct server_state;

/// Takes access-log lines in batches, each line ending in '\n'.
class log_batch {
public:
    virtual ~log_batch() = default;
    /// Writes `lines` (one or more, each ending in '\n'); must not throw.
    virtual void write(std::string_view lines) noexcept = 0;
};

/// The access-log lines a thread's connections gathered and not yet written: one buffer per
/// thread (it stays in cache however many connections there are), written by the next
/// connection that writes its responses, or ends.
///
/// The buffer keeps its size: lines are written in place past `used` (`room`, then
/// `commit`), so that a line costs no zero-filling resize.
///
/// A line's duration is written when the lines are handed on (`flush`), from one clock
/// reading for them all: its field in `buf` is left for `end_durations` until then.
struct log_lines {
    /// A line whose duration is still to be written.
    struct timed_line {
        std::size_t at;      ///< where its field starts in `buf` (`duration_width` bytes)
        std::uint64_t start; ///< its request's start (a mark of the access log's clock)
    };
    /// The bytes a line leaves for its duration: "1.234" (below 10 ms); a longer duration
    /// moves the rest of the lines along, by at most `duration_growth` bytes per line (for
    /// which `room` is asked to leave space).
    static constexpr std::size_t duration_width = 5;
    static constexpr std::size_t duration_growth = 16;

    std::string buf;               ///< [0, used) not yet handed to `to`; the rest is room
    std::size_t used = 0;          ///< bytes of lines in `buf`
    std::shared_ptr<log_batch> to; ///< where the lines go
    std::vector<timed_line> timed; ///< the lines in `buf` whose duration is to be written
    /// Returns where `n` more bytes may be written.
    char* room(std::size_t n) {
        if (buf.size() - used < n) {
            buf.resize(std::max(used + n, 2 * buf.size()));
        }
        return buf.data() + used;
    }
    /// Makes the bytes written at `room()` up to `end` lines.
    void commit(const char* end) noexcept { used = static_cast<std::size_t>(end - buf.data()); }
    /// Writes the durations of the `timed` lines, which end now (defined with the access
    /// log, whose clock it reads once).
    void end_durations() noexcept;
    /// Hands the lines to `to`, their durations written.
    void flush() noexcept {
        if (used != 0) {
            if (!timed.empty()) {
                end_durations();
            }
            to->write(std::string_view(buf.data(), used));
            used = 0;
        }
    }
};

/// The calling thread's gathered access-log lines, once it has had a line (else null): one
/// %fs-relative load (initial-exec, constant-initialized: no guard, no __tls_get_addr).
[[gnu::tls_model("initial-exec")]] extern constinit thread_local log_lines* thread_lines_ptr;

/// Points `thread_lines_ptr` at the calling thread's lines (at its first line).
log_lines& first_thread_log() noexcept;

/// Returns the calling thread's gathered access-log lines. Inline: the access log takes them
/// at every line.
inline log_lines& thread_log() noexcept {
    log_lines* l = thread_lines_ptr;
    return l != nullptr ? *l : first_thread_log();
}

/// What a connection keeps for the access log: its peer's address as text and ` "` (a line's
/// start), formatted at its first line. Held in the connection itself when it is short (any
/// IPv4 peer's is at most 23 bytes), next to the peer's address: a line reads it without
/// following a pointer to another cache line.
struct conn_log {
    static constexpr std::size_t inline_max = 23;
    const char* data = nullptr; ///< the text (in `text` or `more`); null until formatted
    std::uint32_t size = 0;     ///< its length
    char text[inline_max];
    std::unique_ptr<char[]> more; ///< a longer text (other families, most IPv6 peers)

    conn_log() noexcept = default;
    conn_log(const conn_log&) = delete; // `data` may point into the object
    conn_log& operator=(const conn_log&) = delete;
    ~conn_log() = default;

    /// Returns true once the text is formatted.
    bool known() const noexcept { return data != nullptr; }
    /// Returns the text (once `known()`).
    std::string_view lead() const noexcept { return {data, size}; }
};

/// Returns the access-log state of connection `c` (not null).
conn_log& log_of(conn* c) noexcept;

/// How many access logs exist (access_log()'s sinks and their copies, in middleware not yet
/// destroyed). While there are any, a server reads the access log's clock when a read brings
/// bytes: the mark is the start of the requests those bytes begin (`request::arrived_`).
extern std::atomic<std::size_t> access_logs;
/// Reads the access log's clock: a mark that the access log turns into a duration.
std::uint64_t access_log_mark() noexcept;
/// access_log_mark() while any access log exists, else 0 (no reading).
inline std::uint64_t log_mark_if_logging() noexcept {
    return access_logs.load(std::memory_order_relaxed) != 0 ? access_log_mark() : 0;
}
} // namespace detail

/// One request as the handler sees it.
///
/// Lifetime: valid until the handler's task completes; views point into the connection's
/// buffer.
class request {
public:
    request_head head;  ///< method, target, version, fields
    path_params params; ///< wildcard values of the matched pattern

    std::string_view method() const noexcept { return head.method; }
    std::string_view target() const noexcept { return head.target; }
    std::string_view path() const noexcept { return head.path(); }
    std::string_view query() const noexcept { return head.query(); }
    /// Returns the first value of header `name` (any case), or empty.
    std::string_view header(std::string_view name) const noexcept {
        return head.header(name).value_or(std::string_view{});
    }
    /// Returns the value of wildcard `name` of the matched pattern (Go's PathValue).
    std::string_view path_value(std::string_view name) const noexcept { return params.get(name); }

    /// Returns the request's context: a child of the connection's context, canceled when
    /// the client goes away, when the handler returns, or when the server's base context is
    /// canceled. The handler's task already runs under it (`co_await this_coro::context`);
    /// middleware may replace it (`with_context`) for the handlers it wraps.
    const context& ctx() const noexcept { return ctx_; }

    /// Reads up to `buf.size()` bytes of the body; 0 means the body has ended.
    ///
    /// Content-Length and chunked bodies are streamed: nothing is buffered whole. The first
    /// read answers `Expect: 100-continue`.
    ///
    /// Errors: `std::errc::message_size` past the server's `max_body_bytes`;
    /// `std::errc::bad_message` for malformed chunked framing; `net::io_errc::eof` if the
    /// client closed before the end; the context's error.
    task<result<std::size_t>> read_body(std::span<char> buf);
    /// Reads the whole body into a string (bounded by `max_body_bytes`).
    task<result<std::string>> read_all();

    // Set by the server.
    context ctx_;
    detail::conn* conn_ = nullptr;
    /// access_log_mark() at the read that brought the request's first bytes; 0 if there was
    /// none (no access log then, or a request not read by a server).
    std::uint64_t arrived_ = 0;

    net::address remote; ///< the client's address (after the fields a request touches)
    /// The head's bytes, once reading a chunked body needs the connection's buffer back
    /// (the views in `head` then point here).
    std::string head_copy_;
};

namespace detail {
/// A growable byte buffer: bytes appended in place (short pieces without a call to memcpy),
/// or written past `size()` (`room`, then `commit`) with no zero-filling resize; the storage
/// is kept across `clear()`. Its storage can be handed over whole (`release_storage`, then
/// `adopt` in another buffer), as the server's pool of output buffers does.
class byte_buffer {
public:
    using value_type = char; // for std::back_inserter

    /// What `release_storage` gives up: a `new char[cap]`, or null.
    struct storage {
        char* data;
        std::size_t cap;
    };

    byte_buffer() noexcept = default;
    byte_buffer(const byte_buffer&) = delete;
    byte_buffer& operator=(const byte_buffer&) = delete;
    ~byte_buffer() { delete[] data_; }

    /// Returns where `n` more bytes may be written (at least `min_cap` bytes of storage if
    /// it has to grow).
    char* room(std::size_t n, std::size_t min_cap = 256) {
        if (cap_ - size_ < n) [[unlikely]] {
            grow(n, min_cap);
        }
        return data_ + size_;
    }
    /// Makes the bytes written at `room()` up to `end` part of the buffer.
    void commit(const char* end) noexcept { size_ = static_cast<std::size_t>(end - data_); }
    /// Appends `s`.
    void append(std::string_view s) {
        put_short(room(s.size()), s);
        size_ += s.size();
    }
    byte_buffer& operator+=(std::string_view s) {
        append(s);
        return *this;
    }
    void push_back(char ch) {
        *room(1) = ch;
        ++size_;
    }
    /// Drops the bytes; the storage stays.
    void clear() noexcept { size_ = 0; }
    bool empty() const noexcept { return size_ == 0; }
    std::size_t size() const noexcept { return size_; }
    std::size_t capacity() const noexcept { return cap_; }
    const char* data() const noexcept { return data_; }
    std::string_view view() const noexcept { return {data_, size_}; }
    operator std::string_view() const noexcept { return view(); }

    /// Takes `s` (from `release_storage`) as the storage of this buffer, which holds none.
    void adopt(storage s) noexcept {
        data_ = s.data;
        cap_ = s.cap;
        size_ = 0;
    }
    /// Drops the bytes and gives up the storage (the caller adopts it elsewhere, or deletes
    /// it with `delete[]`).
    storage release_storage() noexcept {
        storage s{data_, cap_};
        data_ = nullptr;
        cap_ = 0;
        size_ = 0;
        return s;
    }

protected:
    /// Where the next byte goes.
    char* tail() noexcept { return data_ + size_; }
    /// Makes room for n more bytes: at least doubles, to at least min_cap.
    [[gnu::noinline]] void grow(std::size_t n, std::size_t min_cap);

private:
    char* data_ = nullptr; ///< [0, size_) the bytes; the rest, to cap_, is room
    std::size_t size_ = 0;
    std::size_t cap_ = 0;
};

/// A response body being built (the storage kept for the next response).
using body_buffer = byte_buffer;
} // namespace detail

/// Builds the response: status, header fields and body.
///
/// Until the first `flush()`, the body is buffered and sent with a Content-Length. A
/// handler that streams (calls `flush()`) without setting Content-Length gets chunked
/// encoding; to an HTTP/1.0 client, which has no chunked coding, a streamed response is
/// sent as it is and the server closes the connection after it (the close ends a body
/// without a length). `Date` is added; HEAD
/// responses send the head only. A response to an HTTP/1.0 request that asked to be kept
/// alive says `Connection: keep-alive`; a `Connection: close` field of the handler's ends
/// the connection after the response.
class response_writer {
public:
    /// The header fields to send; change them before the first write or flush.
    header_map& headers() noexcept { return headers_; }
    /// Sets the status (the first call wins; a write without it sends 200).
    void write_header(int status) noexcept {
        if (status_ == 0) {
            status_ = status;
        }
    }
    /// Appends `data` to the body.
    void write(std::string_view data) {
        write_header(200);
        body_bytes_ += data.size();
        body_.append(data);
    }
    /// Sends what is buffered now (the head, then body bytes as they come).
    ///
    /// Errors: the connection's write error or the context's error.
    task<result<void>> flush();

    int status() const noexcept { return status_ == 0 ? 200 : status_; }
    bool header_written() const noexcept { return status_ != 0; }
    /// Body bytes written by the handler so far.
    std::uint64_t bytes_written() const noexcept { return body_bytes_; }

    // Used by the server.
    void reset(detail::conn* c, bool head_request, bool http10) noexcept;
    // The handler's own Connection field says "close".
    bool says_close() const noexcept;
    // Settles the Connection field of the head about to be written, the connection ending
    // after the response (`close`) or kept: keeps the handler's own "close", drops another
    // field of the handler's that a close would contradict, says keep-alive to an HTTP/1.0
    // client. Returns whether the head is to add "Connection: close".
    bool settle_connection_field(bool close);
    detail::conn* conn_ = nullptr;
    header_map headers_;
    detail::body_buffer body_;
    int status_ = 0;
    bool head_sent_ = false;
    bool chunked_ = false;
    bool head_request_ = false;
    bool http10_ = false; // the request is HTTP/1.0: no chunked coding, keep-alive said aloud
    std::uint64_t body_bytes_ = 0;
};

/// Serves one request: Go's `ServeHTTP(w, r)`, as a coroutine.
///
/// Lifetime: `request` and `response_writer` are borrowed until the task completes.
using handler = std::function<task<void>(request&, response_writer&)>;

/// Serves one request without awaiting anything: Go's `ServeHTTP(w, r)` as a plain function,
/// for the handlers that answer from what they hold (the request, memory, a cache).
///
/// It runs as a coroutine handler would, minus the coroutine: under `req.ctx()` (canceled once
/// it returns), its exception becomes a 500 as a coroutine handler's does (with `recover()`
/// or without), HEAD and the Connection rules apply to its response, and middleware wraps it
/// (`from_sync`). A server or `serve_mux` given one calls it directly, with no coroutine frame
/// per request. A handler that must await (read a body, stream with `flush()`, call another
/// service) is a `handler`.
///
/// Lifetime: `request` and `response_writer` are borrowed until it returns.
using sync_handler = std::function<void(request&, response_writer&)>;

/// A callable that serves a request synchronously: called with (request&, response_writer&),
/// it returns void (what `sync_handler` holds).
template <class F>
concept sync_handler_callable =
    std::is_invocable_v<F&, request&, response_writer&> &&
    std::is_void_v<std::invoke_result_t<F&, request&, response_writer&>>;

namespace detail {
/// The handler `from_sync` makes: `f` in a coroutine of its own, for whoever awaits it (a
/// middleware that is a coroutine). A server or `serve_mux` given one calls `f` directly.
struct sync_adapter {
    sync_handler f;
    task<void> operator()(request& req, response_writer& w) const;
};
} // namespace detail

/// Returns `f` as a `handler`, for the places that take one (`chain`, middleware,
/// `sharded_server`). A server, or a `serve_mux` route, given it (inside synchronous
/// middleware such as `request_id()`, `access_log()`, `recover()`, `timeout()` and
/// `bearer_auth()`, if any) still calls `f` directly; a middleware that is a coroutine
/// awaits it in a frame.
handler from_sync(sync_handler f);

/// Wraps a handler (request ID, logging, auth, timeouts): composable in order.
using middleware = std::function<handler(handler)>;

/// Returns `h` wrapped by `mws`, the first one outermost.
handler chain(handler h, std::initializer_list<middleware> mws);

namespace detail {
/// What a synchronous middleware keeps for one request between its two steps.
struct around_state {
    context saved;           ///< the request's context before `before` replaced it
    std::uint64_t start = 0; ///< when the handler started (a mark of the access log's clock)
    /// A context node linked under `saved`'s node by `link_child_borrowed` (no reference on
    /// it), on which this state holds a reference of its own until `after` ends the borrow;
    /// null when there is none. Should the state go without `after` (a frame destroyed
    /// while its handler was suspended), the destructor gives the link its reference first.
    tether::detail::node* borrowed = nullptr;
    /// Cancels a context `before` made for the handler (the timeout's), if any.
    cancel_handle cancel;
    /// Set by `before` when it answered the request itself (bearer_auth's 401): the handler
    /// is not called, `after` still runs. Cleared before each `before`.
    bool answered = false;

    around_state() noexcept = default;
    around_state(const around_state&) = delete;
    around_state& operator=(const around_state&) = delete;
    ~around_state() {
        if (borrowed != nullptr) {
            tether::detail::own_parent_link(*borrowed);
            borrowed->release();
        }
    }
};

/// A middleware whose work is synchronous, before and after the handler it wraps (the
/// request ID, the access log, recovery, timeouts): no coroutine frame of its own per
/// request. The server runs the steps of the `around_handler`s it is given (the outermost
/// ones, up to `max_around`) in its own frame and awaits the innermost handler's task
/// directly.
class around_steps {
public:
    virtual ~around_steps() = default;
    /// Runs before the handler. May replace `req.ctx_`: the handler then runs under it. May
    /// answer the request itself and set `st.answered` (last, once nothing can throw): the
    /// handler, and the steps inside this one, are then not run.
    virtual void before(request& req, response_writer& w, around_state& st) const = 0;
    /// Runs when the handler (or a step inside this one) threw `e`, if `before` returned,
    /// just before `after`: returns true if it answered the request itself, which then no
    /// longer fails (`after` and the steps outside see it succeed, the connection goes on).
    /// The default answers nothing.
    virtual bool recover(request& req, response_writer& w, const std::exception_ptr& e) const;
    /// Runs once the handler has returned, or thrown (`failed`), if `before` returned;
    /// undoes what `before` did to `req.ctx_`.
    virtual void after(request& req, response_writer& w, around_state& st, bool failed) const = 0;
};

/// The handler a synchronous middleware makes: `steps` around `next`. Awaited as a handler
/// (inside a middleware that is a coroutine), it runs them in a frame of its own.
struct around_handler {
    handler next;
    std::shared_ptr<const around_steps> steps;
    task<void> operator()(request& req, response_writer& w) const;
};

/// Synchronous steps around a synchronous handler, as one synchronous handler: what a
/// `serve_mux` route given `around_handler`s around `from_sync`'s handler calls (no
/// coroutine frame per request).
struct around_sync {
    std::shared_ptr<const around_steps> steps;
    sync_handler next;
    void operator()(request& req, response_writer& w) const;
};

/// How many nested `around_handler`s the server unwraps.
inline constexpr std::size_t max_around = 4;

/// The handler `serve_mux::as_handler` makes. A server given one (inside its synchronous
/// middleware, if any) routes in its own frame, through `serve_mux::handler_task`.
struct mux_handler {
    const serve_mux* mux;
    task<void> operator()(request& req, response_writer& w) const;
};
} // namespace detail

/// Routes requests to handlers by Go 1.22 ServeMux patterns; 404 and 405 (with Allow) for
/// the rest.
class serve_mux {
public:
    /// Registers `h` for `pattern` ("GET /items/{id}", "/static/").
    ///
    /// Errors: throws `std::invalid_argument` for a malformed or conflicting pattern.
    void handle(std::string_view pattern, handler h);
    /// Registers the synchronous handler `f` (a `void(request&, response_writer&)` function
    /// or lambda) for `pattern`: served with no coroutine frame (see `sync_handler`).
    ///
    /// Errors: as above.
    template <sync_handler_callable F>
    void handle(std::string_view pattern, F&& f) {
        if constexpr (std::is_convertible_v<F, route_handler::sync_function>) {
            // A plain function, or a lambda without captures: called directly.
            handle_sync(pattern, route_handler::sync_function(f), {});
        } else {
            handle_sync(pattern, nullptr, sync_handler(std::forward<F>(f)));
        }
    }
    /// Serves `req` with the matching handler.
    task<void> serve(request& req, response_writer& w) const;
    /// Returns a handler that serves through this mux (which must outlive it).
    handler as_handler() const;
    /// Returns the task, not started, of the handler for `req` (matched as `serve` does, the
    /// request's path parameters set), or of the refusal: what the handler from
    /// `as_handler()` returns.
    ///
    /// Lifetime: `req` and `w` are borrowed until the task completes.
    [[gnu::always_inline]] task<void> handler_task(request& req, response_writer& w) const {
        // Most requests: a path of a pattern without wildcards, answered from a table with no
        // route_match (and its two strings) made and dropped.
        if (const std::ptrdiff_t i = routes_.match_known(req.method(), req.path(), req.params);
            i >= 0) [[likely]] {
            return handlers_[static_cast<std::size_t>(i)].start(req, w);
        }
        return matched_task(req, w);
    }
    /// What a server does with `req`: runs the handler for it at once if that is synchronous
    /// (or the refusal) and returns an empty task; else returns the handler's task, not
    /// started (as `handler_task`).
    ///
    /// Lifetime: `req` and `w` are borrowed until the task completes.
    [[gnu::always_inline]] task<void> run_or_start(request& req, response_writer& w) const {
        if (const std::ptrdiff_t i = routes_.match_known(req.method(), req.path(), req.params);
            i >= 0) [[likely]] {
            const route_handler& r = handlers_[static_cast<std::size_t>(i)];
            if (r.is_sync()) {
                r.call_sync(req, w);
                return {};
            }
            return r.start(req, w);
        }
        return matched_run_or_start(req, w);
    }

private:
    // A registered handler: a coroutine one, or a synchronous one. With each, the function it
    // holds if it is a plain function (most are: called directly, not through the
    // std::function's call of it).
    struct route_handler {
        using function = task<void> (*)(request&, response_writer&);
        using sync_function = void (*)(request&, response_writer&);
        handler h;        // a coroutine handler (else empty)
        function f;       // h's plain function, or null
        sync_handler s;   // a synchronous handler (else empty)
        sync_function sf; // the synchronous handler's plain function, or null
        bool is_sync() const noexcept { return sf != nullptr || static_cast<bool>(s); }
        [[gnu::always_inline]] void call_sync(request& req, response_writer& w) const {
            if (sf != nullptr) {
                sf(req, w);
            } else {
                s(req, w);
            }
        }
        // The handler's task (a synchronous handler's in a frame of its own).
        [[gnu::always_inline]] task<void> start(request& req, response_writer& w) const {
            if (is_sync()) [[unlikely]] {
                return sync_task(req, w);
            }
            return f != nullptr ? f(req, w) : h(req, w);
        }
        task<void> sync_task(request& req, response_writer& w) const;
    };

    // handler_task for a request `match_known` has no answer for: the walk over the
    // patterns, or a refusal.
    task<void> matched_task(request& req, response_writer& w) const;
    // run_or_start's likewise.
    task<void> matched_run_or_start(request& req, response_writer& w) const;
    // Registers a synchronous handler: `sf` if a plain function, else `s`.
    void handle_sync(std::string_view pattern, route_handler::sync_function sf, sync_handler s);

    route_table routes_;
    std::vector<route_handler> handlers_;
};

/// Limits and timeouts, as Go's http.Server has them. A zero duration means none.
struct server_options {
    std::chrono::nanoseconds read_header_timeout = std::chrono::seconds(10);
    std::chrono::nanoseconds read_timeout{0};  ///< head and body of one request
    std::chrono::nanoseconds write_timeout{0}; ///< from the end of the head to the response sent
    std::chrono::nanoseconds idle_timeout = std::chrono::seconds(120); ///< between requests
    std::size_t max_connections = 0;         ///< 0: no limit; at the limit, accepts wait
    std::uint64_t max_body_bytes = 8u << 20; ///< 413 beyond
    parser_limits limits;
    /// Go's BaseContext: the context every connection derives from (default: the context
    /// `serve()` runs under).
    std::function<context(const context& serve_ctx)> base_context;
    /// Go's ConnContext: derives a connection's context (for per-connection values).
    std::function<context(const context& base, const net::address& remote)> conn_context;
    /// Receive request bytes with one multishot recv per connection on the loop's pool of
    /// provided buffers, where the kernel has them (false: a recv per read).
    bool multishot_recv = true;
};

/// Counters of the connections' receives (for tests).
struct server_recv_stats {
    /// Multishot recvs submitted.
    std::uint64_t arms = 0;
    /// Multishot recvs canceled because a busy connection had no room for more bytes.
    std::uint64_t pauses = 0;
    /// Plain recvs made where a multishot recv would have been (after ENOBUFS).
    std::uint64_t plain = 0;
    /// Multishot recvs the kernel ended for want of pool buffers (ENOBUFS).
    std::uint64_t nobufs = 0;
    /// Input buffers no connection holds now (idle connections give theirs back).
    std::uint64_t spare_inputs = 0;
};

/// An HTTP/1.1 server: keep-alive, pipelining (responses in order, written together per
/// connection turn), server timeouts, `max_connections` and graceful shutdown.
///
/// Thread safety: one loop. Lifetime: the handler is borrowed by running requests.
class server {
public:
    explicit server(handler h, server_options opts = {});
    /// Serves every request with the synchronous handler `f` (see `sync_handler`).
    template <sync_handler_callable F>
    explicit server(F&& f, server_options opts = {})
        : server(from_sync(sync_handler(std::forward<F>(f))), std::move(opts)) {}
    ~server();
    server(const server&) = delete;
    server& operator=(const server&) = delete;

    /// Binds and listens on `at` (port 0 picks one). Errors: as `tcp_listener::bind`.
    result<void> listen(const net::address& at);
    /// Uses a listener bound elsewhere.
    void listen(net::tcp_listener l);
    /// Returns the address the server listens on.
    result<net::address> local_addr() const;

    /// Accepts and serves connections until `shutdown()` (then returns success), or until
    /// the awaiting context is done (then returns its error after every connection has
    /// ended). Requests derive from this context through the BaseContext hook.
    task<result<void>> serve();

    /// Stops accepting, closes idle connections, lets in-flight requests finish and waits
    /// for every connection to end. If the awaiting context is done first, cancels what is
    /// left (every request context), waits for it to end, and returns the context's error.
    task<result<void>> shutdown();

    /// Counters for tests.
    std::size_t active_connections() const noexcept;
    server_recv_stats receive_stats() const noexcept;

private:
    std::shared_ptr<detail::server_state> s_;
};

} // namespace tether::http
