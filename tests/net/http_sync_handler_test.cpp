// Synchronous handlers (http::sync_handler): called by the server with no coroutine frame,
// with every rule a coroutine handler's request has.

#include "net/http/middleware.hpp"
#include "net/http/server.hpp"
#include "net/http/sharded_server.hpp"
#include "net/tcp_stream.hpp"
#include "runtime/loop.hpp"
#include "runtime/runtime.hpp"
#include "runtime/sleep.hpp"
#include "runtime/spawn.hpp"
#include "support/http_roundtrip.hpp"

#include <doctest/doctest.h>
#include <fmt/format.h>

#include <atomic>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

using namespace tether;
using http::request;
using http::response_writer;
using test::roundtrip;

namespace {

std::string roundtrip(const http::serve_mux& mux, std::string raw) {
    return test::roundtrip(mux.as_handler(), std::move(raw));
}

void hello(request&, response_writer& w) {
    w.headers().set("Content-Type", "text/plain");
    w.write("Hello, World!");
}

// Counts the occurrences of `what` in `s`.
std::size_t count(std::string_view s, std::string_view what) {
    std::size_t n = 0;
    for (std::size_t p = s.find(what); p != std::string_view::npos; p = s.find(what, p + 1)) {
        ++n;
    }
    return n;
}

} // namespace

