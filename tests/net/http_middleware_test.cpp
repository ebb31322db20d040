#include "net/http/middleware.hpp"
#include "net/http/server.hpp"
#include "net/tcp_stream.hpp"
#include "runtime/loop.hpp"
#include "runtime/sleep.hpp"
#include "runtime/spawn.hpp"
#include "support/http_roundtrip.hpp"

#include <doctest/doctest.h>
#include <fmt/format.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <regex>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

using namespace tether;
using namespace std::chrono_literals;
using http::request;
using http::response_writer;
using test::roundtrip;

namespace {

// A handler that records the request ID it runs under, writes a little and throws.
http::handler throwing_handler(std::string& seen) {
    return [&seen](request&, response_writer& w) -> task<void> {
        context ctx = co_await this_coro::context;
        seen = std::string(http::request_id_of(ctx));
        w.write("partial");
        throw std::runtime_error("boom");
    };
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

TEST_CASE("access_log writes statuses and body sizes of every length in decimal") {
    // Each request's path names the status and the body size its handler answers with: one,
    // two, three and more digits, on both sides of each boundary.
    std::vector<std::string> lines;
    auto sized = [](request& req, response_writer& w) -> task<void> {
        const std::string path(req.path().substr(1));
        const auto slash = path.find('/');
        w.write_header(std::atoi(path.substr(0, slash).c_str()));
        w.write(std::string(std::strtoul(path.substr(slash + 1).c_str(), nullptr, 10), 'x'));
        co_return;
    };
    auto h =
        http::chain(sized, {http::request_id(),
                            http::access_log([&](std::string_view l) { lines.emplace_back(l); })});
    const std::vector<std::pair<int, std::size_t>> cases = {
        {200, 0},   {201, 9},    {404, 10},   {299, 99},     {500, 100},
        {418, 999}, {200, 1000}, {202, 4096}, {200, 123456}, {999, 7},
    };
    std::string raw;
    for (const auto& [status, size] : cases) {
        raw += fmt::format("GET /{}/{} HTTP/1.1\r\nHost: x\r\n\r\n", status, size);
    }
    raw += "GET /200/1 HTTP/1.0\r\n\r\n";
    (void)roundtrip(h, raw);
    REQUIRE(lines.size() == cases.size() + 1);
    for (std::size_t i = 0; i < cases.size(); ++i) {
        const auto& [status, size] = cases[i];
        CAPTURE(lines[i]);
        const std::regex line(fmt::format(
            R"(^.* "GET /{0}/{1} HTTP/1\.1" {0} {1} [0-9]+\.[0-9]{{3}}ms id=[0-9a-f]{{32}}$)",
            status, size));
        CHECK(std::regex_match(lines[i], line));
    }
    static const std::regex ten(R"(^.* "GET /200/1 HTTP/1\.0" 200 1 [0-9]+\.[0-9]{3}ms id=.*$)");
    CHECK_MESSAGE(std::regex_match(lines.back(), ten), lines.back());
}

TEST_CASE("access_log outside request_id still logs the request ID") {
    // request_id() inside: the ID is read back from the response, as the context the log
    // runs under has none.
    std::vector<std::string> lines;
    auto h =
        http::chain(show_id, {http::access_log([&](std::string_view l) { lines.emplace_back(l); }),
                              http::request_id()});
    std::string got = roundtrip(
        h, "GET / HTTP/1.1\r\nHost: x\r\nX-Request-ID: in-1\r\nConnection: close\r\n\r\n");
    CHECK(got.find("id=in-1") != std::string::npos);
    REQUIRE(lines.size() == 1);
    CHECK(lines[0].ends_with(" id=in-1"));
}

TEST_CASE("request_id with access_log: a handler's exception is logged as 500 and rethrown") {
    // request_id() right outside access_log() does both in one frame: the line says 500, the
    // exception still reaches recover(), and the handler ran under the request ID.
    std::vector<std::string> lines;
    std::vector<std::string> panics;
    std::string seen;
    auto h = http::chain(throwing_handler(seen),
                         {http::recover([&](std::string_view l) { panics.emplace_back(l); }),
                          http::request_id(),
                          http::access_log([&](std::string_view l) { lines.emplace_back(l); })});
    std::string got = roundtrip(
        h, "GET /t HTTP/1.1\r\nHost: x\r\nX-Request-ID: ex-1\r\nConnection: close\r\n\r\n");
    CHECK(got.starts_with("HTTP/1.1 500 "));
    CHECK(seen == "ex-1");
    REQUIRE(panics.size() == 1);
    CHECK(panics[0].find("boom") != std::string::npos);
    REQUIRE(lines.size() == 1);
    CHECK(lines[0].find("\"GET /t HTTP/1.1\" 500 ") != std::string::npos);
    CHECK(lines[0].ends_with(" id=ex-1"));
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

namespace {

// Sends `raw` on `conns` connections at once and returns what each got back (each should
// ask to close with its last request).
std::vector<std::string> roundtrip_many(http::server& srv, std::string raw, int conns) {
    loop l;
    net::address at = *srv.local_addr();
    return l.block_on([](http::server* s, net::address a, std::string r,
                         int n) -> task<std::vector<std::string>> {
        auto serving = co_await spawn(s->serve());
        std::vector<join_handle<std::string>> clients;
        for (int i = 0; i < n; ++i) {
            clients.push_back(co_await spawn(test::read_to_close(a, r)));
        }
        std::vector<std::string> got;
        for (auto& c : clients) {
            result<std::string> one = co_await c;
            got.push_back(one ? *one : std::string{});
        }
        (void)co_await s->shutdown();
        (void)co_await serving;
        co_return got;
    }(&srv, at, std::move(raw), conns));
}

// Splits `s` at "\n" (a last line without one is kept).
std::vector<std::string> lines_of(std::string_view s) {
    std::vector<std::string> out;
    while (!s.empty()) {
        std::size_t nl = s.find('\n');
        out.emplace_back(s.substr(0, nl));
        s.remove_prefix(nl == std::string_view::npos ? s.size() : nl + 1);
    }
    return out;
}

std::string pipelined(int n, std::string_view extra = "") {
    std::string raw;
    for (int i = 0; i < n; ++i) {
        raw += fmt::format("GET /r{} HTTP/1.1\r\nHost: x\r\n{}{}\r\n", i, extra,
                           i + 1 == n ? "Connection: close\r\n" : "");
    }
    return raw;
}

} // namespace

TEST_CASE("request_id: the response's X-Request-ID is the context's ID, given or generated") {
    auto h = http::chain(
        [](request&, response_writer& w) -> task<void> {
            context ctx = co_await this_coro::context;
            w.write(fmt::format("id={}\n", http::request_id_of(ctx)));
        },
        {http::request_id()});
    const std::string longest(128, 'L');
    const std::string too_long(129, 'T');
    std::string raw = pipelined(3) + "GET / HTTP/1.1\r\nHost: x\r\nX-Request-ID: " + longest +
                      "\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\nX-Request-ID: " + too_long +
                      "\r\nConnection: close\r\n\r\n";
    raw.replace(raw.find("Connection: close\r\n"), 19, ""); // only the last one closes
    std::string got = roundtrip(h, raw);
    std::vector<std::string> ids;
    for (std::size_t p = got.find("X-Request-ID: "); p != std::string::npos;
         p = got.find("X-Request-ID: ", p + 1)) {
        std::size_t end = got.find("\r\n", p);
        std::string header = got.substr(p + 14, end - p - 14);
        std::size_t body = got.find("id=", end);
        REQUIRE(body != std::string::npos);
        std::string value = got.substr(body + 3, got.find('\n', body) - body - 3);
        CHECK(header == value);
        ids.push_back(header);
    }
    REQUIRE(ids.size() == 5);
    for (int i : {0, 1, 2, 4}) {
        CHECK(ids[i].size() == 32);
        CHECK(ids[i].find_first_not_of("0123456789abcdef") == std::string::npos);
    }
    CHECK(ids[3] == longest);
    CHECK(ids[4] != too_long);
    CHECK(ids[0] != ids[1]);
    CHECK(ids[1] != ids[2]);
}

TEST_CASE("request_id: a thread's generated IDs share a prefix and count up in hex") {
    // 300 IDs in a row: the count's last digits carry (9 to a, f to 10, ff to 100) many times.
    auto h = http::chain([](request&, response_writer&) -> task<void> { co_return; },
                         {http::request_id()});
    std::string got = roundtrip(h, pipelined(300));
    std::vector<std::string> ids;
    for (std::size_t p = got.find("X-Request-ID: "); p != std::string::npos;
         p = got.find("X-Request-ID: ", p + 1)) {
        ids.push_back(got.substr(p + 14, got.find("\r\n", p) - p - 14));
    }
    REQUIRE(ids.size() == 300);
    for (std::size_t i = 0; i < ids.size(); ++i) {
        REQUIRE(ids[i].size() == 32);
        CHECK(ids[i].find_first_not_of("0123456789abcdef") == std::string::npos);
        CHECK(ids[i].substr(0, 16) == ids[0].substr(0, 16));
        if (i > 0) {
            const auto count = [](const std::string& id) {
                return std::stoull(id.substr(16), nullptr, 16);
            };
            CHECK(count(ids[i]) == count(ids[i - 1]) + 1);
        }
    }
}

TEST_CASE("request_id: a context a handler keeps holds its ID while the connection goes on") {
    // The server runs request_id() and access_log() in its own frame and reuses the ID's
    // context node from one request of a connection to the next, unless someone else holds
    // it: the contexts the first two handlers keep must keep their IDs.
    std::vector<context> kept;
    std::vector<std::string> lines;
    auto h = http::chain(
        [&](request&, response_writer& w) -> task<void> {
            context ctx = co_await this_coro::context;
            if (kept.size() < 2) {
                kept.push_back(ctx);
            }
            w.write(fmt::format("id={}\n", http::request_id_of(ctx)));
        },
        {http::request_id(),
         http::access_log_batched([&](std::string_view batch) { lines.emplace_back(batch); })});
    std::string got = roundtrip(h, pipelined(5));
    std::vector<std::string> ids;
    for (std::size_t p = got.find("X-Request-ID: "); p != std::string::npos;
         p = got.find("X-Request-ID: ", p + 1)) {
        ids.push_back(got.substr(p + 14, got.find("\r\n", p) - p - 14));
        CHECK(got.find("id=" + ids.back() + "\n") != std::string::npos);
    }
    REQUIRE(ids.size() == 5);
    REQUIRE(kept.size() == 2);
    CHECK(http::request_id_of(kept[0]) == ids[0]);
    CHECK(http::request_id_of(kept[1]) == ids[1]);
    // The whole chain stays with them, past the server's end: the request's context (its
    // handler returned, so canceled, as in Go) and what it derives from.
    static constexpr context_key<int> absent{"absent"};
    for (const context& k : kept) {
        CHECK(k.err() == errc::canceled);
        CHECK(k.value(absent) == nullptr); // a lookup walks every node up to the root
        CHECK_FALSE(k.deadline().has_value());
    }
    for (std::size_t i = 0; i < ids.size(); ++i) {
        for (std::size_t j = i + 1; j < ids.size(); ++j) {
            CHECK(ids[i] != ids[j]);
        }
    }
    std::string all;
    for (const std::string& b : lines) {
        all += b;
    }
    for (std::size_t i = 0; i < ids.size(); ++i) {
        CHECK(all.find(fmt::format("\"GET /r{} HTTP/1.1\" 200 36 ", i)) != std::string::npos);
        CHECK(all.find(" id=" + ids[i] + "\n") != std::string::npos);
    }
}

TEST_CASE("request_id and access_log outermost: a handler's exception is logged as 500") {
    // With no coroutine middleware around them, the server runs their steps itself.
    std::vector<std::string> lines;
    std::string seen;
    auto h = http::chain(
        throwing_handler(seen),
        {http::request_id(), http::access_log([&](std::string_view l) { lines.emplace_back(l); })});
    std::string got = roundtrip(h, "GET /t HTTP/1.1\r\nHost: x\r\nX-Request-ID: ex-2\r\n\r\n");
    CHECK(got.starts_with("HTTP/1.1 500 "));
    CHECK(seen == "ex-2");
    REQUIRE(lines.size() == 1);
    CHECK(lines[0].find("\"GET /t HTTP/1.1\" 500 ") != std::string::npos);
    CHECK(lines[0].ends_with(" id=ex-2"));
}

namespace {

// Around steps that note what they do in `trace`; `throw_before` / `throw_after` make a step
// throw there.
struct noting_steps final : http::detail::around_steps {
    std::string name;
    std::string* trace;
    bool throw_before = false;
    bool throw_after = false;
    noting_steps(std::string n, std::string* t, bool tb, bool ta)
        : name(std::move(n)), trace(t), throw_before(tb), throw_after(ta) {}
    void before(request&, response_writer&, http::detail::around_state&) const override {
        *trace += "before " + name + (throw_before ? " throws; " : "; ");
        if (throw_before) {
            throw std::runtime_error("before");
        }
    }
    void after(request&, response_writer&, http::detail::around_state&,
               bool failed) const override {
        *trace += "after " + name + (failed ? " failed" : "") + (throw_after ? " throws; " : "; ");
        if (throw_after) {
            throw std::runtime_error("after");
        }
    }
};

// `h` inside around steps named a (outermost), b and c; step `before_throws` throws in
// `before`, step `after_throws` in `after` (none: ' '). Returns the trace and the reply's
// status line.
std::pair<std::string, std::string> run_steps(char before_throws, char after_throws) {
    std::string trace;
    http::handler h = [&trace](request&, response_writer& w) -> task<void> {
        trace += "handler; ";
        w.write("ok");
        co_return;
    };
    for (char n : {'c', 'b', 'a'}) {
        h = http::detail::around_handler{
            std::move(h), std::make_shared<noting_steps>(std::string(1, n), &trace,
                                                         n == before_throws, n == after_throws)};
    }
    std::string got = roundtrip(h, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    return {trace, got.substr(0, got.find("\r\n"))};
}

} // namespace

TEST_CASE("around steps run outermost first before the handler, innermost first after it") {
    auto [trace, status] = run_steps(' ', ' ');
    CHECK(trace == "before a; before b; before c; handler; after c; after b; after a; ");
    CHECK(status == "HTTP/1.1 200 OK");
}

TEST_CASE(
    "around steps: a `before` that throws skips the handler; the steps before it end failed") {
    auto [trace, status] = run_steps('b', ' ');
    CHECK(trace == "before a; before b throws; after a failed; ");
    CHECK(status == "HTTP/1.1 500 Internal Server Error");
}

TEST_CASE("around steps: an `after` that throws fails the request for the steps outside it") {
    auto [trace, status] = run_steps(' ', 'c');
    CHECK(
        trace ==
        "before a; before b; before c; handler; after c throws; after b failed; after a failed; ");
    CHECK(status == "HTTP/1.1 500 Internal Server Error");
}

TEST_CASE("access_log(FILE*): every line is in the file once shutdown has returned") {
    char* text = nullptr;
    std::size_t size = 0;
    std::FILE* f = open_memstream(&text, &size);
    REQUIRE(f != nullptr);
    {
        auto h = http::chain(show_id, {http::request_id(), http::access_log(f)});
        http::server srv(h);
        REQUIRE(srv.listen(net::address::ipv4_loopback(0)).has_value());
        // Four connections of 25 pipelined requests, answered in turns of several.
        std::vector<std::string> got = roundtrip_many(srv, pipelined(25), 4);
        for (const std::string& g : got) {
            std::size_t n = 0;
            for (std::size_t p = g.find("HTTP/1.1 200"); p != std::string::npos;
                 p = g.find("HTTP/1.1 200", p + 1)) {
                ++n;
            }
            CHECK(n == 25);
        }
    }
    REQUIRE(std::fflush(f) == 0);
    std::string log(text, size);
    std::fclose(f);
    std::free(text);
    CHECK((log.empty() || log.back() == '\n'));
    std::vector<std::string> lines = lines_of(log);
    CHECK(lines.size() == 100);
    static const std::regex whole(
        R"(^(127\.0\.0\.1|\[::1\]):[0-9]+ "GET /r([0-9]+) HTTP/1\.1" 200 35 [0-9]+\.[0-9]{3}ms id=[0-9a-f]{32}$)");
    std::vector<int> seen(25, 0);
    for (const std::string& line : lines) {
        std::smatch m;
        REQUIRE_MESSAGE(std::regex_match(line, m, whole), line);
        ++seen[static_cast<std::size_t>(std::stoi(m[2]))];
    }
    for (int n : seen) {
        CHECK(n == 4);
    }
}

TEST_CASE("access_log_batched: a connection's lines come in batches, each line ending in \\n") {
    std::vector<std::string> batches;
    auto h = http::chain(show_id,
                         {http::request_id(), http::access_log_batched([&](std::string_view lines) {
                              batches.emplace_back(lines);
                          })});
    http::server srv(h);
    REQUIRE(srv.listen(net::address::ipv4_loopback(0)).has_value());
    (void)roundtrip_many(srv, pipelined(20, "X-Request-ID: same\r\n"), 1);
    std::size_t lines = 0;
    bool several = false;
    for (const std::string& b : batches) {
        REQUIRE(!b.empty());
        CHECK(b.back() == '\n');
        std::size_t n = lines_of(b).size();
        several = several || n > 1;
        lines += n;
        for (const std::string& line : lines_of(b)) {
            CHECK(line.ends_with(" id=same"));
        }
    }
    CHECK(lines == 20);
    // Twenty requests sent in one write are read in one or a few: their lines are batched.
    CHECK(several);
}

TEST_CASE("access_log: a peer's text longer than the connection keeps inline is logged whole") {
    // An IPv4 client of a dual-stack listener is the IPv4-mapped IPv6 address:
    // `[::ffff:127.0.0.1]:PORT "` is 26 bytes or more, past what conn_log holds inline.
    std::vector<std::string> lines;
    auto h = http::chain(show_id, {http::request_id(), http::access_log([&](std::string_view l) {
                                       lines.emplace_back(l);
                                   })});
    http::server srv(h);
    if (!srv.listen(net::address::ipv6_any(0)).has_value()) {
        MESSAGE("no IPv6 here: skipped");
        return;
    }
    result<net::address> mapped =
        net::address::parse(fmt::format("[::ffff:127.0.0.1]:{}", srv.local_addr()->port()));
    REQUIRE(mapped.has_value());
    loop l;
    const bool served = l.block_on([](http::server* s, net::address a) -> task<bool> {
        auto serving = co_await spawn(s->serve());
        bool ok = true;
        for (int i = 0; i < 2 && ok; ++i) { // two connections, three requests each
            auto c = co_await net::tcp_stream::connect(a);
            if (!c) {
                ok = false; // IPv6-only sockets here
                break;
            }
            std::string raw = pipelined(3);
            (void)co_await c->write_all(std::string_view(raw));
            char buf[4096];
            for (;;) {
                auto r = co_await c->read_some(std::as_writable_bytes(std::span(buf)));
                if (!r || *r == 0) {
                    break;
                }
            }
        }
        (void)co_await s->shutdown();
        (void)co_await serving;
        co_return ok;
    }(&srv, *mapped));
    if (!served) {
        MESSAGE("no IPv4-mapped connections here: skipped");
        return;
    }
    REQUIRE(lines.size() == 6);
    static const std::regex whole(
        R"(^\[::ffff:127\.0\.0\.1\]:([0-9]+) "GET /r([0-9]) HTTP/1\.1" 200 35 [0-9]+\.[0-9]{3}ms id=[0-9a-f]{32}$)");
    std::vector<std::string> ports;
    for (std::size_t i = 0; i < lines.size(); ++i) {
        std::smatch m;
        REQUIRE_MESSAGE(std::regex_match(lines[i], m, whole), lines[i]);
        CHECK(m[2].str() == std::to_string(i % 3));
        ports.push_back(m[1].str());
    }
    // Each connection's lines carry its own port.
    CHECK(ports[0] == ports[1]);
    CHECK(ports[0] == ports[2]);
    CHECK(ports[3] == ports[4]);
    CHECK(ports[3] == ports[5]);
    CHECK(ports[0] != ports[3]);
}

TEST_CASE("access_log(FILE*) outside a server writes the line at once") {
    char* text = nullptr;
    std::size_t size = 0;
    std::FILE* f = open_memstream(&text, &size);
    REQUIRE(f != nullptr);
    auto h = http::chain(
        [](request&, response_writer& w) -> task<void> {
            w.write_header(204);
            co_return;
        },
        {http::access_log(f)});
    loop l;
    request req;
    std::string raw = "PUT /x HTTP/1.0\r\n\r\n";
    http::request_parser parser;
    REQUIRE(parser.parse(raw, req.head) == http::request_parser::status::complete);
    response_writer w;
    l.block_on(h(req, w));
    REQUIRE(std::fflush(f) == 0);
    std::string log(text, size);
    std::fclose(f);
    std::free(text);
    static const std::regex whole(R"(^.* "PUT /x HTTP/1\.0" 204 0 [0-9]+\.[0-9]{3}ms id=-\n$)");
    CHECK_MESSAGE(std::regex_match(log, whole), log);
}

TEST_CASE("access_log(FILE*): two logs served on one thread each get exactly their lines") {
    // Both servers' connections gather lines in the thread's one buffer: a line for the
    // other log writes what is gathered first.
    struct memfile {
        char* text = nullptr;
        std::size_t size = 0;
        std::FILE* f = open_memstream(&text, &size);
        std::string read() {
            REQUIRE(std::fflush(f) == 0);
            return std::string(text, size);
        }
        ~memfile() {
            std::fclose(f);
            std::free(text);
        }
    };
    memfile a;
    memfile b;
    REQUIRE(a.f != nullptr);
    REQUIRE(b.f != nullptr);
    auto tagged = [](std::string tag) -> http::handler {
        return [tag](request&, response_writer& w) -> task<void> {
            w.write(tag);
            co_return;
        };
    };
    loop l;
    http::server sa(http::chain(tagged("a"), {http::access_log(a.f)}));
    http::server sb(http::chain(tagged("bb"), {http::access_log(b.f)}));
    REQUIRE(sa.listen(net::address::ipv4_loopback(0)).has_value());
    REQUIRE(sb.listen(net::address::ipv4_loopback(0)).has_value());
    l.block_on([](http::server* x, http::server* y) -> task<void> {
        auto serving_x = co_await spawn(x->serve());
        auto serving_y = co_await spawn(y->serve());
        std::vector<join_handle<std::string>> clients;
        // Named first: GCC 12 mishandles non-trivial temporaries in a co_await.
        const std::string raw = pipelined(10);
        const net::address at_x = *x->local_addr();
        const net::address at_y = *y->local_addr();
        for (int i = 0; i < 3; ++i) {
            task<std::string> to_x = test::read_to_close(at_x, raw);
            task<std::string> to_y = test::read_to_close(at_y, raw);
            clients.push_back(co_await spawn(std::move(to_x)));
            clients.push_back(co_await spawn(std::move(to_y)));
        }
        for (auto& c : clients) {
            (void)co_await c;
        }
        (void)co_await x->shutdown();
        (void)co_await y->shutdown();
        (void)co_await serving_x;
        (void)co_await serving_y;
    }(&sa, &sb));
    std::vector<std::string> la = lines_of(a.read());
    std::vector<std::string> lb = lines_of(b.read());
    CHECK(la.size() == 30);
    CHECK(lb.size() == 30);
    for (const std::string& line : la) {
        CHECK_MESSAGE(line.find(" 200 1 ") != std::string::npos, line);
    }
    for (const std::string& line : lb) {
        CHECK_MESSAGE(line.find(" 200 2 ") != std::string::npos, line);
    }
}

TEST_CASE("access_log durations follow the real clock") {
    // Each request sleeps for the milliseconds its path names. The first ones span the time
    // the log's clock needs to measure its rate (a few ms), so the later ones are timed with
    // it as measured.
    std::vector<std::string> lines;
    auto sleepy = [](request& req, response_writer& w) -> task<void> {
        int ms = std::atoi(std::string(req.path().substr(1)).c_str());
        (void)co_await sleep_for(std::chrono::milliseconds(ms));
        w.write("ok");
    };
    auto h =
        http::chain(sleepy, {http::request_id(),
                             http::access_log([&](std::string_view l) { lines.emplace_back(l); })});
    std::string raw;
    for (int ms : {15, 15, 40, 0}) {
        raw += "GET /" + std::to_string(ms) + " HTTP/1.1\r\nHost: x\r\n\r\n";
    }
    raw += "GET /40 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    (void)roundtrip(h, raw);
    REQUIRE(lines.size() == 5);
    static const std::regex took(R"(^.* "GET /([0-9]+) HTTP/1\.1" 200 2 ([0-9]+\.[0-9]{3})ms .*$)");
    for (const std::string& line : lines) {
        std::smatch m;
        REQUIRE_MESSAGE(std::regex_match(line, m, took), line);
        const double slept = std::stod(m[1].str());
        const double logged = std::stod(m[2].str());
        CAPTURE(line);
        // At least the sleep (less a little for rounding); no bound above on a loaded
        // machine but a generous one.
        CHECK(logged >= slept - 0.5);
        CHECK(logged < slept + 5000);
    }
}

TEST_CASE("access_log: a request's duration counts from when the server read its first bytes") {
    // Two requests in one write, so in one read: the second waits while the first's handler
    // sleeps, and its time includes that wait (nginx's $request_time counts alike). Also with
    // the log inside a coroutine middleware, whose handler runs the steps itself.
    auto sleepy = [](request& req, response_writer& w) -> task<void> {
        int ms = std::atoi(std::string(req.path().substr(1)).c_str());
        (void)co_await sleep_for(std::chrono::milliseconds(ms));
        w.write("ok");
    };
    const std::string raw = "GET /60 HTTP/1.1\r\nHost: x\r\n\r\n"
                            "GET /0 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    static const std::regex took(R"(^.* "GET /([0-9]+) HTTP/1\.1" 200 2 ([0-9]+\.[0-9]{3})ms .*$)");
    for (bool nested : {false, true}) {
        CAPTURE(nested);
        std::vector<std::string> lines;
        auto log = http::access_log([&](std::string_view l) { lines.emplace_back(l); });
        auto h = nested ? http::chain(sleepy, {http::recover(), http::request_id(), log})
                        : http::chain(sleepy, {http::request_id(), log});
        (void)roundtrip(h, raw);
        REQUIRE(lines.size() == 2);
        std::smatch m;
        REQUIRE_MESSAGE(std::regex_match(lines[1], m, took), lines[1]);
        CHECK(m[1].str() == "0");
        CHECK_MESSAGE(std::stod(m[2].str()) >= 59.5, lines[1]);
    }
}

TEST_CASE("access_log_batched: a batch's lines end together, as it is written") {
    // Three requests in one read, so one batch (the second's handler suspends, the third
    // waits behind it): all three start at that read and end when their lines go out, just
    // before their responses, the first's included.
    auto sleepy = [](request& req, response_writer& w) -> task<void> {
        int ms = std::atoi(std::string(req.path().substr(1)).c_str());
        (void)co_await sleep_for(std::chrono::milliseconds(ms));
        w.write("ok");
    };
    std::vector<std::string> batches;
    auto h = http::chain(sleepy,
                         {http::request_id(), http::access_log_batched([&](std::string_view lines) {
                              batches.emplace_back(lines);
                          })});
    const std::string raw = "GET /0 HTTP/1.1\r\nHost: x\r\n\r\n"
                            "GET /40 HTTP/1.1\r\nHost: x\r\n\r\n"
                            "GET /1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    (void)roundtrip(h, raw);
    REQUIRE(batches.size() == 1);
    const std::vector<std::string> lines = lines_of(batches[0]);
    REQUIRE(lines.size() == 3);
    static const std::regex took(
        R"(^.* "GET /([0-9]+) HTTP/1\.1" 200 2 ([0-9]+\.[0-9]{3})ms id=[0-9a-f]{32}$)");
    std::vector<std::string> durations;
    for (const std::string& line : lines) {
        std::smatch m;
        REQUIRE_MESSAGE(std::regex_match(line, m, took), line);
        durations.push_back(m[2].str());
    }
    CHECK_MESSAGE(std::stod(durations[0]) >= 40.5, lines[0]);
    CHECK(durations[0] == durations[1]);
    CHECK(durations[1] == durations[2]);
}

TEST_CASE("access_log lines: durations of every width within one batch") {
    // log_lines as the access log fills it: a line's duration is left for the batch's end,
    // which widens the fields of 10 ms or more and moves the lines after them along.
    struct capture final : http::detail::log_batch {
        std::string got;
        void write(std::string_view lines) noexcept override { got.append(lines); }
    };
    auto out = std::make_shared<capture>();
    using http::detail::log_lines;
    log_lines lines;
    lines.to = out;
    auto add = [&](std::string_view head, std::uint64_t start) {
        char* at =
            lines.room(head.size() + 8 + log_lines::duration_growth * (lines.timed.size() + 1));
        std::memcpy(at, head.data(), head.size());
        char* field = at + head.size();
        lines.timed.push_back({static_cast<std::size_t>(field - lines.buf.data()), start});
        std::memcpy(field + log_lines::duration_width, "ms\n", 3);
        lines.commit(field + log_lines::duration_width + 3);
    };
    const std::uint64_t long_ago = http::detail::access_log_mark();
    std::this_thread::sleep_for(25ms);
    const std::uint64_t a_while_ago = http::detail::access_log_mark();
    std::this_thread::sleep_for(12ms);
    const std::uint64_t now = http::detail::access_log_mark();
    for (int round = 0; round < 2; ++round) {
        CAPTURE(round);
        out->got.clear();
        add("a ", long_ago);
        add("b ", now);
        add("c ", a_while_ago);
        add("d ", now);
        lines.flush();
        CHECK(lines.used == 0);
        CHECK(lines.timed.empty());
        const std::vector<std::string> got = lines_of(out->got);
        REQUIRE(got.size() == 4);
        static const std::regex line(R"(^([a-d]) ([0-9]+)\.([0-9]{3})ms$)");
        double ms[4] = {};
        for (std::size_t i = 0; i < 4; ++i) {
            std::smatch m;
            REQUIRE_MESSAGE(std::regex_match(got[i], m, line), got[i]);
            CHECK(m[1].str() == std::string(1, static_cast<char>('a' + i)));
            ms[i] = std::stod(m[2].str() + "." + m[3].str());
        }
        CHECK(ms[0] >= 36.5);
        CHECK(ms[2] >= 11.5);
        CHECK(ms[0] > ms[2]);
        CHECK(ms[2] > ms[1]);
        CHECK(ms[1] < 10);
        CHECK(ms[3] < 10);
    }
    // A batch of one line, narrow or wide.
    for (std::uint64_t start : {now, long_ago}) {
        out->got.clear();
        add("e ", start);
        lines.flush();
        CHECK(lines.timed.empty());
        const std::vector<std::string> got = lines_of(out->got);
        REQUIRE(got.size() == 1);
        std::smatch m;
        static const std::regex line(R"(^e ([0-9]+\.[0-9]{3})ms$)");
        REQUIRE_MESSAGE(std::regex_match(got[0], m, line), got[0]);
        if (start == now) {
            CHECK(std::stod(m[1].str()) < 10);
        } else {
            CHECK(std::stod(m[1].str()) >= 36.5);
        }
    }
    // Runs of lines that share a start (as one read's requests do), all narrow: each line of
    // a run gets its run's duration.
    {
        out->got.clear();
        // (Fresh marks: this batch's durations are all below 10 ms.)
        const std::uint64_t early = http::detail::access_log_mark();
        const std::uint64_t later = http::detail::access_log_mark();
        add("p ", early);
        add("q ", early);
        add("r ", later);
        add("s ", later);
        add("t ", later);
        add("u ", early);
        lines.flush();
        CHECK(lines.timed.empty());
        const std::vector<std::string> got = lines_of(out->got);
        REQUIRE(got.size() == 6);
        static const std::regex line(R"(^([p-u]) ([0-9]\.[0-9]{3})ms$)");
        std::string d[6];
        for (std::size_t i = 0; i < 6; ++i) {
            std::smatch m;
            REQUIRE_MESSAGE(std::regex_match(got[i], m, line), got[i]);
            CHECK(m[1].str() == std::string(1, static_cast<char>('p' + i)));
            d[i] = m[2].str();
        }
        CHECK(d[0] == d[1]);
        CHECK(d[1] == d[5]);
        CHECK(d[2] == d[3]);
        CHECK(d[3] == d[4]);
        CHECK(std::stod(d[2]) <= std::stod(d[0]));
    }
}

TEST_CASE("recover() between around steps: those inside see the failure, those outside a 500 "
          "that succeeded, and the connection goes on") {
    std::string trace;
    std::vector<std::string> panics;
    http::handler h = [&trace](request& req, response_writer& w) -> task<void> {
        trace += "handler " + std::string(req.path()) + "; ";
        w.write("partial");
        if (req.path() == "/boom") {
            throw std::runtime_error("kaput");
        }
        co_return;
    };
    h = http::detail::around_handler{std::move(h),
                                     std::make_shared<noting_steps>("c", &trace, false, false)};
    h = http::recover([&](std::string_view l) { panics.emplace_back(l); })(std::move(h));
    // Synchronous steps: the server runs them in its frame (no coroutine of recover's own).
    CHECK(h.target<http::detail::around_handler>() != nullptr);
    h = http::detail::around_handler{std::move(h),
                                     std::make_shared<noting_steps>("a", &trace, false, false)};
    SUBCASE("run by the server") {
    }
    SUBCASE("awaited inside a middleware that is a coroutine") {
        h = http::timeout(std::chrono::seconds(5))(std::move(h));
    }
    std::string got = roundtrip(h, "GET /boom HTTP/1.1\r\nHost: x\r\n\r\n"
                                   "GET /ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    CHECK(trace == "before a; before c; handler /boom; after c failed; after a; "
                   "before a; before c; handler /ok; after c; after a; ");
    CHECK(got.starts_with("HTTP/1.1 500 Internal Server Error\r\n"));
    CHECK(got.find("\r\n\r\n500 internal server error\n") != std::string::npos);
    CHECK(got.find("\r\n\r\npartial") !=
          std::string::npos); // /ok's response, on the same connection
    REQUIRE(panics.size() == 1);
    CHECK(panics[0].find("GET /boom: kaput") != std::string::npos);
}

TEST_CASE("recover() around a step whose `before` throws answers 500; the steps outside succeed") {
    std::string trace;
    http::handler h = [&trace](request&, response_writer& w) -> task<void> {
        trace += "handler; ";
        w.write("ok");
        co_return;
    };
    h = http::detail::around_handler{std::move(h),
                                     std::make_shared<noting_steps>("c", &trace, true, false)};
    std::vector<std::string> panics;
    h = http::chain(h, {http::recover([&](std::string_view l) { panics.emplace_back(l); })});
    h = http::detail::around_handler{std::move(h),
                                     std::make_shared<noting_steps>("a", &trace, false, false)};
    std::string got = roundtrip(h, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    CHECK(trace == "before a; before c throws; after a; ");
    CHECK(got.starts_with("HTTP/1.1 500 Internal Server Error\r\n"));
    REQUIRE(panics.size() == 1);
    CHECK(panics[0].find(": before") != std::string::npos);
}

namespace {

// Around steps that note, in `trace`, the identity in the request's context when they run.
struct identity_probe final : http::detail::around_steps {
    std::string name;
    std::string* trace;
    identity_probe(std::string n, std::string* t) : name(std::move(n)), trace(t) {}
    void note(const char* what, request& req) const {
        const http::identity* who = http::identity_of(req.ctx());
        *trace += std::string(what) + " " + name + " " + (who ? who->subject : "-") + "; ";
    }
    void before(request& req, response_writer&, http::detail::around_state&) const override {
        note("before", req);
    }
    void after(request& req, response_writer&, http::detail::around_state&, bool) const override {
        note("after", req);
    }
};

std::optional<http::identity> verify_good(std::string_view token) {
    if (token == "good") {
        return http::identity{"ada", "admin"};
    }
    return std::nullopt;
}

const char* const bearer_requests =
    "GET / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer bad\r\n\r\n"
    "GET / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer good\r\n\r\n"
    "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";

const char* const bearer_trace = "before a -; after a -; "
                                 "before a -; before c ada; handler ada/admin; after c ada; "
                                 "after a -; "
                                 "before a -; after a -; ";

void check_bearer_replies(const std::string& got) {
    // 401 (with the challenge), 200 with the identity, 401: on one connection, in order.
    const auto first = got.find("HTTP/1.1 401 ");
    const auto ok = got.find("HTTP/1.1 200 ");
    const auto last = got.rfind("HTTP/1.1 401 ");
    CHECK(first == 0);
    REQUIRE(ok != std::string::npos);
    CHECK(first < ok);
    CHECK(ok < last);
    CHECK(last != std::string::npos);
    CHECK(got.find("WWW-Authenticate: Bearer\r\n") < ok);
    CHECK(got.find("WWW-Authenticate: Bearer\r\n", last) != std::string::npos);
    CHECK(got.find("\r\n\r\nada/admin") != std::string::npos);
    CHECK(got.find("401 unauthorized\n") != std::string::npos);
}

} // namespace

TEST_CASE("bearer_auth() is synchronous steps, with no coroutine of its own") {
    http::handler h = [](request& req, response_writer& w) -> task<void> {
        const http::identity* who = http::identity_of(req.ctx());
        w.write(who ? who->subject + "/" + who->role : "nobody");
        co_return;
    };
    h = http::bearer_auth(verify_good)(std::move(h));
    // No coroutine of bearer_auth's own: steps the server runs around the handler's task.
    const auto* a = h.target<http::detail::around_handler>();
    REQUIRE(a != nullptr);
    CHECK(a->steps != nullptr);
}

TEST_CASE("bearer_auth()'s 401 through the steps: neither the handler nor the steps inside "
          "run; the identity is in the context only inside, also on the next requests") {
    std::string trace;
    http::handler h = [&trace](request& req, response_writer& w) -> task<void> {
        const http::identity* who = http::identity_of(req.ctx());
        const std::string s = who ? who->subject + "/" + who->role : "nobody";
        trace += "handler " + s + "; ";
        w.write(s);
        co_return;
    };
    h = http::detail::around_handler{std::move(h), std::make_shared<identity_probe>("c", &trace)};
    h = http::bearer_auth(verify_good)(std::move(h));
    h = http::detail::around_handler{std::move(h), std::make_shared<identity_probe>("a", &trace)};
    SUBCASE("run by the server") {
    }
    SUBCASE("awaited inside a middleware that is a coroutine") {
        h = [next = std::move(h)](request& req, response_writer& w) -> task<void> {
            task<void> t = next(req, w);
            co_await std::move(t);
        };
    }
    std::string got = roundtrip(h, bearer_requests);
    CHECK(trace == bearer_trace);
    check_bearer_replies(got);
}

TEST_CASE("bearer_auth() around a serve_mux route's synchronous handler: its 401 and its "
          "identity, the context restored after") {
    std::string trace;
    http::handler route = http::from_sync([&trace](request& req, response_writer& w) {
        const http::identity* who = http::identity_of(req.ctx());
        const std::string s = who ? who->subject + "/" + who->role : "nobody";
        trace += "handler " + s + "; ";
        w.write(s);
    });
    route = http::detail::around_handler{std::move(route),
                                         std::make_shared<identity_probe>("c", &trace)};
    route = http::bearer_auth(verify_good)(std::move(route));
    http::serve_mux mux;
    mux.handle("GET /{$}", std::move(route));
    http::handler h = http::detail::around_handler{mux.as_handler(),
                                                   std::make_shared<identity_probe>("a", &trace)};
    std::string got = roundtrip(h, bearer_requests);
    CHECK(trace == bearer_trace);
    check_bearer_replies(got);
}
