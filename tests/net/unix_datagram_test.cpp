#include "net/unix_datagram.hpp"
#include "runtime/loop.hpp"

#include <doctest/doctest.h>

#include <array>
#include <cstdlib>
#include <filesystem>
#include <string>

using namespace tether;
using namespace tether::net;

namespace {

std::span<const std::byte> bytes_of(std::string_view s) {
    return std::as_bytes(std::span(s.data(), s.size()));
}

std::string text(std::span<const std::byte> b) {
    return std::string(reinterpret_cast<const char*>(b.data()), b.size());
}

} // namespace

TEST_CASE("Unix datagrams between bound sockets carry the sender's path") {
    loop l;
    std::string tmpl = (std::filesystem::temp_directory_path() / "tether-net-XXXXXX").string();
    REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
    address at_a = *address::local(tmpl + "/a.sock");
    address at_b = *address::local(tmpl + "/b.sock");
    {
        result<unix_datagram> a = unix_datagram::bind(at_a);
        result<unix_datagram> b = unix_datagram::bind(at_b);
        REQUIRE(a);
        REQUIRE(b);
        struct d {
            static task<std::string> run(const unix_datagram* a, const unix_datagram* b,
                                         address to) {
                REQUIRE(co_await a->send_to(bytes_of("first"), to));
                REQUIRE(co_await a->send_to(bytes_of("second"), to));
                std::array<std::byte, 32> buf;
                result<datagram> one = co_await b->recv_from(buf);
                REQUIRE(one);
                std::string out = text(std::span(buf.data(), one->size));
                CHECK(one->from == *a->local_addr());
                result<datagram> two = co_await b->recv_from(buf);
                REQUIRE(two);
                co_return out + "+" + text(std::span(buf.data(), two->size));
            }
        };
        CHECK(l.block_on(d::run(&*a, &*b, at_b)) == "first+second");
    }
    std::filesystem::remove_all(tmpl);
}

TEST_CASE("an unbound sender shows up as the unnamed address") {
    loop l;
    address at = *address::local("@tether-dgram-" + std::to_string(::getpid()));
    result<unix_datagram> server = unix_datagram::bind(at);
    result<unix_datagram> client = unix_datagram::open();
    REQUIRE(server);
    REQUIRE(client);
    struct d {
        static task<datagram> run(const unix_datagram* s, const unix_datagram* c, address to) {
            REQUIRE(co_await c->send_to(bytes_of("anon"), to));
            std::array<std::byte, 8> buf;
            result<datagram> got = co_await s->recv_from(buf);
            REQUIRE(got);
            co_return *got;
        }
    };
    datagram got = l.block_on(d::run(&*server, &*client, at));
    CHECK(got.size == 4);
    CHECK(got.from.family() == address_family::local);
    CHECK(got.from.path().empty());
}

TEST_CASE("a datagram pair keeps message boundaries") {
    loop l;
    auto p = unix_datagram::pair();
    REQUIRE(p);
    struct d {
        static task<std::string> run(const unix_datagram* a, const unix_datagram* b) {
            REQUIRE(co_await a->send(bytes_of("ab")));
            REQUIRE(co_await a->send(bytes_of("cde")));
            std::array<std::byte, 16> buf;
            result<std::size_t> one = co_await b->recv(buf);
            REQUIRE(one);
            std::string out = text(std::span(buf.data(), *one));
            result<std::size_t> two = co_await b->recv(buf);
            REQUIRE(two);
            co_return out + "|" + text(std::span(buf.data(), *two));
        }
    };
    CHECK(l.block_on(d::run(&p->first, &p->second)) == "ab|cde");
}
