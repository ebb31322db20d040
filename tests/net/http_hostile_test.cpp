// Malformed and hostile requests against a real server: each gets the right status and a
// clean close, and the server keeps serving everyone else. Also the idle timeout's rules.

#include "context/with_deadline.hpp"
#include "net/http/server.hpp"
#include "net/tcp_stream.hpp"
#include "runtime/loop.hpp"
#include "runtime/sleep.hpp"
#include "runtime/spawn.hpp"

#include <doctest/doctest.h>
#include <fmt/format.h>

#include <string>
#include <vector>

using namespace tether;
using namespace std::chrono_literals;
using namespace std::string_literals;
using http::request;
using http::response_writer;

namespace {

struct reply {
    std::string data;    // everything read before the server closed
    bool closed = false; // the server closed the connection (EOF or reset) within the time
};

// Sends `raw` (then shuts down the write side if `half_close`) and reads until the server
// closes, for at most 10 s.
task<reply> send_raw(net::address at, std::string raw, bool half_close) {
    reply out;
    auto s = co_await net::tcp_stream::connect(at);
    REQUIRE(s.has_value());
    auto [n, err] = co_await s->write_all(std::string_view(raw));
    (void)n;
    (void)err; // the server may close before taking everything: the answer is what counts
    if (half_close) {
        (void)s->shutdown(net::shutdown_how::write);
    }
    auto [ctx, cancel] = with_timeout(co_await this_coro::context, 10s);
    char buf[4096];
    for (;;) {
        auto read = s->read_some(std::as_writable_bytes(std::span(buf)));
        auto r = co_await with_context(ctx, std::move(read));
        if (!r) {
            out.closed = r.error() != errc::deadline_exceeded;
            break;
        }
        out.data.append(buf, *r);
    }
    co_return out;
}

// The status code of the first response in `data`, or 0.
int status_of(std::string_view data) {
    if (data.size() < 12 || data.substr(0, 9) != "HTTP/1.1 ") {
        return 0;
    }
    return std::stoi(std::string(data.substr(9, 3)));
}

task<void> hello(request&, response_writer& w) {
    w.write("Hello, World!");
    co_return;
}

// Echoes the body; maps body errors to the status a handler would answer with.
task<void> echo(request& req, response_writer& w) {
    auto body = co_await req.read_all();
    if (!body) {
        w.write_header(body.error() == std::errc::message_size ? 413 : 400);
        w.write(body.error().message());
        co_return;
    }
    w.write(*body);
}

struct fixture {
    loop l;
    http::serve_mux mux;
    std::unique_ptr<http::server> srv;
    net::address addr;
    join_handle<result<void>> serving;

