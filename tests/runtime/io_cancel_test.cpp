// Cancellation of io_uring operations in the kernel: reads on pipes that never get data are
// canceled with IORING_OP_ASYNC_CANCEL and resume only when their own CQE arrives.
#include "context/manual_clock.hpp"
#include "context/with_cancel.hpp"
#include "context/with_deadline.hpp"
#include "runtime/detail/loop_impl.hpp"
#include "runtime/io.hpp"
#include "runtime/loop.hpp"
#include "runtime/spawn.hpp"
#include "tests/support/pipe_fds.hpp"
#include "tests/support/test_util.hpp"

#include <doctest/doctest.h>

#include <array>
#include <atomic>
#include <fcntl.h>
#include <latch>
#include <optional>
#include <sys/ioctl.h>
#include <thread>
#include <unistd.h>
#include <vector>

using namespace tether;
using namespace std::chrono_literals;

using tether::test::pipe_fds;

namespace {

// Bytes waiting in the pipe: a canceled read must have left them there.
int available(int fd) {
    int n = 0;
    REQUIRE(::ioctl(fd, FIONREAD, &n) == 0);
    return n;
}

std::uint64_t kernel_cancels(loop& l) {
    return l.impl().submitted_cancels;
}

// Spawns `t` under `ctx` on `l` and runs the loop until nothing is ready, so that its I/O is
// in the kernel.
template <class T>
join_handle<T> start(loop& l, const context& ctx, task<T> t) {
    std::optional<join_handle<T>> h;
    l.post([&] { h.emplace(spawn(ctx, std::move(t))); });
    l.run_until_idle();
    REQUIRE(h.has_value());
    return std::move(*h);
}

// Drives the loop until the spawned task has finished; returns its value.
template <class T>
T join(loop& l, join_handle<T> h) {
    result<T> r = l.block_on(
        [](join_handle<T> jh) -> task<result<T>> { co_return co_await jh; }(std::move(h)));
    REQUIRE(r.has_value());
    return std::move(*r);
}

task<result<std::size_t>> read_into(int fd, std::span<std::byte> buf) {
    co_return co_await tether::read(fd, buf);
}

} // namespace

TEST_CASE("a read on an empty pipe is canceled in the kernel when its context is canceled") {
    loop l;
    pipe_fds p;
    std::array<std::byte, 16> buf{};
    auto [ctx, cancel] = with_cancel(l.background());
    auto h = start(l, ctx, read_into(p.r, buf));
    REQUIRE_FALSE(h.done());
    CHECK(kernel_cancels(l) == 0);
    SUBCASE("from outside the loop") {
        cancel();
    }
    SUBCASE("from the loop's thread") {
        l.post([&] { cancel(); });
    }
    result<std::size_t> r = join(l, std::move(h));
    CHECK(r.error() == errc::canceled);
    CHECK(kernel_cancels(l) == 1);
    // The canceled read consumed nothing: the pipe still carries what is written next.
    REQUIRE(::write(p.w, "z", 1) == 1);
    CHECK(available(p.r) == 1);
}

TEST_CASE("a read under a deadline is canceled in the kernel at the deadline") {
    manual_clock clk;
    loop l({.clock = &clk});
    pipe_fds p;
    std::array<std::byte, 16> buf{};
    auto [ctx, cancel] = with_timeout(l.background(), 100ms);
    auto h = start(l, ctx, read_into(p.r, buf));
    SUBCASE("still pending 1 ms before") {
        clk.advance(99ms);
        l.run_until_idle();
        CHECK_FALSE(h.done());
        CHECK(kernel_cancels(l) == 0);
        cancel();
        CHECK(join(l, std::move(h)).error() == errc::canceled);
    }
    SUBCASE("canceled with deadline_exceeded at the deadline") {
        clk.advance(100ms);
        result<std::size_t> r = join(l, std::move(h));
        CHECK(r.error() == errc::deadline_exceeded);
        CHECK(kernel_cancels(l) == 1);
    }
}

TEST_CASE("a read under a context that is already canceled submits nothing") {
    loop l;
    pipe_fds p;
    std::array<std::byte, 16> buf{};
    auto [ctx, cancel] = with_cancel(l.background());
    cancel();
    result<std::size_t> r = l.block_on(ctx, read_into(p.r, buf));
    CHECK(r.error() == errc::canceled);
    CHECK(kernel_cancels(l) == 0);
    // Had a read been submitted, it would take this byte.
    REQUIRE(::write(p.w, "z", 1) == 1);
    l.run_until_idle();
    CHECK(available(p.r) == 1);
}

