#include "net/http/middleware.hpp"
#include "net/http/server.hpp"
#include "net/tcp_stream.hpp"
#include "runtime/loop.hpp"
#include "runtime/sleep.hpp"
#include "runtime/spawn.hpp"

#include <doctest/doctest.h>

#include <regex>
#include <stdexcept>
#include <string>
#include <vector>

using namespace tether;
using namespace std::chrono_literals;
using http::request;
using http::response_writer;

namespace {

task<std::string> get(net::address at, std::string raw) {
    auto s = co_await net::tcp_stream::connect(at);
    REQUIRE(s.has_value());
    (void)co_await s->write_all(std::string_view(raw));
    std::string got;
    char buf[4096];
    for (;;) {
        auto r = co_await s->read_some(std::as_writable_bytes(std::span(buf)));
        if (!r || *r == 0) {
            break;
        }
        got.append(buf, *r);
    }
    co_return got;
}

// Serves `h` on a fresh server, sends `raw` (which should ask to close), returns the reply.
std::string roundtrip(http::handler h, std::string raw) {
    loop l;
    http::server srv(std::move(h));
    REQUIRE(srv.listen(net::address::ipv4_loopback(0)).has_value());
    net::address at = *srv.local_addr();
    return l.block_on([](http::server* s, net::address a, std::string r) -> task<std::string> {
        auto serving = co_await spawn(s->serve());
        std::string got = co_await get(a, std::move(r));
        (void)co_await s->shutdown();
        (void)co_await serving;
        co_return got;
    }(&srv, at, std::move(raw)));
}

task<void> show_id(request&, response_writer& w) {
    context ctx = co_await this_coro::context;
    w.write(fmt::format("id={}", http::request_id_of(ctx)));
}

} // namespace

TEST_CASE("request_id takes X-Request-ID, puts it in the context and echoes it") {
    auto h = http::chain(show_id, {http::request_id()});
    std::string got = roundtrip(
        h, "GET / HTTP/1.1\r\nHost: x\r\nX-Request-ID: abc-123\r\nConnection: close\r\n\r\n");
    CHECK(got.find("X-Request-ID: abc-123\r\n") != std::string::npos);
    CHECK(got.find("id=abc-123") != std::string::npos);
}

TEST_CASE("request_id generates an ID when the client sends none") {
    auto h = http::chain(show_id, {http::request_id()});
    std::string got = roundtrip(h, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    auto p = got.find("X-Request-ID: ");
    REQUIRE(p != std::string::npos);
    std::string id = got.substr(p + 14, 32);
    CHECK(id.find_first_not_of("0123456789abcdef") == std::string::npos);
    CHECK(got.substr(p + 14 + 32, 2) == "\r\n");
    CHECK(got.find("id=" + id) != std::string::npos);

    // Every request gets its own.
    std::string again = roundtrip(h, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    auto q = again.find("X-Request-ID: ");
    REQUIRE(q != std::string::npos);
    CHECK(again.substr(q + 14, 32) != id);
}

TEST_CASE("access_log writes one line with the request ID, status and bytes") {
    std::vector<std::string> lines;
    auto h = http::chain(show_id, {http::request_id(), http::access_log([&](std::string_view l) {
                                       lines.emplace_back(l);
                                   })});
    std::string got = roundtrip(
        h, "GET /p?q=1 HTTP/1.1\r\nHost: x\r\nX-Request-ID: r1\r\nConnection: close\r\n\r\n");
    REQUIRE(lines.size() == 1);
    CHECK(lines[0].find("\"GET /p?q=1 HTTP/1.1\" 200 5 ") != std::string::npos);
    CHECK(lines[0].find("id=r1") != std::string::npos);
    // The whole line: peer, request line, status, body bytes, milliseconds with three
    // decimals, ID.
    static const std::regex whole(
        R"(^(127\.0\.0\.1|\[::1\]):[0-9]+ "GET /p\?q=1 HTTP/1\.1" 200 5 [0-9]+\.[0-9]{3}ms id=r1$)");
    CHECK_MESSAGE(std::regex_match(lines[0], whole), lines[0]);
}

TEST_CASE("recover turns an exception into a 500 and the server keeps serving") {
    std::vector<std::string> lines;
    auto h = http::chain(
        [](request& req, response_writer& w) -> task<void> {
            if (req.path() == "/boom") {
                throw std::runtime_error("kaput");
            }
            w.write("fine");
            co_return;
        },
        {http::recover([&](std::string_view l) { lines.emplace_back(l); })});
    std::string got = roundtrip(h, "GET /boom HTTP/1.1\r\nHost: x\r\n\r\nGET /ok HTTP/1.1\r\nHost: "
                                   "x\r\nConnection: close\r\n\r\n");
    CHECK(got.find("HTTP/1.1 500") == 0);
    CHECK(got.find("fine") != std::string::npos);
    REQUIRE(lines.size() == 1);
    CHECK(lines[0].find("kaput") != std::string::npos);
}

TEST_CASE("timeout cancels a slow handler's awaits and answers 503") {
    static std::error_code seen;
    auto h = http::chain(
        [](request&, response_writer& w) -> task<void> {
            auto r = co_await sleep_for(1h);
            seen = r.error();
            w.write("too late");
        },
        {http::timeout(50ms)});
    std::string got = roundtrip(h, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    CHECK(got.find("HTTP/1.1 503") == 0);
    CHECK(got.find("too late") == std::string::npos);
    CHECK(seen == errc::deadline_exceeded);
}

TEST_CASE("bearer_auth puts the identity in the context or answers 401") {
    auto verify = [](std::string_view token) -> std::optional<http::identity> {
        if (token == "good") {
            return http::identity{"ada", "admin"};
        }
        return std::nullopt;
    };
    auto h = http::chain(
        [](request&, response_writer& w) -> task<void> {
            context ctx = co_await this_coro::context;
            const http::identity* who = http::identity_of(ctx);
            w.write(who ? who->subject + "/" + who->role : "nobody");
        },
        {http::bearer_auth(verify)});
    std::string ok = roundtrip(
        h, "GET / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer good\r\nConnection: close\r\n\r\n");
    CHECK(ok.find("ada/admin") != std::string::npos);
    std::string bad = roundtrip(
        h, "GET / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer bad\r\nConnection: close\r\n\r\n");
    CHECK(bad.find("HTTP/1.1 401") == 0);
    CHECK(bad.find("WWW-Authenticate: Bearer") != std::string::npos);
    std::string none = roundtrip(h, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    CHECK(none.find("HTTP/1.1 401") == 0);
}
