#include "context/with_cancel.hpp"
#include "context/with_deadline.hpp"
#include "net/http/server.hpp"
#include "net/recv_buffer.hpp"
#include "net/tcp_listener.hpp"
#include "net/tcp_stream.hpp"
#include "runtime/loop.hpp"
#include "runtime/sleep.hpp"
#include "runtime/spawn.hpp"

#include <doctest/doctest.h>

#include <ctime>
#include <string>

using namespace tether;
using namespace std::chrono_literals;
using http::request;
using http::response_writer;

namespace {

// Sends `raw` and reads until the server closes or `stop` (a substring count) is reached.
task<std::string> exchange(net::address at, std::string raw, std::string until, int count) {
    auto s = co_await net::tcp_stream::connect(at);
    REQUIRE(s.has_value());
    auto [n, err] = co_await s->write_all(std::string_view(raw));
    REQUIRE_FALSE(err);
    std::string got;
    char buf[4096];
    for (;;) {
        auto found = 0;
        for (std::size_t p = got.find(until); p != std::string::npos; p = got.find(until, p + 1)) {
            ++found;
        }
        if (count > 0 && found >= count) {
            break;
        }
        auto r = co_await s->read_some(std::as_writable_bytes(std::span(buf)));
        if (!r || *r == 0) {
            break;
        }
        got.append(buf, *r);
    }
    co_return got;
}

task<void> hello(request& req, response_writer& w) {
    w.headers().set("Content-Type", "text/plain");
    w.write("Hello, World!");
    (void)req;
    co_return;
}

task<void> echo(request& req, response_writer& w) {
    auto body = co_await req.read_all();
    if (!body) {
        w.write_header(400);
        co_return;
    }
    w.write(*body);
}

struct server_fixture {
    loop l;
    http::serve_mux mux;
    std::unique_ptr<http::server> srv;
    net::address addr;
    join_handle<result<void>> serving;

    explicit server_fixture(http::server_options opts = {}, loop::options lo = {}) : l(lo) {
        mux.handle("GET /", hello);
        mux.handle("POST /echo", echo);
        srv = std::make_unique<http::server>(mux.as_handler(), opts);
        REQUIRE(srv->listen(net::address::ipv4_loopback(0)).has_value());
        addr = *srv->local_addr();
    }
    void start() {
        serving = l.block_on([](http::server* s) -> task<join_handle<result<void>>> {
            co_return co_await spawn(s->serve());
        }(srv.get()));
    }
    ~server_fixture() {
        l.block_on([](http::server* s) -> task<void> { (void)co_await s->shutdown(); }(srv.get()));
        l.run_until_idle();
    }
};

} // namespace

TEST_CASE("the server answers a GET and keeps the connection for the next request") {
    server_fixture f;
    f.mux.handle("GET /two", hello);
    f.start();
    std::string got = f.l.block_on(
        exchange(f.addr, "GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /two HTTP/1.1\r\nHost: x\r\n\r\n",
                 "Hello, World!", 2));
    CHECK(got.find("HTTP/1.1 200 OK\r\n") == 0);
    CHECK(got.find("Content-Length: 13\r\n") != std::string::npos);
    CHECK(got.find("Date: ") != std::string::npos);
    CHECK(got.find("Connection: close") == std::string::npos);
    // Two responses, in order, on one connection.
    auto second = got.find("HTTP/1.1 200 OK", 1);
    CHECK(second != std::string::npos);
}

TEST_CASE("pipelined requests get their responses in order") {
    server_fixture f;
    f.start();
    std::string reqs;
    for (int i = 0; i < 10; ++i) {
        reqs +=
            "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n" + std::to_string(10 + i);
    }
    std::string got = f.l.block_on(exchange(f.addr, reqs, "HTTP/1.1 200", 10));
    std::size_t pos = 0;
    for (int i = 0; i < 10; ++i) {
        auto p = got.find("\r\n\r\n" + std::to_string(10 + i), pos);
        REQUIRE(p != std::string::npos);
        pos = p + 1;
    }
}

// Answers with the path and the X-Tag field.
task<void> tagged(request& req, response_writer& w) {
    w.write(std::string(req.path()) + " " + std::string(req.header("X-Tag")));
    co_return;
}

// Sends half a head on one connection, a whole request on a second, then the rest of the
// first head; returns both answers, the second's first.
task<std::string> split_head_around_another(net::address at) {
    auto a = co_await net::tcp_stream::connect(at);
    REQUIRE(a.has_value());
    auto [n1, e1] = co_await a->write_all(std::string_view("GET /a HTTP/1.1\r\nHost: x\r\nX-Ta"));
    REQUIRE_FALSE(e1);
    std::string b =
        co_await exchange(at, "GET /b HTTP/1.1\r\nHost: x\r\nX-Tag: two\r\n\r\n", "/b two", 1);
    auto [n2, e2] = co_await a->write_all(std::string_view("g: one\r\n\r\n"));
    REQUIRE_FALSE(e2);
    std::string got;
    char buf[1024];
    while (got.find("/a one") == std::string::npos) {
        auto r = co_await a->read_some(std::as_writable_bytes(std::span(buf)));
        if (!r || *r == 0) {
            break;
        }
        got.append(buf, *r);
    }
    co_return b + "|" + got;
}

TEST_CASE("a head split between reads is finished while another connection is served") {
    server_fixture f;
    f.mux.handle("GET /a", tagged);
    f.mux.handle("GET /b", tagged);
    f.start();
    std::string got = f.l.block_on(split_head_around_another(f.addr));
    auto bar = got.find('|');
    REQUIRE(bar != std::string::npos);
    CHECK(got.find("/b two") < bar);
    CHECK(got.find("/a one", bar) != std::string::npos);
}

TEST_CASE("a chunked body is streamed to the handler") {
    server_fixture f;
    f.start();
    std::string got =
        f.l.block_on(exchange(f.addr,
                              "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                              "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
                              "hello world", 1));
    CHECK(got.find("HTTP/1.1 200 OK") == 0);
    CHECK(got.find("\r\n\r\nhello world") != std::string::npos);
}

TEST_CASE("Expect: 100-continue gets a 100 before the body is read") {
    server_fixture f;
    f.start();
    std::string got = f.l.block_on(exchange(
        f.addr,
        "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\nabc",
        "abc", 1));
    CHECK(got.find("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK") == 0);
}