TEST_CASE("with_timeout cancels the I/O it wraps in the kernel") {
    manual_clock clk;
    loop l({.clock = &clk});
    pipe_fds p;
    auto h = start(l, l.background(), [](int fd) -> task<result<std::size_t>> {
        std::array<std::byte, 16> buf{};
        co_return co_await with_timeout(100ms, tether::read(fd, buf));
    }(p.r));
    clk.advance(99ms);
    l.run_until_idle();
    CHECK_FALSE(h.done());
    CHECK(kernel_cancels(l) == 0);
    clk.advance(1ms);
    result<std::size_t> r = join(l, std::move(h));
    CHECK(r.error() == errc::deadline_exceeded);
    CHECK(kernel_cancels(l) == 1);
}

TEST_CASE("a cancel racing the completion never loses the data") {
    loop l;
    pipe_fds p;
    int completed = 0;
    int canceled = 0;
    for (std::size_t i = 0; i < test::iterations(3000); ++i) {
        const auto sent = static_cast<char>('a' + i % 26);
        std::array<std::byte, 16> buf{};
        auto [ctx, cancel] = with_cancel(l.background());
        auto h = start(l, ctx, read_into(p.r, buf));
        std::thread other;
        switch (i % 5) {
        case 0: // both before the next turn: the cancel SQE follows the read's wakeup
            REQUIRE(::write(p.w, &sent, 1) == 1);
            cancel();
            break;
        case 1:
            cancel();
            REQUIRE(::write(p.w, &sent, 1) == 1);
            break;
        case 2: // both inside one turn, on the loop's thread
            l.post([&] {
                REQUIRE(::write(p.w, &sent, 1) == 1);
                cancel();
            });
            break;
        case 3: { // the write and the cancel on two other threads
            std::thread writer([&] { CHECK(::write(p.w, &sent, 1) == 1); });
            std::thread canceler([&] { cancel(); });
            writer.join();
            canceler.join();
            break;
        }
        default: // another thread writes, then cancels, while the loop runs
            other = std::thread([&] {
                CHECK(::write(p.w, &sent, 1) == 1);
                cancel();
            });
        }
        result<std::size_t> r = join(l, std::move(h));
        if (other.joinable()) {
            other.join();
        }
        if (r.has_value()) {
            // The read completed first: its byte is returned, and the cancel took nothing.
            REQUIRE(*r == 1);
            CHECK(static_cast<char>(buf[0]) == sent);
            CHECK(available(p.r) == 0);
            ++completed;
        } else {
            // Canceled: the byte is still in the pipe for the next reader.
            CHECK(r.error() == errc::canceled);
            REQUIRE(available(p.r) == 1);
            char got = 0;
            REQUIRE(::read(p.r, &got, 1) == 1);
            CHECK(got == sent);
            ++canceled;
        }
    }
    MESSAGE("completed: " << completed << ", canceled: " << canceled);
    CHECK(completed + canceled == static_cast<int>(test::iterations(3000)));
}

namespace {

task<result<std::size_t>> one_read(int fd, std::latch* armed) {
    std::array<std::byte, 8> buf{}; // lent to the kernel: lives in this frame
    armed->count_down();
    co_return co_await tether::read(fd, buf);
}

// Spawns `n` reads under `ctx` and waits for all of them (under the awaiting task's context,
// which is not canceled); returns how many were canceled.
task<int> read_many(context ctx, int fd, int n, std::latch* armed) {
    std::vector<join_handle<result<std::size_t>>> hs;
    hs.reserve(static_cast<std::size_t>(n));
    for (int i = 0; i < n; ++i) {
        hs.push_back(spawn(ctx, one_read(fd, armed)));
    }
    int canceled = 0;
    for (auto& h : hs) {
        result<result<std::size_t>> r = co_await h;
        if (r.has_value() && r->error() == errc::canceled) {
            ++canceled;
        }
    }
    co_return canceled;
}

} // namespace

TEST_CASE("a cancel from another thread resumes thousands of pending reads") {
    constexpr int n = 3000;
    loop l;
    pipe_fds p;
    for (std::size_t round = 0; round < test::iterations(10); ++round) {
        auto [ctx, cancel] = with_cancel(l.background());
        std::latch armed(n);
        std::uint64_t before = kernel_cancels(l);
        std::thread canceler([&] {
            armed.wait();
            cancel();
        });
        int canceled = l.block_on(read_many(ctx, p.r, n, &armed));
        canceler.join();
        CHECK(canceled == n);
        // Every read that reached the ring was canceled there; one canceled before it was
        // armed submitted nothing.
        CHECK(kernel_cancels(l) - before <= static_cast<std::uint64_t>(n));
        CHECK(available(p.r) == 0);
    }
}