TEST_CASE("a serve_mux route with a synchronous handler: GET, HEAD, and a 404 beside it") {
    http::serve_mux mux;
    mux.handle("GET /{$}", hello); // a plain function
    std::string got = roundtrip(mux, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"
                                     "HEAD / HTTP/1.1\r\nHost: x\r\n\r\n"
                                     "GET /nowhere/ HTTP/1.1\r\nHost: x\r\n\r\n"
                                     "DELETE / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    CHECK(got.starts_with("HTTP/1.1 200 OK\r\n"));
    // GET and HEAD both say the length; only GET's body follows.
    CHECK(count(got, "Content-Length: 13\r\n") == 2);
    CHECK(count(got, "Hello, World!") == 1);
    auto head = got.find("HTTP/1.1 200 OK", 1);
    REQUIRE(head != std::string::npos);
    auto next = got.find("HTTP/1.1 ", head + 1);
    REQUIRE(next != std::string::npos);
    CHECK(got.substr(head, next - head).ends_with("\r\n\r\n")); // the HEAD response: no body
    CHECK(got.find("HTTP/1.1 404 Not Found", next) == next);
    CHECK(got.find("HTTP/1.1 405 Method Not Allowed") != std::string::npos);
}

TEST_CASE("synchronous and coroutine handlers pipelined on one connection answer in order") {
    http::serve_mux mux;
    int n = 0;
    // A lambda with captures (a std::function in the mux), one without, and coroutines.
    mux.handle("GET /count",
               [&n](request&, response_writer& w) { w.write(fmt::format("n={};", ++n)); });
    mux.handle("GET /path/{x}", [](request& req, response_writer& w) {
        w.write(fmt::format("x={};", req.path_value("x")));
    });
    mux.handle("POST /echo", [](request& req, response_writer& w) -> task<void> {
        auto body = co_await req.read_all();
        w.write(fmt::format("body={};", body.value_or("?")));
    });
    std::string reqs;
    for (int i = 0; i < 4; ++i) {
        reqs += "GET /count HTTP/1.1\r\nHost: x\r\n\r\n";
        reqs +=
            fmt::format("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}", 10 + i);
        reqs += fmt::format("GET /path/p{} HTTP/1.1\r\nHost: x\r\n\r\n", i);
    }
    reqs += "GET /count HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    std::string got = roundtrip(mux, reqs);
    std::string bodies;
    for (std::size_t p = got.find("\r\n\r\n"); p != std::string::npos;
         p = got.find("\r\n\r\n", p + 4)) {
        bodies += got.substr(p + 4, got.find(';', p) + 1 - (p + 4));
    }
    CHECK(bodies == "n=1;body=10;x=p0;n=2;body=11;x=p1;n=3;body=12;x=p2;n=4;body=13;x=p3;n=5;");
    CHECK(n == 5);
}

TEST_CASE(
    "a synchronous handler's request context is live while it runs, canceled once it returns") {
    std::vector<context> kept;
    std::vector<bool> done_inside;
    auto keep = [&](request& req, response_writer& w) {
        done_inside.push_back(req.ctx().is_done());
        kept.push_back(req.ctx());
        w.write("ok");
    };
    SUBCASE("served by the server itself") {
        CHECK(roundtrip(http::from_sync(keep),
                        "GET / HTTP/1.1\r\nHost: x\r\n\r\n"
                        "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                  .starts_with("HTTP/1.1 200 OK"));
    }
    SUBCASE("through a serve_mux") {
        http::serve_mux mux;
        mux.handle("GET /", keep);
        CHECK(roundtrip(mux, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"
                             "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                  .starts_with("HTTP/1.1 200 OK"));
    }
    REQUIRE(kept.size() == 2);
    CHECK(done_inside == std::vector<bool>{false, false});
    for (const context& c : kept) {
        CHECK(c.is_done());
        CHECK(c.err() == errc::canceled);
    }
    // Each request had its own context.
    CHECK(kept[0].node() != kept[1].node());
}

TEST_CASE("a synchronous handler's exception: 500 and a close, or with recover() a 500 and on") {
    auto boom = [](request& req, response_writer& w) {
        w.write("partial");
        if (req.path() == "/boom") {
            throw std::runtime_error("kaput");
        }
    };
    SUBCASE("no recover: the server answers 500 and closes") {
        http::serve_mux mux;
        mux.handle("/", boom);
        std::string got = roundtrip(mux, "GET /boom HTTP/1.1\r\nHost: x\r\n\r\n"
                                         "GET /ok HTTP/1.1\r\nHost: x\r\n\r\n");
        CHECK(got.starts_with("HTTP/1.1 500 "));
        CHECK(got.find("Connection: close\r\n") != std::string::npos);
        CHECK(got.find("partial") == std::string::npos);
        CHECK(count(got, "HTTP/1.1 ") == 1); // the second request is never served
    }
    SUBCASE("recover() outside the mux: a 500, and the connection goes on") {
        http::serve_mux mux;
        mux.handle("/", boom);
        std::vector<std::string> lines;
        std::string got = roundtrip(
            http::chain(mux.as_handler(),
                        {http::recover([&](std::string_view l) { lines.emplace_back(l); })}),
            "GET /boom HTTP/1.1\r\nHost: x\r\n\r\nGET /ok HTTP/1.1\r\nHost: x\r\nConnection: "
            "close\r\n\r\n");
        CHECK(got.starts_with("HTTP/1.1 500 "));
        CHECK(got.find("\r\n\r\npartial") != std::string::npos); // /ok's body
        REQUIRE(lines.size() == 1);
        CHECK(lines[0].find("kaput") != std::string::npos);
    }
    SUBCASE("the server given the handler itself") {
        loop l;
        http::server srv(boom);
        REQUIRE(srv.listen(net::address::ipv4_loopback(0)).has_value());
        std::string got = roundtrip(l, srv, "GET /boom HTTP/1.1\r\nHost: x\r\n\r\n");
        CHECK(got.starts_with("HTTP/1.1 500 "));
        CHECK(got.find("Connection: close\r\n") != std::string::npos);
    }
}

TEST_CASE("middleware wraps a synchronous handler: request_id, access_log, bearer_auth") {
    std::vector<std::string> lines;
    auto show = [](request& req, response_writer& w) {
        const http::identity* who = http::identity_of(req.ctx());
        w.write(fmt::format("id={} who={}", http::request_id_of(req.ctx()),
                            who != nullptr ? who->subject : "-"));
    };
    SUBCASE("synchronous middleware around the server's handler") {
        std::string got = roundtrip(
            http::chain(http::from_sync(show),
                        {http::request_id(),
                         http::access_log([&](std::string_view l) { lines.emplace_back(l); })}),
            "GET /p HTTP/1.1\r\nHost: x\r\nX-Request-ID: r-7\r\nConnection: close\r\n\r\n");
        CHECK(got.find("X-Request-ID: r-7\r\n") != std::string::npos);
        CHECK(got.find("id=r-7 who=-") != std::string::npos);
        REQUIRE(lines.size() == 1);
        CHECK(lines[0].find("\"GET /p HTTP/1.1\" 200 12 ") != std::string::npos);
        CHECK(lines[0].ends_with(" id=r-7"));
    }
    SUBCASE("a coroutine middleware around one route, synchronous ones around the mux") {
        http::serve_mux mux;
        mux.handle("GET /me",
                   http::chain(http::from_sync(show), {http::bearer_auth([](std::string_view t) {
                                   return t == "good" ? std::optional<http::identity>(
                                                            http::identity{"ann", ""})
                                                      : std::nullopt;
                               })}));
        std::string got = roundtrip(
            http::chain(mux.as_handler(),
                        {http::request_id(),
                         http::access_log([&](std::string_view l) { lines.emplace_back(l); })}),
            "GET /me HTTP/1.1\r\nHost: x\r\nX-Request-ID: a\r\nAuthorization: Bearer good\r\n\r\n"
            "GET /me HTTP/1.1\r\nHost: x\r\nX-Request-ID: b\r\nConnection: close\r\n\r\n");
        CHECK(got.find("id=a who=ann") != std::string::npos);
        CHECK(got.find("HTTP/1.1 401 ") != std::string::npos);
        CHECK(got.find("id=b") == std::string::npos);
        REQUIRE(lines.size() == 2);
        CHECK(lines[0].find(" 200 ") != std::string::npos);
        CHECK(lines[1].find(" 401 ") != std::string::npos);
    }
}

TEST_CASE("from_sync's handler awaited as a task runs the function and rethrows its exception") {
    int calls = 0;
    http::handler h = http::from_sync([&calls](request& req, response_writer& w) {
        ++calls;
        if (req.path() == "/boom") {
            throw std::runtime_error("kaput");
        }
        w.write("ok");
    });
    loop l;
    request req;
    response_writer w;
    req.head.target = "/ok";
    l.block_on(h(req, w));
    CHECK(calls == 1);
    CHECK(w.bytes_written() == 2);
    req.head.target = "/boom";
    CHECK_THROWS_AS(l.block_on(h(req, w)), std::runtime_error);
    CHECK(calls == 2);
    CHECK_FALSE(static_cast<bool>(http::from_sync(http::sync_handler{})));
}

TEST_CASE("a sharded_server serves a synchronous handler on each of its loops") {
    std::atomic<int> calls{0};
    runtime rt(runtime::options{.loops = 2});
    http::sharded_server srv(rt, [&calls](request& req, response_writer& w) {
        ++calls;
        w.write(fmt::format("{} live={}", req.path(), !req.ctx().is_done()));
    });
    REQUIRE(srv.listen(net::address::ipv4_loopback(0)).has_value());
    net::address at = *srv.local_addr();
    std::vector<std::string> got = rt.block_on(
        [](runtime* r, http::sharded_server* s, net::address a) -> task<std::vector<std::string>> {
            auto serving = co_await spawn(s->serve());
            context ctx = co_await this_coro::context;
            std::vector<join_handle<std::string>> clients;
            for (int i = 0; i < 8; ++i) {
                clients.push_back(spawn_on(
                    r->loop(static_cast<std::size_t>(i % 2)), ctx,
                    test::read_to_close(
                        a, fmt::format("GET /c{} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                                       i))));
            }
            std::vector<std::string> replies;
            for (auto& c : clients) {
                auto reply = co_await c;
                replies.push_back(reply.value_or(std::string()));
            }
            (void)co_await s->shutdown();
            (void)co_await serving;
            co_return replies;
        }(&rt, &srv, at));
    REQUIRE(got.size() == 8);
    for (std::size_t i = 0; i < got.size(); ++i) {
        CHECK(got[i].starts_with("HTTP/1.1 200 OK"));
        CHECK(got[i].ends_with(fmt::format("/c{} live=true", i)));
    }
    CHECK(calls == 8);
}

TEST_CASE("request_id, access_log, recover and timeout around a mux of synchronous and "
          "coroutine handlers") {
    std::vector<std::string> lines;
    std::vector<std::string> panics;
    http::serve_mux mux;
    mux.handle("GET /hello", [](request& req, response_writer& w) {
        // Under the timeout's context, a child of the request ID's.
        w.write(fmt::format("hello id={} deadline={}", http::request_id_of(req.ctx()),
                            req.ctx().has_deadline()));
    });
    mux.handle("GET /boom", [](request&, response_writer&) { throw std::runtime_error("kaput"); });
    mux.handle("GET /slow", [](request&, response_writer& w) -> task<void> {
        auto r = co_await sleep_for(std::chrono::seconds(10));
        w.write(r ? "slept" : "woken");
    });
    http::handler app = http::chain(
        mux.as_handler(),
        {http::request_id(), http::access_log([&](std::string_view l) { lines.emplace_back(l); }),
         http::recover([&](std::string_view l) { panics.emplace_back(l); }),
         http::timeout(std::chrono::milliseconds(50))});
    // Every one of them synchronous steps, which the server runs in its frame.
    const http::handler* h = &app;
    for (int i = 0; i < 3; ++i) { // request_id takes the access log's work into its steps
        const auto* a = h->target<http::detail::around_handler>();
        REQUIRE(a != nullptr);
        h = &a->next;
    }
    CHECK(h->target<http::detail::mux_handler>() != nullptr);

    std::string got = roundtrip(
        app, "GET /hello HTTP/1.1\r\nHost: x\r\nX-Request-ID: h1\r\n\r\n"
             "GET /boom HTTP/1.1\r\nHost: x\r\nX-Request-ID: b1\r\n\r\n"
             "GET /slow HTTP/1.1\r\nHost: x\r\nX-Request-ID: s1\r\n\r\n"
             "GET /hello HTTP/1.1\r\nHost: x\r\nX-Request-ID: h2\r\nConnection: close\r\n\r\n");
    CHECK(got.find("hello id=h1 deadline=true") != std::string::npos);
    CHECK(got.find("HTTP/1.1 500 Internal Server Error") != std::string::npos);
    CHECK(got.find("503 handler timeout\n") != std::string::npos);
    CHECK(got.find("woken") == std::string::npos);
    CHECK(got.find("hello id=h2 deadline=true") != std::string::npos);
    REQUIRE(lines.size() == 4);
    CHECK(lines[0].find("\"GET /hello HTTP/1.1\" 200 ") != std::string::npos);
    CHECK(lines[0].ends_with(" id=h1"));
    CHECK(lines[1].find("\"GET /boom HTTP/1.1\" 500 ") != std::string::npos);
    CHECK(lines[1].ends_with(" id=b1"));
    CHECK(lines[2].find("\"GET /slow HTTP/1.1\" 503 ") != std::string::npos);
    CHECK(lines[3].ends_with(" id=h2"));
    REQUIRE(panics.size() == 1);
    CHECK(panics[0].find("GET /boom: kaput") != std::string::npos);
}
