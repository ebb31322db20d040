#include "net/http/client.hpp"
#include "net/http/server.hpp"
#include "runtime/loop.hpp"
#include "runtime/sleep.hpp"
#include "runtime/spawn.hpp"

#include <doctest/doctest.h>

#include <string>

using namespace tether;
using namespace std::chrono_literals;
using http::request;
using http::response_writer;

namespace {

struct fixture {
    loop l;
    http::serve_mux mux;
    std::unique_ptr<http::server> srv;
    std::string base;
    join_handle<result<void>> serving;

    fixture() {
        mux.handle("GET /hello", [](request&, response_writer& w) -> task<void> {
            w.write("Hello, World!");
            co_return;
        });
        mux.handle("POST /echo", [](request& req, response_writer& w) -> task<void> {
            auto b = co_await req.read_all();
            w.write(b ? *b : "error");
        });
        mux.handle("GET /stream", [](request&, response_writer& w) -> task<void> {
            w.write("a");
            (void)co_await w.flush();
            w.write("bc");
        });
        mux.handle("GET /slow", [](request&, response_writer& w) -> task<void> {
            (void)co_await sleep_for(1h);
            w.write("late");
        });
        mux.handle("GET /old", [](request&, response_writer& w) -> task<void> {
            w.headers().set("Location", "/hello");
            w.write_header(302);
            co_return;
        });
        srv = std::make_unique<http::server>(mux.as_handler());
        REQUIRE(srv->listen(net::address::ipv4_loopback(0)).has_value());
        base = fmt::format("http://{}", *srv->local_addr());
        serving = l.block_on([](http::server* s) -> task<join_handle<result<void>>> {
            co_return co_await spawn(s->serve());
        }(srv.get()));
    }
    ~fixture() {
        l.block_on([](http::server* s) -> task<void> { (void)co_await s->shutdown(); }(srv.get()));
        l.run_until_idle();
    }
};

} // namespace

TEST_CASE("the client gets a response and reuses the kept-alive connection") {
    fixture f;
    http::client c;
    auto r = f.l.block_on(c.get(f.base + "/hello"));
    REQUIRE(r.has_value());
    CHECK(r->status == 200);
    CHECK(r->body == "Hello, World!");
    CHECK(r->header("content-length") == "13");
    CHECK(c.idle_connections() == 1);
    auto again = f.l.block_on(c.get(f.base + "/hello"));
    REQUIRE(again.has_value());
    CHECK(again->body == "Hello, World!");
    CHECK(c.idle_connections() == 1);
    CHECK(f.srv->active_connections() == 1); // one connection served both
}

TEST_CASE("the client sends a body and reads chunked responses") {
    fixture f;
    http::client c;
    auto r = f.l.block_on(c.request("POST", f.base + "/echo", {}, "payload"));
    REQUIRE(r.has_value());
    CHECK(r->body == "payload");
    auto s = f.l.block_on(c.get(f.base + "/stream"));
    REQUIRE(s.has_value());
    CHECK(s->header("transfer-encoding") == "chunked");
    CHECK(s->body == "abc");
}

TEST_CASE("a request bounded by its context is canceled and closes its connection") {
    fixture f;
    http::client c;
    auto r = f.l.block_on(tether::with_timeout(100ms, c.get(f.base + "/slow")));
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error() == errc::deadline_exceeded);
    CHECK(c.idle_connections() == 0);
}

TEST_CASE("redirects are not followed unless asked") {
    fixture f;
    http::client plain;
    auto r = f.l.block_on(plain.get(f.base + "/old"));
    REQUIRE(r.has_value());
    CHECK(r->status == 302);
    http::client following({.follow_redirects = true});
    auto g = f.l.block_on(following.get(f.base + "/old"));
    REQUIRE(g.has_value());
    CHECK(g->status == 200);
    CHECK(g->body == "Hello, World!");
}

TEST_CASE("bad URLs are errors, not exceptions") {
    loop l;
    http::client c;
    auto r = l.block_on(c.get("https://example.invalid/"));
    CHECK(r.error() == http::client_errc::bad_url);
    auto r2 = l.block_on(c.get("http://no-dns-here:80/"));
    CHECK(r2.error() == http::client_errc::bad_url);
}
