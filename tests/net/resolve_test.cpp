#include "context/with_cancel.hpp"
#include "net/resolve.hpp"
#include "net/tcp_listener.hpp"
#include "net/tcp_stream.hpp"
#include "runtime/loop.hpp"

#include <doctest/doctest.h>

#include <netdb.h>
#include <string>
#include <vector>

using namespace tether;
using namespace tether::net;

namespace {

task<result<std::vector<address>>> lookup(std::string host, std::uint16_t port,
                                          address_family f = address_family::unspecified) {
    co_return co_await resolve(std::move(host), port, f);
}

} // namespace

TEST_CASE("an IP literal resolves to itself without a lookup") {
    loop l;
    result<std::vector<address>> v4 = l.block_on(lookup("127.0.0.1", 80));
    REQUIRE(v4);
    REQUIRE(v4->size() == 1);
    CHECK(v4->front() == address::ipv4_loopback(80));
    for (const char* six : {"::1", "[::1]"}) {
        CAPTURE(six);
        result<std::vector<address>> v6 = l.block_on(lookup(six, 443));
        REQUIRE(v6);
        CHECK(v6->front() == address::ipv6_loopback(443));
    }
}

TEST_CASE("localhost resolves through the hosts file to loopback addresses") {
    loop l;
    result<std::vector<address>> r = l.block_on(lookup("localhost", 8080));
    REQUIRE(r);
    REQUIRE_FALSE(r->empty());
    for (const address& a : *r) {
        CAPTURE(a.to_string());
        CHECK(a.is_loopback());
        CHECK(a.port() == 8080);
    }
    result<std::vector<address>> v4 = l.block_on(lookup("localhost", 1, address_family::ipv4));
    REQUIRE(v4);
    for (const address& a : *v4) {
        CHECK(a.family() == address_family::ipv4);
    }
}

TEST_CASE("a literal of the other family, an empty host, a local family are refused") {
    loop l;
    result<std::vector<address>> r = l.block_on(lookup("127.0.0.1", 1, address_family::ipv6));
    CHECK(r.error() == std::error_code(EAI_ADDRFAMILY, resolve_category()));
    CHECK_FALSE(r.error().message().empty());
    CHECK(l.block_on(lookup("", 1)).error() == std::errc::invalid_argument);
    CHECK(l.block_on(lookup("localhost", 1, address_family::local)).error() ==
          std::errc::invalid_argument);
}

TEST_CASE("under a context already canceled, nothing is looked up") {
    loop l;
    auto [ctx, cancel] = with_cancel(l.background());
    cancel();
    CHECK(l.block_on(ctx, lookup("localhost", 1)).error() == errc::canceled);
}

TEST_CASE("resolve_category names getaddrinfo's errors") {
    std::error_code e(EAI_NONAME, resolve_category());
    CHECK(std::string(e.category().name()) == "tether.resolve");
    CHECK(e.message() == ::gai_strerror(EAI_NONAME));
}

TEST_CASE("connect by name tries the addresses until one answers") {
    loop l;
    result<tcp_listener> lis = tcp_listener::bind(address::ipv4_loopback());
    REQUIRE(lis);
    std::uint16_t port = lis->local_addr()->port();
    struct d {
        static task<address> run(const tcp_listener* lis, std::uint16_t port) {
            result<tcp_stream> c = co_await tcp_stream::connect("localhost", port);
            REQUIRE(c);
            result<tcp_stream> s = co_await lis->accept();
            REQUIRE(s);
            co_return *c->peer_addr();
        }
    };
    CHECK(l.block_on(d::run(&*lis, port)) == *lis->local_addr());
}
