#include "net/address.hpp"

#include <doctest/doctest.h>
#include <fmt/format.h>

#include <string>
#include <system_error>

using namespace tether;
using namespace tether::net;

TEST_CASE("an IPv4 address parses and formats the same text") {
    result<address> a = address::parse("127.0.0.1:8080");
    REQUIRE(a);
    CHECK(a->family() == address_family::ipv4);
    CHECK(a->port() == 8080);
    CHECK(a->is_loopback());
    CHECK(a->to_string() == "127.0.0.1:8080");
    CHECK(fmt::format("{}", *a) == "127.0.0.1:8080");
    CHECK(fmt::format("[{:>16}]", *a) == "[  127.0.0.1:8080]");
    CHECK(address::parse("255.255.255.255:65535")->to_string() == "255.255.255.255:65535");
    CHECK(fmt::format("{}", *address::parse("0.0.0.0:0")) == "0.0.0.0:0");
    CHECK(fmt::format("{}", *address::parse("[2001:db8::ff]:1")) == "[2001:db8::ff]:1");
    CHECK(*a == address::ipv4_loopback(8080));
    CHECK(a->size() == sizeof(sockaddr_in));
    CHECK(a->native_family() == AF_INET);
}

TEST_CASE("an IPv6 address parses in brackets, with or without a scope") {
    result<address> a = address::parse("[::1]:443");
    REQUIRE(a);
    CHECK(a->family() == address_family::ipv6);
    CHECK(a->port() == 443);
    CHECK(a->is_loopback());
    CHECK(a->to_string() == "[::1]:443");
    CHECK(*a == address::ipv6_loopback(443));

    result<address> scoped = address::parse("[fe80::1%7]:80");
    REQUIRE(scoped);
    CHECK(scoped->to_string() == "[fe80::1%7]:80");
    CHECK_FALSE(scoped->is_loopback());

    result<address> lo = address::parse("[fe80::1%lo]:80");
    REQUIRE(lo);
    CHECK(lo->to_string().starts_with("[fe80::1%"));

    result<address> mapped = address::parse("[::ffff:127.0.0.1]:1");
    REQUIRE(mapped);
    CHECK(mapped->is_loopback());
}

TEST_CASE("Unix-domain paths and abstract names parse and format") {
    result<address> p = address::parse("/run/app.sock");
    REQUIRE(p);
    CHECK(p->family() == address_family::local);
    CHECK(p->path() == "/run/app.sock");
    CHECK(p->to_string() == "unix:/run/app.sock");
    CHECK(p->port() == 0);
    CHECK(*address::parse("unix:/run/app.sock") == *p);

    result<address> rel = address::parse("unix:app.sock");
    REQUIRE(rel);
    CHECK(rel->path() == "app.sock");
    CHECK(*address::parse(rel->to_string()) == *rel);

    result<address> abs = address::parse("@tether-test");
    REQUIRE(abs);
    CHECK(abs->path() == "@tether-test");
    CHECK(abs->to_string() == "unix:@tether-test");
    // The abstract name is a NUL then the name, without a terminator.
    CHECK(abs->size() == offsetof(sockaddr_un, sun_path) + 12);

    result<address> unnamed = address::local("");
    REQUIRE(unnamed);
    CHECK(unnamed->to_string() == "unix:");
}

TEST_CASE("a path too long for sun_path is refused") {
    std::string longest(107, 'x');
    CHECK(address::local("/" + longest.substr(1)));
    CHECK(address::local("/" + longest).error() == std::errc::filename_too_long);
    CHECK(address::local("@" + longest)); // an abstract name has no terminator
}

TEST_CASE("malformed addresses are invalid_argument, not a crash") {
    for (const char* bad :
         {"", "127.0.0.1", "127.0.0.1:", "127.0.0.1:65536", "127.0.0.1:-1", "127.0.0.1:8x",
          "localhost:80", "1.2.3:80", "01.2.3.4:80", "::1:80", "[::1]", "[::1]80",
          "[::1]:", "[::1%]:80", "[zz::1]:80", "[::1%nosuchif0]:80", "[::1:80"}) {
        CAPTURE(bad);
        CHECK(address::parse(bad).error() == std::errc::invalid_argument);
    }
}

TEST_CASE("with_port replaces the port of IP addresses only") {
    address a = address::ipv4({10, 0, 0, 1}, 1);
    CHECK(a.with_port(2).to_string() == "10.0.0.1:2");
    CHECK(address::ipv6_any(5).with_port(6).to_string() == "[::]:6");
    address u = *address::local("/x");
    CHECK(u.with_port(9) == u);
}

TEST_CASE("from_sockaddr reads what the kernel writes and checks its length") {
    address a = address::ipv4_loopback(99);
    result<address> b = address::from_sockaddr(a.data(), a.size());
    REQUIRE(b);
    CHECK(*b == a);
    CHECK(address::from_sockaddr(a.data(), 4).error() == std::errc::invalid_argument);
    sockaddr bogus{};
    bogus.sa_family = AF_APPLETALK;
    CHECK(address::from_sockaddr(&bogus, sizeof bogus).error() ==
          std::errc::address_family_not_supported);
}

TEST_CASE("assign_ip takes an IPv4 or IPv6 sockaddr in place, as from_sockaddr reads it") {
    const address v6 = address::ipv6_loopback(8080);
    const address v4 = address::ipv4({10, 1, 2, 3}, 443);
    address a = v6;
    REQUIRE(a.assign_ip(v4.data(), v4.size()));
    CHECK(a == v4); // the IPv6 bytes past an IPv4 address's length don't count
    CHECK(a == *address::from_sockaddr(v4.data(), v4.size()));
    CHECK(fmt::format("{}", a) == "10.1.2.3:443");
    REQUIRE(a.assign_ip(v6.data(), v6.size()));
    CHECK(a == v6);
    CHECK(a.port() == 8080);
    // Another family, or a length short of the family's: false, the address unchanged.
    const address u = *address::local("/tmp/sock");
    CHECK_FALSE(a.assign_ip(u.data(), u.size()));
    CHECK_FALSE(a.assign_ip(v4.data(), 4));
    CHECK(a == v6);
}

TEST_CASE("a default address is unspecified and formats as empty") {
    address a;
    CHECK(a.family() == address_family::unspecified);
    CHECK(a.to_string().empty());
    CHECK_FALSE(a.is_ip());
    CHECK(a == address{});
    CHECK_FALSE(a == address::ipv4_any());
}
