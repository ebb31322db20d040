// Embedding: a foreign loop watches loop.fd() and calls poll() when it is readable.
// (examples/embed_epoll.cpp is the whole program; the 'embed_epoll' test runs it.)
#include "context/with_cancel.hpp"
#include "context/with_deadline.hpp"
#include "runtime/detail/loop_impl.hpp"
#include "runtime/io.hpp"
#include "runtime/loop.hpp"
#include "runtime/runtime.hpp"
#include "runtime/sleep.hpp"
#include "runtime/spawn.hpp"
#include "tests/support/pipe_fds.hpp"

#include <liburing.h>

#include <doctest/doctest.h>

#include <array>
#include <atomic>
#include <fcntl.h>
#include <optional>
#include <poll.h>
#include <thread>
#include <unistd.h>

using namespace tether;
using namespace std::chrono_literals;

using tether::test::pipe_fds;

namespace {

// Waits up to `limit` for `fd` to be readable. The limit only bounds a failing test: every
// wait here is for an event that is due.
bool wait_readable(int fd, std::chrono::milliseconds limit = 10s) {
    pollfd p{fd, POLLIN, 0};
    return ::poll(&p, 1, static_cast<int>(limit.count())) == 1;
}

bool readable(int fd) {
    return wait_readable(fd, 0ms);
}

// Polls as a foreign loop would until the fd is quiet: the readiness left by a turn that
// reaped completions is consumed by one more (empty) turn.
void settle(loop& l, int fd) {
    for (int i = 0; i < 100 && readable(fd); ++i) {
        l.poll();
    }
    REQUIRE_FALSE(readable(fd));
}

template <class T>
join_handle<T> start(loop& l, const context& ctx, task<T> t) {
    std::optional<join_handle<T>> h;
    l.post([&] { h.emplace(spawn(ctx, std::move(t))); });
    l.poll();
    REQUIRE(h.has_value());
    return std::move(*h);
}

task<result<std::size_t>> read_one(int fd) {
    std::array<std::byte, 8> buf{};
    co_return co_await tether::read(fd, buf);
}

task<result<void>> nap(duration d) {
    co_return co_await sleep_for(d);
}

loop::options ring_options(bool defer) {
    loop::options o;
    o.defer_taskrun = defer;
    return o;
}

} // namespace

TEST_CASE("loop.fd() becomes readable when a completion is pending") {
    bool defer = true;
    SUBCASE("SINGLE_ISSUER | DEFER_TASKRUN") {
        defer = true;
    }
    SUBCASE("COOP_TASKRUN") {
        defer = false;
    }
    loop l(ring_options(defer));
    if (defer) {
        MESSAGE("DEFER_TASKRUN: " << ((l.ring_flags() & IORING_SETUP_DEFER_TASKRUN) != 0));
    }
    int fd = l.fd();
    CHECK(fd == l.fd());
    CHECK(readable(fd)); // the first turn is owed: it submits the loop's wake read
    pipe_fds p;
    auto h = start(l, l.background(), read_one(p.r));
    settle(l, fd);
    CHECK_FALSE(h.done());
    CHECK_FALSE(l.poll());

    REQUIRE(::write(p.w, "x", 1) == 1);
    // The read's completion is queued for the ring's thread: only the eventfd tells.
    REQUIRE(wait_readable(fd));
    CHECK(l.poll());
    CHECK(h.done());
    settle(l, fd);
}

TEST_CASE("loop.fd() becomes readable when another thread posts") {
    bool defer = true;
    SUBCASE("SINGLE_ISSUER | DEFER_TASKRUN") {
        defer = true;
    }
    SUBCASE("COOP_TASKRUN") {
        defer = false;
    }
    loop l(ring_options(defer));
    int fd = l.fd();
    SUBCASE("after the first turn") {
        settle(l, fd);
    }
    SUBCASE("before any turn") {
    }
    std::atomic<bool> ran{false};
    std::thread other([&] { l.post([&] { ran = true; }); });
    other.join();
    REQUIRE(wait_readable(fd));
    l.poll();
    CHECK(ran);
}

