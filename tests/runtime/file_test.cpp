#include "context/with_cancel.hpp"
#include "runtime/file.hpp"
#include "runtime/loop.hpp"

#include <doctest/doctest.h>

#include <array>
#include <cerrno>
#include <cstdlib>
#include <fcntl.h>
#include <filesystem>
#include <string>
#include <string_view>
#include <sys/stat.h>
#include <unistd.h>

using namespace tether;

namespace {

// A directory of its own under the system's temporary directory, removed at the end.
struct temp_dir {
    std::string path;
    temp_dir() {
        std::string tmpl = (std::filesystem::temp_directory_path() / "tether-file-XXXXXX").string();
        REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
        path = tmpl;
    }
    ~temp_dir() { std::filesystem::remove_all(path); }
    std::string operator/(std::string_view name) const { return path + "/" + std::string(name); }
};

std::span<const std::byte> bytes(std::string_view s) {
    return std::as_bytes(std::span(s));
}

bool fd_is_open(int fd) {
    return ::fcntl(fd, F_GETFD) != -1;
}

task<std::string> round_trip(std::string path) {
    result<file> f = co_await file::open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    REQUIRE(f.has_value());
    CHECK(f->is_open());
    CHECK((::fcntl(f->fd(), F_GETFD) & FD_CLOEXEC) != 0);
    auto w1 = co_await f->write_at(bytes("hello, "), 0);
    auto w2 = co_await f->write_at(bytes("world"), 7);
    CHECK(w1.value() == 7);
    CHECK(w2.value() == 5);
    CHECK((co_await f->fsync()).has_value());
    CHECK((co_await f->fdatasync()).has_value());
    std::array<char, 32> buf{};
    auto n = co_await f->read_at(std::as_writable_bytes(std::span(buf)), 0);
    auto eof = co_await f->read_at(std::as_writable_bytes(std::span(buf)), 100);
    CHECK(eof.value() == 0);
    result<void> closed = co_await f->close();
    CHECK(closed.has_value());
    CHECK_FALSE(f->is_open());
    co_return std::string(buf.data(), n.value());
}

} // namespace

TEST_CASE("a file written at offsets reads back what was written") {
    loop l;
    temp_dir dir;
    CHECK(l.block_on(round_trip(dir / "data")) == "hello, world");
    struct ::stat st{};
    REQUIRE(::stat((dir / "data").c_str(), &st) == 0);
    CHECK(st.st_size == 12);
    CHECK((st.st_mode & 0777) == 0600);
}

TEST_CASE("opening a missing file fails with ENOENT") {
    loop l;
    temp_dir dir;
    result<file> f = l.block_on([](std::string p) -> task<result<file>> {
        co_return co_await file::open(std::move(p), O_RDONLY);
    }(dir / "missing"));
    REQUIRE_FALSE(f.has_value());
    CHECK(f.error() == std::error_code(ENOENT, std::system_category()));
}

TEST_CASE("an open under a canceled context submits nothing") {
    loop l;
    temp_dir dir;
    auto [ctx, cancel] = with_cancel(l.background());
    cancel();
    result<file> f = l.block_on(ctx, [](std::string p) -> task<result<file>> {
        co_return co_await file::open(std::move(p), O_RDWR | O_CREAT);
    }(dir / "never"));
    CHECK(f.error() == errc::canceled);
    CHECK_FALSE(std::filesystem::exists(dir / "never"));
}

TEST_CASE("close completes under a canceled context") {
    loop l;
    int fds[2];
    REQUIRE(::pipe2(fds, O_CLOEXEC) == 0);
    ::close(fds[1]);
    auto [ctx, cancel] = with_cancel(l.background());
    cancel();
    result<void> r = l.block_on(ctx, [](int fd) -> task<result<void>> {
        file f = file::adopt(fd);
        co_return co_await f.close();
    }(fds[0]));
    CHECK(r.has_value());
    CHECK_FALSE(fd_is_open(fds[0]));
}

TEST_CASE("adopt takes ownership; the destructor and a dropped close release the descriptor") {
    int fds[2];
    REQUIRE(::pipe2(fds, O_CLOEXEC) == 0);
    SUBCASE("destructor") {
        {
            file f = file::adopt(fds[0]);
        }
        CHECK_FALSE(fd_is_open(fds[0]));
    }
    SUBCASE("close() not awaited") {
        file f = file::adopt(fds[0]);
        {
            auto req = f.close();
        }
        CHECK_FALSE(f.is_open());
        CHECK_FALSE(fd_is_open(fds[0]));
    }
    SUBCASE("release") {
        file f = file::adopt(fds[0]);
        CHECK(f.release() == fds[0]);
        CHECK_FALSE(f.is_open());
        CHECK(fd_is_open(fds[0]));
        ::close(fds[0]);
    }
    SUBCASE("move assignment closes the old descriptor") {
        file f = file::adopt(fds[0]);
        f = file::adopt(-1);
        CHECK_FALSE(fd_is_open(fds[0]));
    }
    ::close(fds[1]);
}

TEST_CASE("closing a file that is not open fails with EBADF") {
    loop l;
    result<void> r = l.block_on([]() -> task<result<void>> {
        file f;
        co_return co_await f.close();
    }());
    CHECK(r.error() == std::error_code(EBADF, std::system_category()));
}