    explicit fixture(http::server_options opts) {
        mux.handle("GET /{$}", hello);
        mux.handle("POST /echo", echo);
        mux.handle("GET /sleep", [](request& req, response_writer& w) -> task<void> {
            auto ms = std::stoi(std::string(req.query().substr(3))); // "ms=N"
            (void)co_await sleep_for(std::chrono::milliseconds(ms));
            w.write("slept");
        });
        srv = std::make_unique<http::server>(mux.as_handler(), std::move(opts));
        REQUIRE(srv->listen(net::address::ipv4_loopback(0)).has_value());
        addr = *srv->local_addr();
        serving = l.block_on([](http::server* s) -> task<join_handle<result<void>>> {
            co_return co_await spawn(s->serve());
        }(srv.get()));
    }
    ~fixture() {
        l.block_on([](http::server* s) -> task<void> { (void)co_await s->shutdown(); }(srv.get()));
        l.run_until_idle();
    }
};

http::server_options small_limits() {
    http::server_options o;
    o.max_body_bytes = 1024;
    o.limits.max_header_bytes = 4096;
    o.limits.max_headers = 20;
    o.limits.max_target = 1024;
    return o;
}

struct hostile_case {
    const char* name;
    std::string raw;
    int status;
    bool half_close = false;
};

std::vector<hostile_case> corpus() {
    const std::string post = "POST /echo HTTP/1.1\r\nHost: x\r\n";
    std::vector<hostile_case> v = {
        // Smuggling: two ways to read a body's length.
        {"CL and TE", post + "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
         400},
        {"TE and CL", post + "Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n",
         400},
        {"duplicate CL", post + "Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", 400},
        {"CL list that disagrees", post + "Content-Length: 3, 4\r\n\r\nabcd", 400},
        {"signed CL", post + "Content-Length: +3\r\n\r\nabc", 400},
        {"CL overflow", post + "Content-Length: 184467440737095516160\r\n\r\n", 400},
        {"TE chunked not last", post + "Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
         400},
        {"TE chunked twice",
         post + "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
        {"TE unknown coding", post + "Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501},
        {"TE in HTTP/1.0", "POST /echo HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
         400},
        {"obs-fold", "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n", 400},
        {"obs-fold on TE", post + "Transfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n", 400},
        {"bare LF", "GET / HTTP/1.1\nHost: x\n\n", 400},
        {"bare LF in a field", "GET / HTTP/1.1\r\nHost: x\nX: y\r\n\r\n", 400},
        {"bare CR", "GET / HTTP/1.1\r\nHost: x\rX: y\r\n\r\n", 400},
        {"space before colon", "GET / HTTP/1.1\r\nHost : x\r\n\r\n", 400},
        {"tab before colon", post + "Content-Length\t: 3\r\n\r\nabc", 400},
        {"no Host", "GET / HTTP/1.1\r\n\r\n", 400},
        {"two Hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400},
        // Oversize.
        {"long target", "GET /" + std::string(2000, 'a') + " HTTP/1.1\r\nHost: x\r\n\r\n", 414},
        {"long target, never ending", "GET /" + std::string(3000, 'a'), 414},
        {"large header", "GET / HTTP/1.1\r\nHost: x\r\nX: " + std::string(5000, 'v') + "\r\n\r\n",
         431},
        {"large header, never ending", "GET / HTTP/1.1\r\nHost: x\r\nX: " + std::string(8000, 'v'),
         431},
        {"LF flood", std::string(3000, '\n'), 400},
        {"CRLF flood",
         [] {
             std::string s;
             for (int i = 0; i < 3000; ++i) {
                 s += "\r\n";
             }
             return s;
         }(),
         431},
        {"too many headers",
         [] {
             std::string s = "GET / HTTP/1.1\r\nHost: x\r\n";
             for (int i = 0; i < 30; ++i) {
                 s += fmt::format("X-{}: v\r\n", i);
             }
             return s + "\r\n";
         }(),
         431},
        {"body over the limit", post + "Content-Length: 5000\r\n\r\n" + std::string(5000, 'b'),
         413},
        {"chunked body over the limit",
         post + "Transfer-Encoding: chunked\r\n\r\n800\r\n" + std::string(0x800, 'b') +
             "\r\n0\r\n\r\n",
         413},
        // Bad chunking.
        {"bad chunk hex", post + "Transfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n0\r\n\r\n", 400},
        {"negative chunk size", post + "Transfer-Encoding: chunked\r\n\r\n-1\r\na\r\n0\r\n\r\n",
         400},
        {"chunk data without CRLF", post + "Transfer-Encoding: chunked\r\n\r\n3\r\nabcX0\r\n\r\n",
         400},
        {"chunk size overflow",
         post + "Transfer-Encoding: chunked\r\n\r\n10000000000000001\r\nab\r\n0\r\n\r\n", 400},
        {"chunk size line with bare LF",
         post + "Transfer-Encoding: chunked\r\n\r\n3\nabc\r\n0\r\n\r\n", 400},
        {"NUL in chunk extension",
         post + "Transfer-Encoding: chunked\r\n\r\n3;a\0b\r\nabc\r\n0\r\n\r\n"s, 400},
        // Garbage.
        {"binary garbage", std::string("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 11), 400},
        {"NUL in method", "G\0T / HTTP/1.1\r\nHost: x\r\n\r\n"s, 400},
        {"NUL in target", "GET /\0 HTTP/1.1\r\nHost: x\r\n\r\n"s, 400},
        {"NUL in a field", "GET / HTTP/1.1\r\nHost: x\0y\r\n\r\n"s, 400},
        {"DEL in target", "GET /\x7f HTTP/1.1\r\nHost: x\r\n\r\n", 400},
        {"control in a field", "GET / HTTP/1.1\r\nHost: x\r\nX: a\x01\r\n\r\n", 400},
        {"field name with slash", "GET / HTTP/1.1\r\nHost: x\r\nX/Y: a\r\n\r\n", 400},
        {"empty field name", "GET / HTTP/1.1\r\nHost: x\r\n: a\r\n\r\n", 400},
        {"two spaces in the request line", "GET  / HTTP/1.1\r\nHost: x\r\n\r\n", 400},
        {"lowercase version", "GET / http/1.1\r\nHost: x\r\n\r\n", 400},
        {"HTTP/0.9", "GET /\r\n\r\n", 400},
        {"HTTP/2.0", "GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505},
        {"HTTP/1.2", "GET / HTTP/1.2\r\nHost: x\r\n\r\n", 505},
        {"HTTP/2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505},
        {"unknown expectation", "GET / HTTP/1.1\r\nHost: x\r\nExpect: 200-ok\r\n\r\n", 417},
        // Half-closed: the client shuts down its side.
        {"half-closed mid-head", "GET / HTTP/1.1\r\nHost: x\r\n", 400, true},
        {"half-closed mid-body", post + "Content-Length: 10\r\n\r\nabc", 400, true},
        {"half-closed mid-chunk", post + "Transfer-Encoding: chunked\r\n\r\n5\r\nab", 400, true},
        {"half-closed after a request", "GET / HTTP/1.1\r\nHost: x\r\n\r\n", 200, true},
    };
    return v;
}

} // namespace

TEST_CASE("each hostile request gets its status and a clean close; the server keeps serving") {
    fixture f(small_limits());
    // A keep-alive connection opened before the corpus must be served after it.
    auto keeper = f.l.block_on(net::tcp_stream::connect(f.addr));
    REQUIRE(keeper.has_value());

    for (const hostile_case& c : corpus()) {
        CAPTURE(c.name);
        reply r = f.l.block_on(send_raw(f.addr, c.raw, c.half_close));
        CHECK(status_of(r.data) == c.status);
        CHECK(r.closed);
        if (c.status >= 400) {
            CHECK(r.data.find("Connection: close\r\n") != std::string::npos);
        }
        // Every other connection is unaffected: a fresh one is served.
        reply ok = f.l.block_on(
            send_raw(f.addr, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", false));
        CHECK(status_of(ok.data) == 200);
        CHECK(ok.data.find("Hello, World!") != std::string::npos);
    }

    std::string got = f.l.block_on([](net::tcp_stream* s) -> task<std::string> {
        (void)co_await s->write_all(std::string_view("GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
        std::string data;
        char buf[1024];
        while (data.find("Hello, World!") == std::string::npos) {
            auto r = co_await s->read_some(std::as_writable_bytes(std::span(buf)));
            if (!r) {
                break;
            }
            data.append(buf, *r);
        }
        co_return data;
    }(&*keeper));
    CHECK(status_of(got) == 200);
    CHECK(f.srv->active_connections() == 1);
}

TEST_CASE("a hostile request sent in pieces gets the same status as sent whole") {
    fixture f(small_limits());
    for (const hostile_case& c : corpus()) {
        if (c.half_close || c.raw.size() > 600) {
            continue;
        }
        CAPTURE(c.name);
        reply r = f.l.block_on([](net::address at, std::string raw) -> task<reply> {
            // Seven bytes at a time, with a pause, so each arrives in its own read.
            reply out;
            auto s = co_await net::tcp_stream::connect(at);
            REQUIRE(s.has_value());
            for (std::size_t i = 0; i < raw.size(); i += 7) {
                auto [n, err] = co_await s->write_all(std::string_view(raw).substr(i, 7));
                if (err) {
                    break;
                }
                (void)co_await sleep_for(1ms);
            }
            auto [ctx, cancel] = with_timeout(co_await this_coro::context, 10s);
            char buf[4096];
            for (;;) {
                auto read = s->read_some(std::as_writable_bytes(std::span(buf)));
                auto got = co_await with_context(ctx, std::move(read));
                if (!got) {
                    out.closed = got.error() != errc::deadline_exceeded;
                    break;
                }
                out.data.append(buf, *got);
            }
            co_return out;
        }(f.addr, c.raw));
        CHECK(status_of(r.data) == c.status);
    }
}

namespace {

// Sends one request on `s` and reads until `marker` (the end of its body) arrives.
task<bool> request_on(net::tcp_stream& s, std::string_view raw, std::string_view marker) {
    auto [n, err] = co_await s.write_all(raw);
    if (err) {
        co_return false;
    }
    std::string data;
    char buf[1024];
    while (data.find(marker) == std::string::npos) {
        auto r = co_await s.read_some(std::as_writable_bytes(std::span(buf)));
        if (!r) {
            co_return false;
        }
        data.append(buf, *r);
    }
    co_return status_of(data) == 200;
}

} // namespace

TEST_CASE("the idle timeout counts only the time between requests, as Go's IdleTimeout") {
    // Go: "IdleTimeout is the maximum amount of time to wait for the next request when
    // keep-alives are enabled". Requests spaced well inside it keep a connection for longer
    // than it in total; a handler may run longer than it; a connection idle past it closes.
    http::server_options o;
    o.idle_timeout = 2s;
    fixture f(o);
    using clock = std::chrono::steady_clock;
    struct outcome {
        int served = 0;
        clock::duration kept{};
        bool slow_served = false;
        bool closed = false;
        clock::duration idle_before_close{};
    };
    outcome got = f.l.block_on([](net::address at) -> task<outcome> {
        outcome out;
        auto s = co_await net::tcp_stream::connect(at);
        REQUIRE(s.has_value());
        auto t0 = clock::now();
        for (int i = 0; i < 10; ++i) {
            if (co_await request_on(*s, "GET / HTTP/1.1\r\nHost: x\r\n\r\n", "Hello, World!")) {
                ++out.served;
            }
            (void)co_await sleep_for(250ms);
        }
        out.kept = clock::now() - t0;
        // A handler that takes longer than the idle timeout is not cut off by it.
        out.slow_served =
            co_await request_on(*s, "GET /sleep?ms=3000 HTTP/1.1\r\nHost: x\r\n\r\n", "slept");
        // Now idle: the server closes the connection after the timeout.
        auto idle_from = clock::now();
        auto [ctx, cancel] = with_timeout(co_await this_coro::context, 20s);
        char b;
        auto read = s->read_some(std::as_writable_bytes(std::span(&b, 1)));
        auto r = co_await with_context(ctx, std::move(read));
        out.closed = !r && r.error() != errc::deadline_exceeded;
        out.idle_before_close = clock::now() - idle_from;
        co_return out;
    }(f.addr));
    CHECK(got.served == 10);
    CHECK(got.kept > 2s); // longer than the idle timeout, on one connection
    CHECK(got.slow_served);
    CHECK(got.closed);
    CHECK(got.idle_before_close >= 1500ms);
    CHECK(got.idle_before_close < 15s);
}