TEST_CASE("loop.fd() becomes readable for every post from another thread, again and again") {
    // The loop's wake once went through an eventfd, and the kernel stopped signaling fd()
    // for completions woken inside an eventfd write after the first one.
    loop l;
    int fd = l.fd();
    settle(l, fd);
    for (int round = 0; round < 50; ++round) {
        std::atomic<bool> ran{false};
        std::thread other([&] { l.post([&] { ran = true; }); });
        other.join();
        REQUIRE(wait_readable(fd));
        for (int i = 0; i < 100 && !ran; ++i) {
            l.poll();
            if (!ran) {
                REQUIRE(wait_readable(fd));
            }
        }
        REQUIRE(ran);
        settle(l, fd);
    }
}

TEST_CASE("loop.fd() becomes readable for every post from another loop (MSG_RING)") {
    // A loop wakes another with a MSG_RING SQE; the kernel queues its CQE as task work for
    // the embedded ring's thread, and must signal the registered eventfd for it.
    bool defer = true;
    SUBCASE("SINGLE_ISSUER | DEFER_TASKRUN") {
        defer = true;
    }
    SUBCASE("COOP_TASKRUN") {
        defer = false;
    }
    loop l(ring_options(defer));
    int fd = l.fd();
    settle(l, fd); // binds the ring to this thread: from now on other loops may MSG_RING it
    runtime rt(runtime::options{.loops = 1});
    for (int round = 0; round < 50; ++round) {
        std::atomic<bool> ran{false};
        rt.block_on([&]() -> task<void> {
            l.post([&] { ran = true; });
            co_return;
        }());
        REQUIRE(wait_readable(fd));
        for (int i = 0; i < 100 && !ran; ++i) {
            l.poll();
            if (!ran) {
                REQUIRE(wait_readable(fd));
            }
        }
        REQUIRE(ran);
        settle(l, fd);
    }
    if (l.impl().accepts_msg_ring()) {
        CHECK(l.impl().msg_ring_received.load() >= 50);
    }
}

TEST_CASE("loop.fd() becomes readable when a sleep is due, with no timeout in the foreign loop") {
    loop l;
    int fd = l.fd();
    auto h = start(l, l.background(), nap(2ms));
    // The kernel timeout on the next timer is armed by the turn that started the sleep.
    REQUIRE(wait_readable(fd));
    for (int i = 0; i < 100 && !h.done(); ++i) {
        REQUIRE(wait_readable(fd));
        l.poll();
    }
    CHECK(h.done());
}

TEST_CASE("loop.fd() becomes readable at a context deadline that cancels a read") {
    loop l;
    pipe_fds p;
    int fd = l.fd();
    auto [ctx, cancel] = with_timeout(l.background(), 2ms);
    auto h = start(l, ctx, read_one(p.r));
    for (int i = 0; i < 100 && !h.done(); ++i) {
        REQUIRE(wait_readable(fd));
        l.poll();
    }
    REQUIRE(h.done());
    // Joining is a formality: the task is done.
    auto r = l.block_on([](join_handle<result<std::size_t>> jh) -> task<result<std::size_t>> {
        co_return *co_await jh;
    }(std::move(h)));
    CHECK(r.error() == errc::deadline_exceeded);
}

TEST_CASE("an earlier timer moves the kernel timeout forward") {
    loop l;
    int fd = l.fd();
    auto late = start(l, l.background(), nap(1h));
    auto soon = start(l, l.background(), nap(2ms));
    for (int i = 0; i < 100 && !soon.done(); ++i) {
        REQUIRE(wait_readable(fd));
        l.poll();
    }
    CHECK(soon.done());
    CHECK_FALSE(late.done());
    late.cancel();
    for (int i = 0; i < 100 && !late.done(); ++i) {
        REQUIRE(wait_readable(fd));
        l.poll();
    }
    CHECK(late.done());
}

TEST_CASE("poll() returns false when there is nothing to do") {
    loop l;
    int fd = l.fd();
    settle(l, fd);
    CHECK_FALSE(l.poll());
}