TEST_CASE("a malformed request gets 400 and the server keeps serving others") {
    server_fixture f;
    f.start();
    std::string bad =
        f.l.block_on(exchange(f.addr, "GET / HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n", "", 0));
    CHECK(bad.find("HTTP/1.1 400 Bad Request") == 0);
    CHECK(bad.find("Connection: close") != std::string::npos);
    std::string smuggle = f.l.block_on(exchange(
        f.addr,
        "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        "", 0));
    CHECK(smuggle.find("HTTP/1.1 400") == 0);
    std::string good =
        f.l.block_on(exchange(f.addr, "GET / HTTP/1.1\r\nHost: x\r\n\r\n", "Hello", 1));
    CHECK(good.find("HTTP/1.1 200 OK") == 0);
}

TEST_CASE("unknown paths get 404, known paths with other methods 405, HEAD has no body") {
    server_fixture f;
    f.start();
    std::string nf = f.l.block_on(
        exchange(f.addr, "GET /nope/x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", "", 0));
    CHECK(nf.find("HTTP/1.1 200") == 0); // "GET /" is a subtree pattern: it serves everything
    std::string na = f.l.block_on(
        exchange(f.addr, "PUT /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", "", 0));
    CHECK(na.find("HTTP/1.1 405") == 0);
    CHECK(na.find("Allow: GET, HEAD, POST") != std::string::npos);
    std::string head = f.l.block_on(
        exchange(f.addr, "HEAD / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", "", 0));
    CHECK(head.find("HTTP/1.1 200 OK") == 0);
    CHECK(head.find("Content-Length: 13") != std::string::npos);
    CHECK(head.find("Hello") == std::string::npos);
}

TEST_CASE("kept-alive responses carry their fields and body whole, whatever their sizes") {
    // "/shape?F,B[,d]": a field "X-F" of F bytes (none for 0), a body of B bytes (no write
    // for 0), and with ",d" a Date of the handler's own. Pipelined on one connection: all
    // but the last (which closes) are answered as most responses are.
    server_fixture f;
    f.mux.handle("GET /shape", [](request& req, response_writer& w) -> task<void> {
        const std::string q(req.query());
        const std::size_t comma = q.find(',');
        const std::size_t fsize = std::stoul(q.substr(0, comma));
        const std::size_t bsize = std::stoul(q.substr(comma + 1));
        if (fsize > 0) {
            w.headers().set("X-F", std::string(fsize, 'f'));
        }
        if (q.ends_with(",d")) {
            w.headers().set("Date", "Sun, 06 Nov 1994 08:49:37 GMT");
        }
        if (bsize > 0) {
            w.write(std::string(bsize, 'b'));
        }
        co_return;
    });
    f.start();
    // Fields of 0 to 607 bytes on the wire ("X-F: " value CRLF), bodies of 0 to 5000 bytes.
    const std::size_t fsizes[] = {0, 13, 26, 57, 58, 121, 122, 600};
    const std::size_t bsizes[] = {0, 3, 13, 32, 33, 100, 5000};
    std::string reqs;
    std::string want;
    auto add = [&](std::size_t fs, std::size_t bs, bool own_date, bool close) {
        reqs += "GET /shape?" + std::to_string(fs) + "," + std::to_string(bs) +
                (own_date ? ",d" : "") + " HTTP/1.1\r\nHost: x\r\n" +
                (close ? "Connection: close\r\n" : "") + "\r\n";
        want += "HTTP/1.1 200 OK\r\n";
        if (!own_date) {
            want += "Date: *\r\n";
        }
        if (fs > 0) {
            want += "X-F: " + std::string(fs, 'f') + "\r\n";
        }
        if (own_date) {
            want += "Date: Sun, 06 Nov 1994 08:49:37 GMT\r\n";
        }
        want += "Content-Length: " + std::to_string(bs) + "\r\n";
        want += close ? "Connection: close\r\n\r\n" : "\r\n";
        want += std::string(bs, 'b');
    };
    for (std::size_t fs : fsizes) {
        for (std::size_t bs : bsizes) {
            add(fs, bs, false, false);
        }
    }
    add(26, 13, true, false);
    add(0, 13, false, true);
    std::string got = f.l.block_on(exchange(f.addr, reqs, "", 0));
    // The server's dates, each 29 bytes, as "*".
    const std::time_t now = std::time(nullptr);
    for (std::size_t p = got.find("Date: "); p != std::string::npos;
         p = got.find("Date: ", p + 1)) {
        const std::string value = got.substr(p + 6, 29);
        if (value == "Sun, 06 Nov 1994 08:49:37 GMT") {
            continue; // the handler's own
        }
        std::tm tm{};
        REQUIRE(strptime(value.c_str(), "%a, %d %b %Y %H:%M:%S GMT", &tm) != nullptr);
        CHECK(timegm(&tm) >= now - 2);
        CHECK(timegm(&tm) <= now);
        got.replace(p + 6, 29, "*");
    }
    CHECK(got == want);
}

TEST_CASE(
    "a subtree's root without its slash, and a path with dot segments, get 301 (query kept)") {
    server_fixture f;
    f.mux.handle("GET /files/{path...}", hello);
    f.start();
    std::string got = f.l.block_on(exchange(
        f.addr, "GET /files?sort=name HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", "", 0));
    CHECK(got.find("HTTP/1.1 301") == 0);
    CHECK(got.find("Location: /files/?sort=name\r\n") != std::string::npos);
    std::string below = f.l.block_on(exchange(
        f.addr, "GET /files/a.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", "", 0));
    CHECK(below.find("HTTP/1.1 200 OK") == 0);
    std::string dots = f.l.block_on(exchange(
        f.addr, "GET /files/../etc/passwd?x=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", "",
        0));
    CHECK(dots.find("HTTP/1.1 301") == 0);
    CHECK(dots.find("Location: /etc/passwd?x=1\r\n") != std::string::npos);
}

TEST_CASE("a body over max_body_bytes gets 413") {
    http::server_options o;
    o.max_body_bytes = 10;
    server_fixture f(o);
    f.start();
    std::string got = f.l.block_on(exchange(
        f.addr, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\n0123456789a", "", 0));
    CHECK(got.find("HTTP/1.1 413") == 0);
}

TEST_CASE(
    "the request context is canceled when the client goes away, and when the handler returns") {
    server_fixture f;
    static bool saw_cancel = false;
    static bool started = false;
    static context seen;
    saw_cancel = false;
    started = false;
    f.mux.handle("GET /slow", [](request& req, response_writer& w) -> task<void> {
        seen = req.ctx();
        started = true;
        auto r = co_await sleep_for(1h);
        saw_cancel = r.error() == errc::canceled;
        w.write("late");
    });
    f.start();
    f.l.block_on([](net::address at) -> task<void> {
        auto s = co_await net::tcp_stream::connect(at);
        REQUIRE(s.has_value());
        (void)co_await s->write_all(std::string_view("GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"));
        // Let the handler start and suspend (a flag, not a fixed sleep: a loaded machine can
        // keep the loop off its core for longer than any sleep).
        for (int i = 0; i < 1000 && !started; ++i) {
            (void)co_await sleep_for(5ms);
        }
        REQUIRE(started);
        (void)s->close(); // the client goes away
        for (int i = 0; i < 200 && !saw_cancel; ++i) {
            (void)co_await sleep_for(10ms);
        }
    }(f.addr));
    CHECK(saw_cancel);
    CHECK(seen.err() == errc::canceled);
}

TEST_CASE(
    "shutdown lets an in-flight request finish, closes idle connections and stops accepting") {
    server_fixture f;
    static bool started = false;
    started = false;
    f.mux.handle("GET /wait", [](request&, response_writer& w) -> task<void> {
        started = true;
        (void)co_await sleep_for(100ms);
        w.write("done");
    });
    f.start();
    auto result = f.l.block_on([](server_fixture* fx) -> task<std::string> {
        auto client = co_await spawn(exchange(
            fx->addr, "GET /wait HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", "", 0));
        auto idle = co_await net::tcp_stream::connect(fx->addr);
        REQUIRE(idle.has_value());
        // Shut down once the request is in its handler (in flight, not idle).
        for (int i = 0; i < 1000 && !started; ++i) {
            (void)co_await sleep_for(5ms);
        }
        REQUIRE(started);
        auto r = co_await fx->srv->shutdown();
        CHECK(r.has_value());
        auto got = co_await client;
        co_return got.has_value() ? *got : std::string{};
    }(&f));
    CHECK(result.find("HTTP/1.1 200 OK") == 0);
    CHECK(result.find("done") != std::string::npos);
    CHECK(f.srv->active_connections() == 0);
    auto after = f.l.block_on([](net::address at) -> task<bool> {
        auto s = co_await net::tcp_stream::connect(at);
        co_return s.has_value();
    }(f.addr));
    CHECK_FALSE(after);
}

TEST_CASE("a client trickling its headers is cut off by read_header_timeout") {
    http::server_options o;
    o.read_header_timeout = 100ms;
    server_fixture f(o);
    f.start();
    bool closed = f.l.block_on([](net::address at) -> task<bool> {
        auto s = co_await net::tcp_stream::connect(at);
        REQUIRE(s.has_value());
        // One byte every 30 ms: the head would take seconds to complete.
        std::string_view head = "GET / HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaa\r\n\r\n";
        for (char c : head) {
            auto [n, err] = co_await s->write_all(std::string_view(&c, 1));
            if (err) {
                co_return true;
            }
            (void)co_await sleep_for(30ms);
            char b;
            // A closed connection reads EOF (or a reset) at once; an open one would block,
            // so only look when the socket says it is readable.
            auto ready = co_await tether::with_timeout(
                1ms, s->read_some(std::as_writable_bytes(std::span(&b, 1))));
            if (!ready && ready.error() != errc::deadline_exceeded) {
                co_return true;
            }
            if (ready && *ready == 0) {
                co_return true;
            }
        }
        co_return false;
    }(f.addr));
    CHECK(closed);
}

namespace {

// Streams "part0;part1;part2;", flushing after each part.
task<void> stream_three(request&, response_writer& w) {
    for (int i = 0; i < 3; ++i) {
        w.write(fmt::format("part{};", i));
        auto r = co_await w.flush();
        REQUIRE(r.has_value());
    }
}

} // namespace

TEST_CASE("a handler can stream a chunked response with flush()") {
    server_fixture f;
    f.mux.handle("GET /stream", stream_three);
    f.start();
    std::string got = f.l.block_on(
        exchange(f.addr, "GET /stream HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", "", 0));
    CHECK(got.find("Transfer-Encoding: chunked\r\n") != std::string::npos);
    CHECK(got.find("6\r\npart0;\r\n6\r\npart1;\r\n6\r\npart2;\r\n0\r\n\r\n") != std::string::npos);
}

namespace {

// Counts the non-overlapping occurrences of `what` in `s`.
std::size_t count_of(const std::string& s, std::string_view what) {
    std::size_t n = 0;
    for (std::size_t p = s.find(what); p != std::string::npos; p = s.find(what, p + what.size())) {
        ++n;
    }
    return n;
}

} // namespace

TEST_CASE("HTTP/1.0: a kept-alive response says so, a streamed one is not chunked and closes") {
    server_fixture f;
    f.mux.handle("GET /stream", stream_three);
    f.start();
    // A bound on every exchange: a server that kept a connection it should close would
    // otherwise keep the test waiting.
    auto [ctx, cancel] = with_timeout(f.l.background(), 10s);
    // Two kept-alive requests, then one without keep-alive: the server closes after it.
    std::string got = f.l.block_on(ctx, exchange(f.addr,
                                                 "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
                                                 "GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"
                                                 "GET / HTTP/1.0\r\n\r\n",
                                                 "", 0));
    CHECK(count_of(got, "Hello, World!") == 3);
    CHECK(count_of(got, "Connection: keep-alive\r\n") == 2);
    CHECK(count_of(got, "Connection: close\r\n") == 1);
    CHECK(got.rfind("Connection: keep-alive") < got.find("Connection: close"));
    // Streamed: no chunked coding (an HTTP/1.0 client has none); the body runs to the close,
    // even when the request asked for keep-alive.
    for (std::string_view conn : {"", "Connection: keep-alive\r\n"}) {
        CAPTURE(conn);
        std::string s = f.l.block_on(
            ctx, exchange(f.addr, fmt::format("GET /stream HTTP/1.0\r\n{}\r\n", conn), "", 0));
        CHECK(s.find("Transfer-Encoding") == std::string::npos);
        CHECK(s.find("Connection: close\r\n") != std::string::npos);
        CHECK(s.ends_with("\r\n\r\npart0;part1;part2;"));
    }
    CHECK_FALSE(ctx.err());
}

TEST_CASE("a handler's Connection: close ends the connection after its response") {
    server_fixture f;
    f.mux.handle("GET /bye", [](request&, response_writer& w) -> task<void> {
        w.headers().set("Connection", "close");
        w.write("bye");
        co_return;
    });
    f.start();
    auto [ctx, cancel] = with_timeout(f.l.background(), 10s);
    // The second request is never answered: the server closes after the first response.
    std::string got = f.l.block_on(
        ctx,
        exchange(f.addr, "GET /bye HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",
                 "", 0));
    CHECK(count_of(got, "HTTP/1.1 200 OK") == 1);
    CHECK(count_of(got, "Connection: close\r\n") == 1);
    CHECK(got.ends_with("\r\n\r\nbye"));
    CHECK_FALSE(ctx.err());
}

TEST_CASE("canceling the base context cancels every request") {
    static std::error_code seen;
    static bool started = false;
    seen = {};
    started = false;
    loop l;
    http::serve_mux mux;
    mux.handle("GET /wait", [](request&, response_writer& w) -> task<void> {
        started = true;
        auto r = co_await sleep_for(1h);
        seen = r.error();
        w.write("x");
    });
    http::server srv(mux.as_handler());
    REQUIRE(srv.listen(net::address::ipv4_loopback(0)).has_value());
    net::address at = *srv.local_addr();
    auto [base, cancel_base] = with_cancel(l.background());
    auto serving = l.block_on(base, [](http::server* s) -> task<join_handle<result<void>>> {
        co_return co_await spawn(s->serve());
    }(&srv));
    l.block_on([](net::address a, cancel_handle* cancel) -> task<void> {
        auto client = co_await spawn(exchange(a, "GET /wait HTTP/1.1\r\nHost: x\r\n\r\n", "", 0));
        for (int i = 0; i < 1000 && !started; ++i) {
            (void)co_await sleep_for(5ms);
        }
        REQUIRE(started);
        cancel->cancel();
        (void)co_await client;
    }(at, &cancel_base));
    l.run_until_idle();
    CHECK(seen == errc::canceled);
    CHECK(srv.active_connections() == 0);
}

TEST_CASE("the conn_context hook derives each connection's context") {
    static const context_key<std::string> conn_key{"conn"};
    http::server_options o;
    o.conn_context = [](const context& base, const net::address& remote) {
        return with_value(base, conn_key, fmt::format("{}", remote));
    };
    server_fixture f(o);
    f.mux.handle("GET /who", [](request& req, response_writer& w) -> task<void> {
        context ctx = co_await this_coro::context;
        const std::string* v = ctx.value(conn_key);
        w.write(v && *v == fmt::format("{}", req.remote) ? "same" : "different");
    });
    f.start();
    std::string got = f.l.block_on(
        exchange(f.addr, "GET /who HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", "", 0));
    CHECK(got.find("\r\n\r\nsame") != std::string::npos);
}

TEST_CASE("max_connections makes further connections wait for a free slot") {
    http::server_options o;
    o.max_connections = 1;
    server_fixture f(o);
    f.start();
    auto order = f.l.block_on([](net::address a) -> task<std::string> {
        // The first connection stays open (keep-alive) holding the only slot.
        auto first = co_await net::tcp_stream::connect(a);
        REQUIRE(first.has_value());
        (void)co_await first->write_all(std::string_view("GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
        char buf[512];
        (void)co_await first->read_some(std::as_writable_bytes(std::span(buf)));
        auto second = co_await spawn(
            exchange(a, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", "", 0));
        (void)co_await sleep_for(100ms);
        std::string log = second.done() ? "served-early" : "waiting";
        (void)first->close();
        auto got = co_await second;
        log += got && got->find("HTTP/1.1 200") == 0 ? ",served" : ",failed";
        co_return log;
    }(f.addr));
    CHECK(order == "waiting,served");
}

namespace {

// More than loopback's socket buffers hold: a client that does not read leaves the send of
// such a response in flight.
constexpr std::size_t big_body = 32u << 20;

task<void> big(request&, response_writer& w) {
    w.write(std::string(big_body, 'x'));
    co_return;
}

} // namespace

TEST_CASE("a client that stops reading its response is closed by the idle timeout") {
    http::server_options o;
    o.idle_timeout = 200ms;
    server_fixture f(o);
    f.mux.handle("GET /big", big);
    f.start();
    bool closed = f.l.block_on([](net::address a, http::server* s) -> task<bool> {
        auto c = co_await net::tcp_stream::connect(a);
        REQUIRE(c.has_value());
        auto [n, err] =
            co_await c->write_all(std::string_view("GET /big HTTP/1.1\r\nHost: x\r\n\r\n"));
        REQUIRE_FALSE(err);
        bool seen = false;
        // Never reads. Up to 30 s: a loaded machine is slow, a hung connection never ends.
        for (int i = 0; i < 3000; ++i) {
            (void)co_await sleep_for(10ms);
            std::size_t active = s->active_connections();
            seen = seen || active == 1;
            if (seen && active == 0) {
                co_return true;
            }
        }
        co_return false;
    }(f.addr, f.srv.get()));
    CHECK(closed);
}

TEST_CASE("shutdown lets a response still being sent reach the client whole") {
    server_fixture f;
    f.mux.handle("GET /big", big);
    f.start();
    auto [total, stopped] =
        f.l.block_on([](net::address a, http::server* s) -> task<std::pair<std::size_t, bool>> {
            auto c = co_await net::tcp_stream::connect(a);
            REQUIRE(c.has_value());
            auto [n, err] =
                co_await c->write_all(std::string_view("GET /big HTTP/1.1\r\nHost: x\r\n\r\n"));
            REQUIRE_FALSE(err);
            (void)co_await sleep_for(200ms); // the response fills the socket buffers and waits
            auto stopping = co_await spawn(s->shutdown());
            (void)co_await sleep_for(50ms);
            std::size_t got = 0;
            std::vector<char> buf(1 << 16);
            for (;;) {
                auto r = co_await c->read_some(std::as_writable_bytes(std::span(buf)));
                if (!r || *r == 0) {
                    break;
                }
                got += *r;
            }
            auto r = co_await stopping;
            co_return std::pair{got, r.has_value() && r->has_value()};
        }(f.addr, f.srv.get()));
    CHECK(total > big_body); // the head and the whole body, then a clean close
    CHECK(total < big_body + 512);
    CHECK(stopped);
}

namespace {

// Answers with the request line and a field, read after the whole body: the head's views
// must stay valid while the body is read.
task<void> head_after_body(request& req, response_writer& w) {
    auto body = co_await req.read_all();
    if (!body) {
        w.write_header(400);
        co_return;
    }
    w.write(std::string(req.method()) + " " + std::string(req.target()) + " " +
            std::string(req.header("X-Tag")) + " " + std::string(req.path()) + " " +
            std::to_string(body->size()));
}

} // namespace

TEST_CASE("the head's views stay valid while a long chunked body is read") {
    server_fixture f;
    f.mux.handle("POST /after", head_after_body);
    f.start();
    // Far more body than the connection's buffer holds: reading it moves and grows the
    // buffer the head was parsed in.
    std::string raw = "POST /after?q=1 HTTP/1.1\r\nHost: x\r\nX-Tag: tag-value\r\n"
                      "Transfer-Encoding: chunked\r\n\r\n";
    const std::string chunk(1000, 'z');
    for (int i = 0; i < 256; ++i) {
        raw += "3e8\r\n" + chunk + "\r\n";
    }
    raw += "0\r\n\r\n";
    std::string got = f.l.block_on(exchange(f.addr, raw, "256000", 1));
    CHECK(got.find("HTTP/1.1 200 OK") == 0);
    CHECK(got.find("\r\n\r\nPOST /after?q=1 tag-value /after 256000") != std::string::npos);
}

namespace {

// The body of request `i` of connection `k`: short ones, and every seventh one larger than a
// connection's pooled output buffer.
std::string body_of(int k, int i) {
    std::string b = "c" + std::to_string(k) + "-" + std::to_string(i) + ";";
    if (i % 7 == 3) {
        b += std::string(70000, static_cast<char>('a' + (k + i) % 26));
    }
    return b;
}

// Pipelines `n` echo requests and a GET on one connection and checks that the answers carry
// the bodies in order, each whole.
task<bool> echo_many(net::address at, int k, int n) {
    std::string reqs;
    for (int i = 0; i < n; ++i) {
        std::string b = body_of(k, i);
        reqs += "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: " + std::to_string(b.size()) +
                "\r\n\r\n" + b;
    }
    reqs += "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    std::string got = co_await exchange(at, reqs, "Hello, World!", 1);
    std::size_t pos = 0;
    for (int i = 0; i < n; ++i) {
        std::string want = "\r\n\r\n" + body_of(k, i) + "HTTP/1.1 200 OK\r\n";
        auto p = got.find(want, pos);
        if (p == std::string::npos) {
            co_return false;
        }
        pos = p + want.size();
    }
    co_return got.find("Hello, World!", pos) != std::string::npos;
}

} // namespace

TEST_CASE("connections answered at the same time each get their own responses whole") {
    server_fixture f;
    f.start();
    bool ok = f.l.block_on([](net::address a) -> task<bool> {
        std::vector<join_handle<bool>> runs;
        for (int k = 0; k < 8; ++k) {
            runs.push_back(co_await spawn(echo_many(a, k, 16)));
        }
        bool all = true;
        for (auto& r : runs) {
            auto got = co_await r;
            all = all && got.has_value() && *got;
        }
        co_return all;
    }(f.addr));
    CHECK(ok);
}

namespace {

// Returns the time in the Date field of `response`, or -1.
std::time_t date_of(const std::string& response) {
    auto at = response.find("\r\nDate: ");
    if (at == std::string::npos) {
        return -1;
    }
    std::tm tm{};
    const std::string value = response.substr(at + 8, 29);
    if (strptime(value.c_str(), "%a, %d %b %Y %H:%M:%S GMT", &tm) == nullptr) {
        return -1;
    }
    return timegm(&tm);
}

} // namespace

TEST_CASE("the Date of a response that waited is the time it was answered") {
    // The responses of a connection's turn share the date read when the turn began; a handler
    // that waited (here 2.1 s) gets the date read when it returns.
    server_fixture f;
    f.mux.handle("GET /wait", [](request&, response_writer& w) -> task<void> {
        (void)co_await sleep_for(2100ms);
        w.write("waited");
    });
    f.start();
    std::string got = f.l.block_on(
        exchange(f.addr, "GET /wait HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",
                 "Hello, World!", 1));
    const std::time_t now = std::time(nullptr);
    auto second = got.find("HTTP/1.1 200", 1);
    REQUIRE(second != std::string::npos);
    const std::time_t first_date = date_of(got.substr(0, second));
    const std::time_t second_date = date_of(got.substr(second));
    CHECK(first_date >= now - 1);
    CHECK(first_date <= now);
    CHECK(second_date >= now - 1); // pipelined behind it, answered after it
    CHECK(second_date <= now);
}

TEST_CASE("byte_buffer keeps its bytes as it grows and hands its storage over whole") {
    http::detail::byte_buffer a;
    CHECK(a.empty());
    CHECK(a.capacity() == 0);
    a += "Hello, ";
    a.append("World!");
    CHECK(a.view() == "Hello, World!");
    CHECK(a.capacity() == 256); // the first storage: at least 256 bytes
    const std::string big(1000, 'x');
    a += big; // grows past 256: the bytes so far are kept
    CHECK(a.size() == 13 + 1000);
    CHECK(a.capacity() >= a.size());
    CHECK(a.view().substr(0, 13) == "Hello, World!");
    CHECK(a.view().substr(13) == big);
    char* p = a.room(3);
    p[0] = '.';
    p[1] = '.';
    a.commit(p + 2);
    a.push_back('!');
    CHECK(a.view().substr(a.size() - 3) == "..!");

    // The storage goes to another buffer, which writes over it; the first is left with none.
    const char* storage = a.data();
    const std::size_t cap = a.capacity();
    http::detail::byte_buffer b;
    b.adopt(a.release_storage());
    CHECK(a.empty());
    CHECK(a.capacity() == 0);
    CHECK(a.data() == nullptr);
    CHECK(b.empty());
    CHECK(b.data() == storage);
    CHECK(b.capacity() == cap);
    b += "again";
    CHECK(b.view() == "again");
    CHECK(b.data() == storage);
    b.clear(); // the storage stays
    CHECK(b.empty());
    CHECK(b.capacity() == cap);
    a += "fresh"; // a grows storage of its own again
    CHECK(a.view() == "fresh");
    CHECK(a.data() != storage);
}

// ---- the connection's receive: a multishot recv on the loop's pool ----

namespace {

// Answers after a sleep: requests pipelined behind it arrive while it runs.
task<void> slow(request& req, response_writer& w) {
    (void)co_await sleep_for(50ms);
    w.write(std::string(req.path()));
}

// Waits (up to 2 s) until the server has no connection left.
task<bool> until_no_connections(http::server* s) {
    for (int i = 0; i < 200 && s->active_connections() != 0; ++i) {
        (void)co_await sleep_for(10ms);
    }
    co_return s->active_connections() == 0;
}

std::string get(std::string_view path, int tag) {
    return "GET " + std::string(path) + " HTTP/1.1\r\nHost: x\r\nX-Tag: " + std::to_string(tag) +
           "\r\n\r\n";
}

} // namespace

TEST_CASE("requests pipelined while a handler is slow: the receive pauses, resumes, loses none") {
    server_fixture f;
    f.mux.handle("GET /slow", slow);
    f.mux.handle("GET /t", tagged);
    f.start();
    // ~14 KiB behind a slow request: more than the connection's buffer holds while the
    // handler runs, so the multishot recv is paused until the connection takes the rest.
    std::string reqs = get("/slow", 0);
    for (int i = 1; i <= 300; ++i) {
        reqs += get("/t", i);
    }
    std::string got = f.l.block_on(exchange(f.addr, reqs, "HTTP/1.1 200", 301));
    std::size_t pos = got.find("/slow");
    REQUIRE(pos != std::string::npos);
    for (int i = 1; i <= 300; ++i) {
        auto p = got.find("\r\n\r\n/t " + std::to_string(i), pos);
        REQUIRE(p != std::string::npos);
        pos = p + 1;
    }
    http::server_recv_stats st = f.srv->receive_stats();
    CHECK(st.pauses >= 1);
    CHECK(st.arms >= 2); // re-armed after the pause
    CHECK(st.plain == 0);
}

TEST_CASE("a client that closes while the connection's multishot recv is armed ends it") {
    server_fixture f;
    f.start();
    struct d {
        static task<bool> run(server_fixture* fx) {
            auto s = co_await net::tcp_stream::connect(fx->addr);
            REQUIRE(s.has_value());
            auto [n, err] = co_await s->write_all(std::string_view(get("/", 1)));
            REQUIRE_FALSE(err);
            char buf[1024];
            auto r = co_await s->read_some(std::as_writable_bytes(std::span(buf)));
            REQUIRE(r.has_value());
            CHECK(std::string_view(buf, *r).find("Hello, World!") != std::string_view::npos);
            CHECK(fx->srv->active_connections() == 1);
            (void)s->close(); // the connection waits on its armed recv
            co_return co_await until_no_connections(fx->srv.get());
        }
    };
    CHECK(f.l.block_on(d::run(&f)));
    CHECK(f.srv->receive_stats().arms >= 1);
}

TEST_CASE("a client that shuts down its side while a handler runs still gets its answer") {
    server_fixture f;
    f.mux.handle("GET /slow", slow);
    f.start();
    struct d {
        static task<std::string> run(net::address at) {
            auto s = co_await net::tcp_stream::connect(at);
            REQUIRE(s.has_value());
            auto [n, err] = co_await s->write_all(std::string_view(get("/slow", 1)));
            REQUIRE_FALSE(err);
            // The EOF reaches the armed recv while the handler sleeps.
            REQUIRE(s->shutdown(net::shutdown_how::write));
            std::string got;
            char buf[1024];
            for (;;) {
                auto r = co_await s->read_some(std::as_writable_bytes(std::span(buf)));
                if (!r || *r == 0) {
                    break; // the server closes after the answer
                }
                got.append(buf, *r);
            }
            co_return got;
        }
    };
    std::string got = f.l.block_on(d::run(f.addr));
    CHECK(got.find("HTTP/1.1 200 OK") == 0);
    CHECK(got.find("/slow") != std::string::npos);
    CHECK(f.l.block_on(until_no_connections(f.srv.get())));
}

TEST_CASE("a body streamed to the handler after its head, with the multishot recv armed") {
    server_fixture f;
    f.start();
    struct d {
        static task<std::string> run(net::address at) {
            auto s = co_await net::tcp_stream::connect(at);
            REQUIRE(s.has_value());
            std::string body(100000, 'b');
            std::string head =
                "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: " + std::to_string(body.size()) +
                "\r\n\r\n";
            auto [n1, e1] = co_await s->write_all(std::string_view(head));
            REQUIRE_FALSE(e1);
            (void)co_await sleep_for(20ms); // the head alone first: the body comes later
            auto [n2, e2] = co_await s->write_all(std::string_view(body));
            REQUIRE_FALSE(e2);
            // A second request on the same connection: the recv is armed again.
            auto [n3, e3] = co_await s->write_all(std::string_view(get("/", 2)));
            REQUIRE_FALSE(e3);
            std::string got;
            char buf[16384];
            while (got.find("Hello, World!") == std::string::npos) {
                auto r = co_await s->read_some(std::as_writable_bytes(std::span(buf)));
                REQUIRE(r.has_value());
                REQUIRE(*r > 0);
                got.append(buf, *r);
            }
            co_return got;
        }
    };
    std::string got = f.l.block_on(d::run(f.addr));
    CHECK(got.find("Content-Length: 100000\r\n") != std::string::npos);
    CHECK(got.find(std::string(100000, 'b')) != std::string::npos);
    CHECK(f.srv->receive_stats().arms >= 2);
}

TEST_CASE("without multishot_recv a connection receives with a plain recv per read") {
    http::server_options opts;
    opts.multishot_recv = false;
    server_fixture f(opts);
    f.start();
    std::string reqs;
    for (int i = 0; i < 5; ++i) {
        reqs +=
            "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n" + std::to_string(10 + i);
    }
    std::string got = f.l.block_on(exchange(f.addr, reqs, "HTTP/1.1 200", 5));
    std::size_t pos = 0;
    for (int i = 0; i < 5; ++i) {
        auto p = got.find("\r\n\r\n" + std::to_string(10 + i), pos);
        REQUIRE(p != std::string::npos);
        pos = p + 1;
    }
    CHECK(f.srv->receive_stats().arms == 0);
}

TEST_CASE("when the loop's pool runs dry a connection falls back to a plain recv, then re-arms") {
    server_fixture f;
    f.start();
    struct d {
        static task<void> write_big(net::tcp_stream* s) {
            std::string big(5 << 20, 'x'); // more than the pool's 1024 buffers of 4 KiB
            (void)co_await s->write_all(std::string_view(big));
        }
        static task<void> run(server_fixture* fx) {
            // A stream on the same loop that keeps every pool buffer it receives.
            auto lis = net::tcp_listener::bind(net::address::ipv4_loopback(0));
            REQUIRE(lis.has_value());
            auto client = co_await net::tcp_stream::connect(*lis->local_addr());
            REQUIRE(client.has_value());
            auto server = co_await lis->accept();
            REQUIRE(server.has_value());
            auto writer = co_await spawn(write_big(&*client));
            std::vector<net::recv_buffer> held;
            while (server->receive_stats().fallbacks == 0) {
                auto b = co_await server->receive();
                REQUIRE(b.has_value());
                held.push_back(std::move(*b));
            }
            // The pool is dry: the connection's multishot recv ends with ENOBUFS, and a plain
            // recv takes the request.
            auto s = co_await net::tcp_stream::connect(fx->addr);
            REQUIRE(s.has_value());
            char buf[1024];
            auto [n1, e1] = co_await s->write_all(std::string_view(get("/", 1)));
            REQUIRE_FALSE(e1);
            auto r1 = co_await s->read_some(std::as_writable_bytes(std::span(buf)));
            REQUIRE(r1.has_value());
            CHECK(std::string_view(buf, *r1).find("Hello, World!") != std::string_view::npos);
            http::server_recv_stats st = fx->srv->receive_stats();
            CHECK(st.nobufs >= 1);
            CHECK(st.plain >= 1);
            held.clear(); // buffers back in the pool: the next wait arms a multishot recv
            const std::uint64_t arms = st.arms;
            auto [n2, e2] = co_await s->write_all(std::string_view(get("/", 2)));
            REQUIRE_FALSE(e2);
            auto r2 = co_await s->read_some(std::as_writable_bytes(std::span(buf)));
            REQUIRE(r2.has_value());
            CHECK(std::string_view(buf, *r2).find("Hello, World!") != std::string_view::npos);
            auto [n3, e3] = co_await s->write_all(std::string_view(get("/", 3)));
            REQUIRE_FALSE(e3);
            auto r3 = co_await s->read_some(std::as_writable_bytes(std::span(buf)));
            REQUIRE(r3.has_value());
            CHECK(std::string_view(buf, *r3).find("Hello, World!") != std::string_view::npos);
            CHECK(fx->srv->receive_stats().arms > arms);
            (void)server->close();
            (void)client->close();
            (void)co_await writer;
        }
    };
    f.l.block_on(d::run(&f));
}

TEST_CASE("a handler's head stays whole while its body comes through the multishot recv") {
    server_fixture f;
    f.mux.handle("POST /tagged-body", [](request& req, response_writer& w) -> task<void> {
        auto body = co_await req.read_all();
        REQUIRE(body.has_value());
        // Read after the body: the bytes held while the buffer was full moved it.
        w.write(std::string(req.header("X-Tag")) + " " + std::to_string(body->size()) + " " +
                std::string(req.path()));
    });
    f.start();
    std::string body(200000, 'q');
    std::string raw = "POST /tagged-body HTTP/1.1\r\nHost: x\r\nX-Tag: kept\r\nContent-Length: " +
                      std::to_string(body.size()) + "\r\n\r\n" + body;
    std::string got = f.l.block_on(exchange(f.addr, raw, "/tagged-body", 1));
    CHECK(got.find("kept 200000 /tagged-body") != std::string::npos);
}

namespace {

// Requests GET / `n` times on `s`, each answered before the next goes; returns how many
// answers came whole.
task<int> one_by_one(net::tcp_stream* s, int n) {
    int answered = 0;
    char buf[4096];
    for (int i = 0; i < n; ++i) {
        auto [sent, err] =
            co_await s->write_all(std::string_view("GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
        if (err) {
            co_return answered;
        }
        std::string got;
        while (got.find("Hello, World!") == std::string::npos) {
            auto r = co_await s->read_some(std::as_writable_bytes(std::span(buf)));
            if (!r) {
                co_return answered;
            }
            got.append(buf, *r);
        }
        answered += got.find("HTTP/1.1 200 OK\r\n") == 0 ? 1 : 0;
    }
    co_return answered;
}

// Sends `last` on `s` and reads until the server closes; returns what came before EOF, or
// "(no EOF)" if the read ended otherwise.
task<std::string> last_request(net::tcp_stream* s, std::string last) {
    auto [sent, err] = co_await s->write_all(std::string_view(last));
    REQUIRE_FALSE(err);
    std::string got;
    char buf[4096];
    for (;;) {
        auto r = co_await s->read_some(std::as_writable_bytes(std::span(buf)));
        if (!r) {
            co_return r.error() == net::io_errc::eof ? got : "(no EOF)";
        }
        got.append(buf, *r);
    }
}

// Once the server has closed `s`'s peer: bytes sent to a closed socket draw a reset, so the
// next write fails (EPIPE; a read would still find EOF first). A socket the server still held
// open (as the table's reference would keep it) takes them quietly.
task<bool> peer_is_gone(net::tcp_stream* s) {
    auto [sent, err] = co_await s->write_all(std::string_view("after the close"));
    if (err) {
        co_return true;
    }
    (void)co_await sleep_for(50ms);
    auto [sent2, err2] = co_await s->write_all(std::string_view("and again"));
    co_return err2 == std::errc::broken_pipe || err2 == std::errc::connection_reset;
}

task<net::tcp_stream> connect_to(net::address at) {
    auto s = co_await net::tcp_stream::connect(at);
    REQUIRE(s.has_value());
    co_return std::move(*s);
}

// Waits (up to 3 s) until the server has at most `n` connections left.
task<void> until_at_most(http::server* s, std::size_t n) {
    for (int i = 0; i < 3000 && s->active_connections() > n; ++i) {
        (void)co_await sleep_for(1ms);
    }
}

// Reads from `s` until a read fails; returns why.
task<std::error_code> read_error(net::tcp_stream* s) {
    char buf[4096];
    for (;;) {
        auto r = co_await s->read_some(std::as_writable_bytes(std::span(buf)));
        if (!r) {
            co_return r.error();
        }
    }
}

// Keep-alive turns after which a connection has registered its socket: each is a send (and a
// recv where the connection has no multishot recv); the server registers on its 32nd SQE.
constexpr int busy_turns = 40;

} // namespace

TEST_CASE("a busy keep-alive connection registers its socket; closing frees the slot first") {
    server_fixture f;
    f.start();
    net::tcp_stream s = f.l.block_on(connect_to(f.addr));
    // A connection of a request or two (Connection: close clients) never registers.
    CHECK(f.l.block_on(one_by_one(&s, 2)) == 2);
    CHECK(f.l.fixed_files_in_use() == 0);
    // A busy one does, and its answers come as before through the slot.
    CHECK(f.l.block_on(one_by_one(&s, busy_turns)) == busy_turns);
    CHECK(f.l.fixed_files_in_use() == 1);
    CHECK(f.l.block_on(one_by_one(&s, 5)) == 5);
    std::string got =
        f.l.block_on(last_request(&s, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"));
    CHECK(got.find("HTTP/1.1 200 OK\r\n") == 0);
    CHECK(got.find("Connection: close\r\n") != std::string::npos);
    CHECK(f.l.fixed_files_in_use() == 0);
    // The socket is closed, not kept open by the table.
    CHECK(f.l.block_on(peer_is_gone(&s)));
    CHECK(f.srv->active_connections() == 0);
}

TEST_CASE("a registered connection that answered an error, or that shutdown ends, frees its slot") {
    server_fixture f;
    f.start();
    net::tcp_stream a = f.l.block_on(connect_to(f.addr));
    net::tcp_stream b = f.l.block_on(connect_to(f.addr));
    CHECK(f.l.block_on(one_by_one(&a, busy_turns)) == busy_turns);
    CHECK(f.l.block_on(one_by_one(&b, busy_turns)) == busy_turns);
    CHECK(f.l.fixed_files_in_use() == 2);
    // An error answer: the server lingers, reading what the client still sends, until the
    // client closes.
    std::string got = f.l.block_on(last_request(&a, "NOT HTTP\r\n\r\n"));
    CHECK(got.find("HTTP/1.1 400") == 0);
    REQUIRE(a.close());
    f.l.block_on(until_at_most(f.srv.get(), 1));
    CHECK(f.srv->active_connections() == 1);
    CHECK(f.l.fixed_files_in_use() == 1);
    // Shutdown closes the idle one.
    auto r = f.l.block_on([](http::server* s) -> task<result<void>> {
        co_return co_await s->shutdown();
    }(f.srv.get()));
    CHECK(r.has_value());
    CHECK(f.l.fixed_files_in_use() == 0);
    CHECK(f.l.block_on(read_error(&b)) == net::io_errc::eof);
    CHECK(f.l.block_on(peer_is_gone(&b)));
}

TEST_CASE("connections beyond a full table keep their plain fds; a freed slot goes to the next") {
    loop::options lo;
    lo.fixed_files = 1;
    server_fixture f({}, lo);
    f.start();
    net::tcp_stream a = f.l.block_on(connect_to(f.addr));
    net::tcp_stream b = f.l.block_on(connect_to(f.addr));
    CHECK(f.l.block_on(one_by_one(&a, busy_turns)) == busy_turns);
    CHECK(f.l.fixed_files_in_use() == 1);
    // The second finds the table full and is answered on its fd.
    CHECK(f.l.block_on(one_by_one(&b, busy_turns)) == busy_turns);
    CHECK(f.l.fixed_files_in_use() == 1);
    std::string got =
        f.l.block_on(last_request(&a, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"));
    CHECK(got.find("HTTP/1.1 200 OK\r\n") == 0);
    CHECK(f.l.fixed_files_in_use() == 0);
    CHECK(f.l.block_on(peer_is_gone(&a)));
    // The second takes the freed slot a few dozen SQEs later, and is answered through it.
    CHECK(f.l.block_on(one_by_one(&b, busy_turns)) == busy_turns);
    CHECK(f.l.fixed_files_in_use() == 1);
    CHECK(f.l.block_on(one_by_one(&b, 3)) == 3);

    // No table at all: every connection on its fd.
    loop::options none;
    none.fixed_files = 0;
    server_fixture f0({}, none);
    f0.start();
    net::tcp_stream c = f0.l.block_on(connect_to(f0.addr));
    CHECK(f0.l.block_on(one_by_one(&c, busy_turns)) == busy_turns);
    CHECK(f0.l.fixed_files_in_use() == 0);
}

TEST_CASE("with plain recvs (no multishot recv) a busy connection registers and frees its slot") {
    http::server_options o;
    o.multishot_recv = false;
    server_fixture f(o);
    f.start();
    net::tcp_stream s = f.l.block_on(connect_to(f.addr));
    CHECK(f.l.block_on(one_by_one(&s, busy_turns)) == busy_turns);
    CHECK(f.l.fixed_files_in_use() == 1);
    CHECK(f.l.block_on(one_by_one(&s, 3)) == 3); // recvs and sends through the slot
    std::string got =
        f.l.block_on(last_request(&s, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"));
    CHECK(got.find("HTTP/1.1 200 OK\r\n") == 0);
    CHECK(f.l.fixed_files_in_use() == 0);
    CHECK(f.l.block_on(peer_is_gone(&s)));
}

TEST_CASE("idle connections give their input buffers back, and take one for their next bytes") {
    server_fixture f;
    f.start();
    struct d {
        static task<void> ask(net::tcp_stream* s, int tag) {
            auto [n, err] = co_await s->write_all(std::string_view(get("/", tag)));
            REQUIRE_FALSE(err);
            char buf[1024];
            auto r = co_await s->read_some(std::as_writable_bytes(std::span(buf)));
            REQUIRE(r.has_value());
            CHECK(std::string_view(buf, *r).find("Hello, World!") != std::string_view::npos);
        }
        static task<void> run(server_fixture* fx) {
            std::vector<net::tcp_stream> conns;
            for (int i = 0; i < 3; ++i) {
                auto s = co_await net::tcp_stream::connect(fx->addr);
                REQUIRE(s.has_value());
                conns.push_back(std::move(*s));
                co_await ask(&conns.back(), i);
            }
            (void)co_await sleep_for(10ms); // the last one is waiting again
            // Three idle connections holding no input buffer: the one each took when it
            // started (or when its bytes came) went back, and the next one took it again.
            CHECK(fx->srv->receive_stats().spare_inputs == 1);
            co_await ask(&conns[0], 10); // takes it, answers, gives it back
            (void)co_await sleep_for(10ms);
            CHECK(fx->srv->receive_stats().spare_inputs == 1);
            conns.clear();
            CHECK(co_await until_no_connections(fx->srv.get()));
            CHECK(fx->srv->receive_stats().spare_inputs == 0); // none kept past the connections
        }
    };
    f.l.block_on(d::run(&f));
}
