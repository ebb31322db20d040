#pragma once
// Test helpers for the HTTP server suites: one raw exchange with a live server.
//   read_to_close(at, raw)      connects, sends raw bytes, reads until the server closes
//   roundtrip(l, srv, raw)      serves with a listening server for one read_to_close
//   roundtrip(h, raw)           the same with a fresh loop and server for handler h

#include "net/http/server.hpp"
#include "net/tcp_stream.hpp"
#include "runtime/loop.hpp"
#include "runtime/spawn.hpp"

#include <doctest/doctest.h>

#include <span>
#include <string>
#include <string_view>
#include <utility>

namespace tether::test {

/// Connects to `at`, sends `raw` and returns every byte read until the server closes the
/// connection (so `raw` should end with a request that asks to close, or an error).
inline task<std::string> read_to_close(net::address at, std::string raw) {
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

/// Serves with `srv` (listening already) on `l` while `read_to_close` sends `raw`, then shuts
/// the server down; returns the reply.
inline std::string roundtrip(loop& l, http::server& srv, std::string raw) {
    net::address at = *srv.local_addr();
    return l.block_on([](http::server* s, net::address a, std::string r) -> task<std::string> {
        auto serving = co_await spawn(s->serve());
        std::string got = co_await read_to_close(a, std::move(r));
        (void)co_await s->shutdown();
        (void)co_await serving;
        co_return got;
    }(&srv, at, std::move(raw)));
}

/// `roundtrip` with a fresh loop and a server for `h` on an IPv4 loopback port the kernel picks.
inline std::string roundtrip(http::handler h, std::string raw) {
    loop l;
    http::server srv(std::move(h));
    REQUIRE(srv.listen(net::address::ipv4_loopback(0)).has_value());
    return roundtrip(l, srv, std::move(raw));
}

} // namespace tether::test
