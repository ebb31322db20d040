#include "net/buffered_reader.hpp"
#include "net/unix_listener.hpp"
#include "net/unix_stream.hpp"
#include "runtime/loop.hpp"
#include "runtime/spawn.hpp"

#include <doctest/doctest.h>

#include <array>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <sys/stat.h>
#include <unistd.h>

using namespace tether;
using namespace tether::net;

namespace {

// A fresh directory for socket files, removed at the end.
struct temp_dir {
    std::string path;
    temp_dir() {
        std::string tmpl = (std::filesystem::temp_directory_path() / "tether-net-XXXXXX").string();
        REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
        path = tmpl;
    }
    ~temp_dir() { std::filesystem::remove_all(path); }
    address at(const char* name) const { return *address::local(path + "/" + name); }
};

std::string text(std::span<const std::byte> b) {
    return std::string(reinterpret_cast<const char*>(b.data()), b.size());
}

task<std::string> echo_once(const unix_listener* lis, address to, std::string msg) {
    result<unix_stream> c = co_await unix_stream::connect(to);
    REQUIRE(c);
    result<unix_stream> s = co_await lis->accept();
    REQUIRE(s);
    REQUIRE(co_await c->write_all(msg));
    std::string got(msg.size(), '\0');
    REQUIRE(co_await s->read_exact(std::as_writable_bytes(std::span(got))));
    REQUIRE(co_await s->write_all(got));
    std::string back(msg.size(), '\0');
    REQUIRE(co_await c->read_exact(std::as_writable_bytes(std::span(back))));
    co_return back;
}

task<result<unix_stream>> connect(address to) {
    co_return co_await unix_stream::connect(to);
}

} // namespace

TEST_CASE("a Unix-domain listener at a path echoes, and removes its file when closed") {
    loop l;
    temp_dir dir;
    address at = dir.at("echo.sock");
    result<unix_listener> lis = unix_listener::bind(at);
    REQUIRE(lis);
    CHECK(*lis->local_addr() == at);
    CHECK(std::filesystem::exists(at.path()));
    CHECK(l.block_on(echo_once(&*lis, at, "over a path")) == "over a path");
    lis->close();
    l.run_until_idle();
    CHECK_FALSE(std::filesystem::exists(at.path()));
}

TEST_CASE("a Unix-domain listener in the abstract namespace echoes") {
    loop l;
    address at = *address::local("@tether-test-" + std::to_string(::getpid()));
    result<unix_listener> lis = unix_listener::bind(at);
    REQUIRE(lis);
    CHECK(l.block_on(echo_once(&*lis, at, "abstract")) == "abstract");
}

TEST_CASE("binding an existing path is address_in_use; connecting nowhere fails plainly") {
    loop l;
    temp_dir dir;
    address at = dir.at("taken.sock");
    result<unix_listener> first = unix_listener::bind(at);
    REQUIRE(first);
    CHECK(unix_listener::bind(at).error() == std::errc::address_in_use);
    CHECK(l.block_on(connect(dir.at("missing.sock"))).error() ==
          std::errc::no_such_file_or_directory);
    CHECK(l.block_on(connect(*address::parse("127.0.0.1:1"))).error() ==
          std::errc::invalid_argument);
    CHECK(unix_listener::bind(*address::local("")).error() == std::errc::invalid_argument);
}

TEST_CASE("a socket file with no listener refuses connections") {
    loop l;
    temp_dir dir;
    address at = dir.at("stale.sock");
    int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    REQUIRE(::bind(fd, at.data(), at.size()) == 0); // bound, never listening
    CHECK(l.block_on(connect(at)).error() == std::errc::connection_refused);
    ::close(fd);
}

TEST_CASE("a stream pair carries bytes both ways, and a half-close reads as EOF") {
    loop l;
    auto p = unix_stream::pair();
    REQUIRE(p);
    auto& [a, b] = *p;
    struct d {
        static task<std::string> run(unix_stream* a, unix_stream* b) {
            REQUIRE(co_await a->write_all("hello\nworld\npartial"));
            REQUIRE(a->shutdown(shutdown_how::write));
            buffered_reader in(*b);
            std::string out;
            for (;;) {
                result<std::string_view> line = co_await in.read_line();
                if (!line) {
                    CHECK(line.error() == io_errc::eof);
                    break;
                }
                out += "[" + std::string(*line) + "]";
            }
            REQUIRE(co_await b->write_all("reply"));
            std::array<std::byte, 5> buf;
            REQUIRE(co_await a->read_exact(buf));
            co_return out + text(buf);
        }
    };
    CHECK(l.block_on(d::run(&a, &b)) == "[hello][world][partial]reply");
}
