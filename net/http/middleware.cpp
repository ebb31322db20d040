#include "net/http/middleware.hpp"

#include "context/with_deadline.hpp"
#include "context/with_value.hpp"

#include <fmt/format.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <iterator>
#include <random>
#include <sys/socket.h>

namespace tether::http {

namespace {

inline constexpr context_key<std::string> request_id_key{"request_id"};
inline constexpr context_key<identity> identity_key{"identity"};

void to_stderr(std::string_view line) {
    std::fprintf(stderr, "%.*s\n", static_cast<int>(line.size()), line.data());
}

std::string new_request_id() {
    // 128 random bits as 32 hex digits, from a per-thread splitmix64 seeded once from the
    // system's entropy: IDs must not collide, not resist prediction.
    // initial-exec and constant-initialized: read at a fixed offset from the thread pointer,
    // no __tls_get_addr or guard per ID (libtether is linked, not dlopen'ed).
    [[gnu::tls_model("initial-exec")]] constinit thread_local std::uint64_t state = 0;
    if (state == 0) {
        state = (std::uint64_t{std::random_device{}()} << 32) ^ std::random_device{}() ^ 1;
    }
    // Two hex digits per byte from a table: a quarter of the steps of a digit at a time.
    static constexpr auto pairs = [] {
        constexpr char digits[] = "0123456789abcdef";
        std::array<char, 512> t{};
        for (std::size_t b = 0; b < 256; ++b) {
            t[2 * b] = digits[b >> 4];
            t[2 * b + 1] = digits[b & 0xf];
        }
        return t;
    }();
    std::string id(32, '0');
    for (std::size_t half = 0; half < 2; ++half) {
        std::uint64_t bits = (state += 0x9e3779b97f4a7c15);
        bits = (bits ^ (bits >> 30)) * 0xbf58476d1ce4e5b9;
        bits = (bits ^ (bits >> 27)) * 0x94d049bb133111eb;
        bits ^= bits >> 31;
        // The low byte last: the 16 digits read as the number in hex.
        for (std::size_t b = 8; b-- > 0;) {
            std::memcpy(&id[half * 16 + 2 * b], &pairs[2 * (bits & 0xff)], 2);
            bits >>= 8;
        }
    }
    return id;
}

bool acceptable_id(std::string_view id) noexcept {
    if (id.empty() || id.size() > 128) {
        return false;
    }
    for (char c : id) {
        if (c <= 0x20 || c >= 0x7f) {
            return false;
        }
    }
    return true;
}

// Runs `next` with the request's context replaced by `ctx` (for the handlers below). The
// handler's task borrows this frame's `ctx` as its context (what with_context does, without
// a second frame).
task<void> run_with(context ctx, const handler& next, request& req, response_writer& w) {
    context saved = req.ctx_;
    req.ctx_ = ctx;
    co_await tether::detail::set_context{&ctx};
    try {
        co_await next(req, w);
    } catch (...) {
        req.ctx_ = saved;
        throw;
    }
    req.ctx_ = saved;
}

// Makes the awaiting task run under `ctx` from now on; gives the context it ran under.
struct swap_context {
    const context* ctx;
    const context* old = nullptr;
    bool await_ready() const noexcept { return false; }
    template <class P>
    bool await_suspend(std::coroutine_handle<P> h) noexcept {
        old = h.promise().ctx_;
        h.promise().ctx_ = ctx;
        return false;
    }
    const context* await_resume() const noexcept { return old; }
};

struct request_id_mw {
    handler next;
    // What run_with does, in this frame rather than a second one (it runs per request).
    task<void> operator()(request& req, response_writer& w) const {
        std::string_view given = req.header("x-request-id");
        std::string id = acceptable_id(given) ? std::string(given) : new_request_id();
        w.headers().set("X-Request-ID", id);
        context ctx = with_value(req.ctx(), request_id_key, std::move(id));
        context saved = req.ctx_;
        req.ctx_ = ctx;
        swap_context enter{&ctx};
        const context* outer = co_await enter;
        std::exception_ptr failed;
        try {
            co_await next(req, w);
        } catch (...) {
            failed = std::current_exception();
        }
        // Back under the context we came with before `ctx` goes out of scope.
        swap_context leave{outer};
        (void)co_await leave;
        req.ctx_ = std::move(saved);
        if (failed) {
            std::rethrow_exception(failed);
        }
    }
};

// Returns the text of an IP peer address (empty for other families), from a one-entry
// cache per thread: the requests of a keep-alive or pipelining connection come in runs.
std::string_view peer_text(const net::address& a) {
    struct cache {
        net::address addr;
        char text[64];
        std::size_t len = 0;
    };
    thread_local cache c;
    if (a.native_family() != AF_INET && a.native_family() != AF_INET6) {
        return {};
    }
    if (c.len == 0 || !(a == c.addr)) {
        c.len = net::detail::format_ip(a, c.text);
        c.addr = a;
    }
    return std::string_view(c.text, c.len);
}

struct access_log_mw {
    handler next;
    std::function<void(std::string_view)> sink;
    task<void> operator()(request& req, response_writer& w) const {
        auto start = std::chrono::steady_clock::now();
        std::exception_ptr failed;
        try {
            co_await next(req, w);
        } catch (...) {
            failed = std::current_exception();
        }
        // Milliseconds with three decimals, from whole microseconds (rounded): integers
        // format at a fraction of the cost of a double.
        auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                      std::chrono::steady_clock::now() - start)
                      .count();
        std::uint64_t us = (static_cast<std::uint64_t>(ns < 0 ? 0 : ns) + 500) / 1000;
        std::string_view id = w.headers().get("x-request-id").value_or(std::string_view{});
        // Written piece by piece on the stack (what the format string
        // "{} \"{} {} HTTP/1.{}\" {} {} {}.{:03}ms id={}" gives): a log line costs no
        // allocation unless it is long, and no format-string work.
        std::string peer_fallback;
        std::string_view peer = peer_text(req.remote);
        if (peer.empty()) {
            peer_fallback = req.remote.to_string();
            peer = peer_fallback;
        }
        if (id.empty()) {
            id = "-";
        }
        // Sized first (the numbers at their longest), then written with plain copies.
        const std::size_t need =
            peer.size() + req.method().size() + req.target().size() + id.size() + 4 * 20 + 32;
        char stack[512];
        std::string heap;
        char* const begin = need <= sizeof stack ? stack : (heap.resize(need), heap.data());
        char* p = begin;
        auto put = [&p](std::string_view v) {
            std::memcpy(p, v.data(), v.size());
            p += v.size();
        };
        auto put_int = [&put](auto v) {
            fmt::format_int f(v);
            put(std::string_view(f.data(), f.size()));
        };
        put(peer);
        put(" \"");
        put(req.method());
        put(" ");
        put(req.target());
        put(" HTTP/1.");
        put_int(req.head.version_minor);
        put("\" ");
        put_int(failed ? 500 : w.status());
        put(" ");
        put_int(w.bytes_written());
        put(" ");
        put_int(us / 1000);
        *p++ = '.';
        *p++ = static_cast<char>('0' + us % 1000 / 100);
        *p++ = static_cast<char>('0' + us % 100 / 10);
        *p++ = static_cast<char>('0' + us % 10);
        put("ms id=");
        put(id);
        sink(std::string_view(begin, static_cast<std::size_t>(p - begin)));
        if (failed) {
            std::rethrow_exception(failed);
        }
    }
};

struct recover_mw {
    handler next;
    std::function<void(std::string_view)> sink;
    task<void> operator()(request& req, response_writer& w) const {
        std::string what;
        try {
            co_await next(req, w);
            co_return;
        } catch (const std::exception& e) {
            what = e.what();
        } catch (...) {
            what = "unknown exception";
        }
        sink(fmt::format("http: panic serving {}: {} {}: {}", req.remote, req.method(),
                         req.target(), what));
        if (!w.head_sent_) {
            w.headers().clear();
            w.body_.clear();
            w.status_ = 0;
            w.body_bytes_ = 0;
            w.headers().set("Content-Type", "text/plain; charset=utf-8");
            w.write_header(500);
            w.write("500 internal server error\n");
        }
    }
};

struct timeout_mw {
    handler next;
    std::chrono::nanoseconds d;
    task<void> operator()(request& req, response_writer& w) const {
        auto [ctx, cancel] = tether::with_timeout(req.ctx(), d);
        co_await run_with(ctx, next, req, w);
        if (ctx.err() == errc::deadline_exceeded && !w.head_sent_) {
            // Whatever the handler wrote after its deadline is dropped, as Go's
            // TimeoutHandler does.
            w.headers().clear();
            w.body_.clear();
            w.status_ = 0;
            w.body_bytes_ = 0;
            w.headers().set("Content-Type", "text/plain; charset=utf-8");
            w.write_header(503);
            w.write("503 handler timeout\n");
        }
    }
};

struct bearer_mw {
    handler next;
    std::function<std::optional<identity>(std::string_view)> verify;
    task<void> operator()(request& req, response_writer& w) const {
        std::string_view auth = req.header("authorization");
        std::optional<identity> who;
        if (auth.size() > 7 && iequals(auth.substr(0, 7), "bearer ")) {
            who = verify(auth.substr(7));
        }
        if (!who) {
            w.headers().set("WWW-Authenticate", "Bearer");
            w.headers().set("Content-Type", "text/plain; charset=utf-8");
            w.write_header(401);
            w.write("401 unauthorized\n");
            co_return;
        }
        co_await run_with(with_value(req.ctx(), identity_key, std::move(*who)), next, req, w);
    }
};

} // namespace

std::string_view request_id_of(const context& ctx) noexcept {
    const std::string* id = ctx.value(request_id_key);
    return id ? std::string_view(*id) : std::string_view{};
}

const identity* identity_of(const context& ctx) noexcept {
    return ctx.value(identity_key);
}

middleware request_id() {
    return [](handler next) -> handler { return request_id_mw{std::move(next)}; };
}

middleware access_log(std::function<void(std::string_view)> sink) {
    if (!sink) {
        sink = to_stderr;
    }
    return [sink](handler next) -> handler { return access_log_mw{std::move(next), sink}; };
}

middleware recover(std::function<void(std::string_view)> sink) {
    if (!sink) {
        sink = to_stderr;
    }
    return [sink](handler next) -> handler { return recover_mw{std::move(next), sink}; };
}

middleware timeout(std::chrono::nanoseconds d) {
    return [d](handler next) -> handler { return timeout_mw{std::move(next), d}; };
}

middleware bearer_auth(std::function<std::optional<identity>(std::string_view)> verify) {
    return [verify](handler next) -> handler { return bearer_mw{std::move(next), verify}; };
}

} // namespace tether::http
