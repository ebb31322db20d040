#include "runtime/io.hpp"
#include "runtime/loop.hpp"
#include "tests/support/pipe_fds.hpp"

#include <doctest/doctest.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <poll.h>
#include <string_view>
#include <unistd.h>

using namespace tether;

using tether::test::pipe_fds;

namespace {

std::span<const std::byte> bytes(std::string_view s) {
    return std::as_bytes(std::span(s));
}

std::string_view text(std::span<const std::byte> b) {
    return {reinterpret_cast<const char*>(b.data()), b.size()};
}

task<std::string> write_then_read(int w, int r, std::string_view msg) {
    result<std::size_t> n = co_await tether::write(w, bytes(msg));
    REQUIRE(n.has_value());
    CHECK(*n == msg.size());
    std::array<std::byte, 64> buf{};
    result<std::size_t> got = co_await tether::read(r, buf);
    REQUIRE(got.has_value());
    co_return std::string(text(std::span(buf).first(*got)));
}

} // namespace

TEST_CASE("write then read through a pipe returns the bytes") {
    loop l;
    pipe_fds p;
    CHECK(l.block_on(write_then_read(p.w, p.r, "hello")) == "hello");
}

TEST_CASE("a read at end of file returns zero") {
    loop l;
    pipe_fds p;
    ::close(std::exchange(p.w, -1));
    auto n = l.block_on([](int fd) -> task<result<std::size_t>> {
        std::array<std::byte, 8> buf{};
        co_return co_await tether::read(fd, buf);
    }(p.r));
    REQUIRE(n.has_value());
    CHECK(*n == 0);
}

TEST_CASE("writev and readv move several buffers in order") {
    loop l;
    pipe_fds p;
    auto got = l.block_on([](int r, int w) -> task<std::string> {
        std::string_view a = "abc";
        std::string_view b = "defg";
        std::array<::iovec, 2> out{
            {{const_cast<char*>(a.data()), a.size()}, {const_cast<char*>(b.data()), b.size()}}};
        auto n = co_await tether::writev(w, out);
        CHECK(n.value() == 7);
        std::array<char, 2> x{};
        std::array<char, 5> y{};
        std::array<::iovec, 2> in{{{x.data(), x.size()}, {y.data(), y.size()}}};
        auto m = co_await tether::readv(r, in);
        CHECK(m.value() == 7);
        co_return std::string(x.data(), x.size()) + std::string(y.data(), y.size());
    }(p.r, p.w));
    CHECK(got == "abcdefg");
}

TEST_CASE("poll returns the events once the descriptor is ready") {
    loop l;
    pipe_fds p;
    SUBCASE("already readable") {
        REQUIRE(::write(p.w, "x", 1) == 1);
        auto ev = l.block_on([](int fd) -> task<result<unsigned>> {
            co_return co_await tether::poll(fd, POLLIN);
        }(p.r));
        CHECK((ev.value() & POLLIN) != 0);
    }
    SUBCASE("writable end") {
        auto ev = l.block_on([](int fd) -> task<result<unsigned>> {
            co_return co_await tether::poll(fd, POLLOUT);
        }(p.w));
        CHECK((ev.value() & POLLOUT) != 0);
    }
}

TEST_CASE("an error from the kernel is a system_category code") {
    loop l;
    auto r = l.block_on([]() -> task<result<std::size_t>> {
        std::array<std::byte, 8> buf{};
        co_return co_await tether::read(-1, buf);
    }());
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error() == std::error_code(EBADF, std::system_category()));
}

TEST_CASE("an I/O request can be moved before it is awaited") {
    loop l;
    pipe_fds p;
    REQUIRE(::write(p.w, "moved", 5) == 5);
    auto got = l.block_on([](int fd) -> task<std::string> {
        std::array<std::byte, 16> buf{};
        auto req = tether::read(fd, buf);
        auto moved = std::move(req);
        auto n = co_await std::move(moved);
        co_return std::string(text(std::span(buf).first(n.value())));
    }(p.r));
    CHECK(got == "moved");
}
