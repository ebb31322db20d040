#include "context/manual_clock.hpp"
#include "context/with_cancel.hpp"
#include "net/udp_socket.hpp"
#include "runtime/loop.hpp"
#include "runtime/spawn.hpp"

#include <doctest/doctest.h>

#include <array>
#include <string>
#include <string_view>

using namespace tether;
using namespace tether::net;
using namespace std::chrono_literals;

namespace {

udp_socket bind_loopback() {
    result<udp_socket> s = udp_socket::bind(address::ipv4_loopback());
    REQUIRE(s);
    return std::move(*s);
}

std::span<const std::byte> bytes_of(std::string_view s) {
    return std::as_bytes(std::span(s.data(), s.size()));
}

std::string text(std::span<const std::byte> b) {
    return std::string(reinterpret_cast<const char*>(b.data()), b.size());
}

task<result<datagram>> recv_from(const udp_socket* s, std::span<std::byte> buf) {
    co_return co_await s->recv_from(buf);
}

task<result<std::size_t>> send_to(const udp_socket* s, std::string_view msg, address to) {
    co_return co_await s->send_to(bytes_of(msg), to);
}

} // namespace

TEST_CASE("send_to and recv_from carry datagrams whole and name the sender") {
    loop l;
    udp_socket a = bind_loopback();
    udp_socket b = bind_loopback();
    address at_b = *b.local_addr();
    for (std::string_view msg : {"one", "two, longer", ""}) {
        result<std::size_t> sent = l.block_on(send_to(&a, msg, at_b));
        REQUIRE(sent);
        CHECK(*sent == msg.size());
    }
    std::array<std::byte, 64> buf;
    for (std::string_view msg : {"one", "two, longer", ""}) {
        result<datagram> d = l.block_on(recv_from(&b, buf));
        REQUIRE(d);
        CHECK(text(std::span(buf.data(), d->size)) == msg);
        CHECK(d->from == *a.local_addr());
        CHECK_FALSE(d->truncated);
    }
}

TEST_CASE("a datagram longer than the buffer arrives cut and says so") {
    loop l;
    udp_socket a = bind_loopback();
    udp_socket b = bind_loopback();
    REQUIRE(l.block_on(send_to(&a, "0123456789", *b.local_addr())));
    std::array<std::byte, 4> small;
    result<datagram> d = l.block_on(recv_from(&b, small));
    REQUIRE(d);
    CHECK(d->size == 4);
    CHECK(d->truncated);
    CHECK(text(small) == "0123");
}

TEST_CASE("a connected UDP socket sends and receives without addresses") {
    loop l;
    udp_socket a = bind_loopback();
    result<udp_socket> b = udp_socket::open(address_family::ipv4);
    REQUIRE(b);
    REQUIRE(b->connect(*a.local_addr()));
    CHECK(*b->peer_addr() == *a.local_addr());
    struct d {
        static task<std::string> ping(const udp_socket* a, const udp_socket* b) {
            REQUIRE(co_await b->send(bytes_of("ping")));
            std::array<std::byte, 16> buf;
            result<datagram> got = co_await a->recv_from(buf);
            REQUIRE(got);
            REQUIRE(co_await a->send_to(bytes_of("pong"), got->from));
            result<std::size_t> n = co_await b->recv(buf);
            REQUIRE(n);
            co_return text(std::span(buf.data(), *n));
        }
    };
    CHECK(l.block_on(d::ping(&a, &*b)) == "pong");
}

TEST_CASE("a connected UDP socket reports an unreachable port as connection_refused") {
    loop l;
    address gone;
    {
        udp_socket tmp = bind_loopback();
        gone = *tmp.local_addr();
    }
    udp_socket a = bind_loopback();
    REQUIRE(a.connect(gone));
    struct d {
        static task<std::error_code> send_then_recv(const udp_socket* s) {
            std::array<std::byte, 8> buf;
            for (int i = 0; i < 10; ++i) {
                result<std::size_t> sent = co_await s->send(bytes_of("x"));
                if (!sent) {
                    co_return sent.error();
                }
                // The ICMP error arrives with the send; the receive reports it.
                result<std::size_t> r =
                    co_await tether::with_timeout(std::chrono::milliseconds(500), s->recv(buf));
                if (!r && r.error() != errc::deadline_exceeded) {
                    co_return r.error();
                }
            }
            co_return std::error_code{};
        }
    };
    CHECK(l.block_on(d::send_then_recv(&a)) == std::errc::connection_refused);
}

TEST_CASE("a pending recv_from ends at the context's deadline and takes nothing") {
    manual_clock clk;
    loop l({.clock = &clk});
    udp_socket a = bind_loopback();
    udp_socket b = bind_loopback();
    std::array<std::byte, 16> buf;
    struct d {
        static task<result<datagram>> briefly(const udp_socket* s, std::span<std::byte> b) {
            co_return co_await tether::with_timeout(20ms, s->recv_from(b));
        }
        static task<join_handle<result<datagram>>> start(const udp_socket* s,
                                                         std::span<std::byte> b) {
            co_return co_await spawn(briefly(s, b));
        }
        static task<result<datagram>> join(join_handle<result<datagram>> h) {
            auto r = co_await h;
            REQUIRE(r);
            co_return *r;
        }
    };
    auto h = l.block_on(d::start(&b, buf));
    l.run_until_idle();
    clk.advance(19ms);
    l.run_until_idle();
    CHECK_FALSE(h.done());
    clk.advance(1ms);
    CHECK(l.block_on(d::join(std::move(h))).error() == errc::deadline_exceeded);

    REQUIRE(l.block_on(send_to(&a, "later", *b.local_addr())));
    result<datagram> got = l.block_on(recv_from(&b, buf));
    REQUIRE(got);
    CHECK(text(std::span(buf.data(), got->size)) == "later");
}

TEST_CASE("under a context already canceled, send_to sends nothing") {
    loop l;
    udp_socket a = bind_loopback();
    udp_socket b = bind_loopback();
    auto [ctx, cancel] = with_cancel(l.background());
    cancel();
    CHECK(l.block_on(ctx, send_to(&a, "no", *b.local_addr())).error() == errc::canceled);
    REQUIRE(l.block_on(send_to(&a, "yes", *b.local_addr())));
    std::array<std::byte, 8> buf;
    result<datagram> got = l.block_on(recv_from(&b, buf));
    REQUIRE(got);
    CHECK(text(std::span(buf.data(), got->size)) == "yes");
}

TEST_CASE("UDP over IPv6 loopback, when the machine has it") {
    loop l;
    result<udp_socket> a = udp_socket::bind(address::ipv6_loopback());
    if (!a) {
        MESSAGE("no IPv6 loopback: " << a.error().message());
        return;
    }
    result<udp_socket> b = udp_socket::bind(address::ipv6_loopback());
    REQUIRE(b);
    REQUIRE(l.block_on(send_to(&*a, "six", *b->local_addr())));
    std::array<std::byte, 8> buf;
    result<datagram> got = l.block_on(recv_from(&*b, buf));
    REQUIRE(got);
    CHECK(got->from == *a->local_addr());
    CHECK(got->from.to_string().starts_with("[::1]:"));
}

TEST_CASE("udp_socket binds only IP addresses") {
    CHECK(udp_socket::bind(*address::local("/x")).error() == std::errc::invalid_argument);
    CHECK(udp_socket::open(address_family::local).error() == std::errc::invalid_argument);
}
