// async_fd: readiness waits and non-blocking reads and writes through one poll per fd and
// direction, with the waiters queued in user space.
#include "context/with_cancel.hpp"
#include "context/with_deadline.hpp"
#include "runtime/async_fd.hpp"
#include "runtime/detail/loop_impl.hpp"
#include "runtime/loop.hpp"
#include "tests/runtime/sync_support.hpp"
#include "tests/support/manual_loop.hpp"
#include "tests/support/test_util.hpp"

#include <doctest/doctest.h>

#include <array>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <fcntl.h>
#include <optional>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <thread>
#include <unistd.h>
#include <vector>

using namespace tether;
using namespace std::chrono_literals;
using tether::test::await_into;
using tether::test::start;

namespace {

using fixture = tether::test::manual_loop;

// A pipe whose ends are async_fds, or plain fds for the test to use directly.
struct pipe_pair {
    int r = -1;
    int w = -1;
    pipe_pair() {
        int fds[2];
        REQUIRE(::pipe2(fds, O_CLOEXEC) == 0);
        r = fds[0];
        w = fds[1];
    }
};

int available(int fd) {
    int n = 0;
    REQUIRE(::ioctl(fd, FIONREAD, &n) == 0);
    return n;
}

void put(int fd, std::string_view s) {
    REQUIRE(::write(fd, s.data(), s.size()) == static_cast<ssize_t>(s.size()));
}

// Fills a non-blocking pipe's write end until it would block; returns the bytes written.
std::size_t fill(int fd) {
    std::array<char, 4096> junk{};
    std::size_t total = 0;
    for (;;) {
        ssize_t n = ::write(fd, junk.data(), junk.size());
        if (n < 0) {
            REQUIRE(errno == EAGAIN);
            return total;
        }
        total += static_cast<std::size_t>(n);
    }
}

// Runs the loop until `done()` holds; fails the test after 10 s (a lost wakeup).
template <class Pred>
void run_until(loop& l, Pred done) {
    auto limit = std::chrono::steady_clock::now() + 10s;
    while (!done()) {
        REQUIRE(std::chrono::steady_clock::now() < limit);
        l.run_once(10ms);
    }
}

std::span<std::byte> bytes_of(auto& x) {
    return std::as_writable_bytes(std::span(&x, 1));
}

} // namespace

TEST_CASE("readable waits for data on a pipe; read_some then reads it") {
    fixture f;
    pipe_pair p;
    async_fd r(p.r);
    CHECK((::fcntl(p.r, F_GETFL) & O_NONBLOCK) != 0);
    std::optional<result<void>> ready;
    auto h = start(f.l, f.l.background(), await_into(&ready, r.readable()));
    f.l.run_until_idle();
    CHECK_FALSE(ready);
    CHECK(r.stats().read_armed);
    CHECK(r.stats().readers == 1);
    put(p.w, "hi");
    run_until(f.l, [&] { return ready.has_value(); });
    CHECK(ready->has_value());
    CHECK_FALSE(r.stats().read_armed); // one-shot: no waiter left, not re-armed
    CHECK(available(p.r) == 2);        // a readiness wait takes nothing
    std::array<std::byte, 8> buf{};
    std::optional<result<std::size_t>> n;
    auto h2 = start(f.l, f.l.background(), await_into(&n, r.read_some(buf)));
    f.l.run_until_idle();
    REQUIRE(n);
    REQUIRE(n->has_value());
    CHECK(**n == 2);
    CHECK(r.stats().polls == 1); // the data was there: read at once, no poll
    ::close(p.w);
}

TEST_CASE("a readiness wait on an fd that is already readable returns after one poll") {
    fixture f;
    pipe_pair p;
    async_fd r(p.r);
    put(p.w, "x");
    std::optional<result<void>> ready;
    auto h = start(f.l, f.l.background(), await_into(&ready, r.readable()));
    run_until(f.l, [&] { return ready.has_value(); });
    CHECK(ready->has_value());
    ::close(p.w);
}

TEST_CASE("read_some on an eventfd waits until it is written") {
    fixture f;
    async_fd ev(::eventfd(0, EFD_CLOEXEC));
    REQUIRE(ev.is_open());
    std::uint64_t v = 0;
    std::optional<result<std::size_t>> n;
    auto h = start(f.l, f.l.background(), await_into(&n, ev.read_some(bytes_of(v))));
    f.l.run_until_idle();
    CHECK_FALSE(n);
    std::uint64_t one = 5;
    REQUIRE(::write(ev.fd(), &one, sizeof one) == sizeof one);
    run_until(f.l, [&] { return n.has_value(); });
    REQUIRE(n->has_value());
    CHECK(**n == 8);
    CHECK(v == 5);
}

TEST_CASE("writable and write_some wait for room in a full pipe") {
    fixture f;
    pipe_pair p;
    async_fd w(p.w);
    std::size_t filled = fill(p.w);
    CHECK(filled > 0);
    std::optional<result<void>> ready;
    std::optional<result<std::size_t>> n;
    std::array<std::byte, 3> msg{std::byte{'a'}, std::byte{'b'}, std::byte{'c'}};
    auto h1 = start(f.l, f.l.background(), await_into(&ready, w.writable()));
    auto h2 = start(f.l, f.l.background(), await_into(&n, w.write_some(msg)));
    f.l.run_until_idle();
    CHECK_FALSE(ready);
    CHECK_FALSE(n);
    CHECK(w.stats().write_armed);
    CHECK(w.stats().writers == 2);
    // Drain the pipe: both resume, the write with its bytes.
    std::vector<char> sink(filled + 16);
    std::size_t got = 0;
    while (got < filled) {
        ssize_t k = ::read(p.r, sink.data(), sink.size());
        REQUIRE(k > 0);
        got += static_cast<std::size_t>(k);
    }
    run_until(f.l, [&] { return ready.has_value() && n.has_value(); });
    CHECK(ready->has_value());
    REQUIRE(n->has_value());
    CHECK(**n == 3);
    CHECK(available(p.r) == 3);
    ::close(p.r);
}

TEST_CASE("an eventfd is writable at once") {
    fixture f;
    async_fd ev(::eventfd(0, EFD_CLOEXEC));
    std::optional<result<void>> ready;
    auto h = start(f.l, f.l.background(), await_into(&ready, ev.writable()));
    run_until(f.l, [&] { return ready.has_value(); });
    CHECK(ready->has_value());
}

TEST_CASE("many waiters on one fd share one poll and each gets its own bytes") {
    fixture f;
    pipe_pair p;
    async_fd r(p.r);
    constexpr int readers = 10;
    std::array<std::byte, readers> bufs{};
    std::array<std::optional<result<std::size_t>>, readers> got;
    std::vector<test::started<void>> hs;
    hs.reserve(readers + 1);
    for (int i = 0; i < readers; ++i) {
        hs.push_back(
            start(f.l, f.l.background(), await_into(&got[i], r.read_some(std::span(&bufs[i], 1)))));
    }
    std::optional<result<void>> ready;
    hs.push_back(start(f.l, f.l.background(), await_into(&ready, r.readable())));
    f.l.run_until_idle();
    CHECK(r.stats().polls == 1);
    CHECK(r.stats().readers == readers + 1);
    put(p.w, "abc");
    run_until(f.l, [&] { return got[2].has_value(); });
    f.l.run_until_idle();
    // The first three reads took a byte each, in order; the fourth would block and waits
    // with the rest on the re-armed poll. The readiness waiter woke.
    for (int i = 0; i < readers; ++i) {
        CHECK(got[i].has_value() == (i < 3));
    }
    CHECK(ready.has_value());
    CHECK(r.stats().read_armed);
    CHECK(r.stats().readers == readers - 3);
    CHECK(r.stats().polls == 2);
    put(p.w, "defghij");
    run_until(f.l, [&] { return got[readers - 1].has_value(); });
    std::string seen;
    for (int i = 0; i < readers; ++i) {
        REQUIRE(got[i].has_value());
        REQUIRE(got[i]->has_value());
        CHECK(**got[i] == 1);
        seen += static_cast<char>(bufs[i]);
    }
    CHECK(seen == "abcdefghij");
    CHECK(r.stats().readers == 0);
    ::close(p.w);
}

TEST_CASE("spurious readiness: tasks that read by themselves loop until they get data") {
    fixture f;
    pipe_pair p;
    async_fd r(p.r);
    // Each task waits for readability and reads one byte itself, waiting again if another
    // task took it first.
    auto reader = [](async_fd& afd, char* out, int* spurious) -> task<void> {
        for (;;) {
            result<void> ok = co_await afd.readable();
            REQUIRE(ok.has_value());
            ssize_t n = ::read(afd.fd(), out, 1);
            if (n == 1) {
                co_return;
            }
            REQUIRE(errno == EAGAIN);
            ++*spurious;
        }
    };
    char a = 0, b = 0;
    int spurious = 0;
    auto ha = start(f.l, f.l.background(), reader(r, &a, &spurious));
    auto hb = start(f.l, f.l.background(), reader(r, &b, &spurious));
    f.l.run_until_idle();
    put(p.w, "1");
    run_until(f.l, [&] { return ha.done() || hb.done(); });
    f.l.run_until_idle();
    CHECK(ha.done() != hb.done()); // one byte: one task got it
    CHECK(spurious == 1);          // the other woke, found nothing, and waits again
    put(p.w, "2");
    run_until(f.l, [&] { return ha.done() && hb.done(); });
    CHECK(std::string{a, b} == (a == '1' ? "12" : "21"));
    ::close(p.w);
}

TEST_CASE("a canceled waiter leaves; the others keep waiting on the armed poll and get data") {
    fixture f;
    pipe_pair p;
    async_fd r(p.r);
    std::array<std::byte, 1> b0{}, b1{}, b2{};
    std::optional<result<std::size_t>> n0, n1, n2;
    auto [ctx, cancel] = with_cancel(f.l.background());
    auto h0 = start(f.l, f.l.background(), await_into(&n0, r.read_some(b0)));
    auto h1 = start(f.l, ctx, await_into(&n1, r.read_some(b1)));
    auto h2 = start(f.l, f.l.background(), await_into(&n2, r.read_some(b2)));
    f.l.run_until_idle();
    std::uint64_t cancels = f.l.impl().submitted_cancels;
    cancel();
    f.l.run_until_idle();
    REQUIRE(n1);
    CHECK(n1->error() == errc::canceled);
    CHECK_FALSE(n0);
    CHECK_FALSE(n2);
    CHECK(f.l.impl().submitted_cancels == cancels); // nothing went to the kernel
    CHECK(r.stats().read_armed);
    CHECK(r.stats().readers == 2);
    CHECK(r.stats().polls == 1);
    put(p.w, "xy");
    run_until(f.l, [&] { return n0.has_value() && n2.has_value(); });
    CHECK(**n0 == 1);
    CHECK(**n2 == 1);
    CHECK(static_cast<char>(b0[0]) == 'x');
    CHECK(static_cast<char>(b2[0]) == 'y');
    CHECK(static_cast<char>(b1[0]) == '\0'); // the canceled read took nothing
    ::close(p.w);
}

TEST_CASE("under an already-canceled context every await fails at once and submits nothing") {
    fixture f;
    pipe_pair p;
    async_fd r(p.r);
    async_fd w(p.w);
    put(p.w, "data");
    auto [ctx, cancel] = with_cancel(f.l.background());
    cancel();
    std::array<std::byte, 8> buf{};
    std::optional<result<std::size_t>> n, m;
    std::optional<result<void>> rd, wr;
    auto h1 = start(f.l, ctx, await_into(&n, r.read_some(buf)));
    auto h2 = start(f.l, ctx, await_into(&rd, r.readable()));
    auto h3 = start(f.l, ctx, await_into(&wr, w.writable()));
    auto h4 = start(f.l, ctx, await_into(&m, w.write_some(buf)));
    f.l.run_until_idle();
    REQUIRE(n);
    REQUIRE(m);
    REQUIRE(rd);
    REQUIRE(wr);
    CHECK(n->error() == errc::canceled);
    CHECK(m->error() == errc::canceled);
    CHECK(rd->error() == errc::canceled);
    CHECK(wr->error() == errc::canceled);
    CHECK(available(p.r) == 4); // the data was there, and is still there
    CHECK(r.stats().polls == 0);
    CHECK(w.stats().polls == 0);
}

TEST_CASE("a wait under with_timeout resumes with deadline_exceeded at the deadline") {
    fixture f;
    async_fd ev(::eventfd(0, EFD_CLOEXEC));
    auto [ctx, cancel] = with_timeout(f.l.background(), 30ms);
    std::uint64_t v = 0;
    std::optional<result<std::size_t>> n;
    auto h = start(f.l, ctx, await_into(&n, ev.read_some(bytes_of(v))));
    f.l.run_until_idle();
    f.clk.advance(29ms);
    f.l.run_until_idle();
    CHECK_FALSE(n);
    f.clk.advance(1ms);
    f.l.run_until_idle();
    REQUIRE(n);
    CHECK(n->error() == errc::deadline_exceeded);
    CHECK(ev.stats().read_armed); // still armed, for whoever waits next
}

TEST_CASE("with_timeout bounds a read_some; the next read gets what arrives later") {
    fixture f;
    async_fd ev(::eventfd(0, EFD_CLOEXEC));
    std::uint64_t v = 0;
    std::optional<result<std::size_t>> n;
    auto h = start(f.l, f.l.background(),
                   await_into(&n, tether::with_timeout(30ms, ev.read_some(bytes_of(v)))));
    f.l.run_until_idle();
    CHECK_FALSE(n);
    f.clk.advance(30ms);
    f.l.run_until_idle();
    REQUIRE(n);
    CHECK(n->error() == errc::deadline_exceeded);
    std::uint64_t seven = 7;
    REQUIRE(::write(ev.fd(), &seven, sizeof seven) == sizeof seven);
    std::optional<result<std::size_t>> m;
    auto h2 = start(f.l, f.l.background(), await_into(&m, ev.read_some(bytes_of(v))));
    run_until(f.l, [&] { return m.has_value(); });
    REQUIRE(m->has_value());
    CHECK(v == 7);
}

TEST_CASE("a context canceled from another thread resumes the waiter on its loop") {
    loop l;
    async_fd ev(::eventfd(0, EFD_CLOEXEC));
    for (std::size_t i = 0; i < tether::test::iterations(200); ++i) {
        auto [ctx, cancel] = with_cancel(l.background());
        std::uint64_t v = 0;
        std::optional<result<std::size_t>> n;
        std::optional<result<void>> rd;
        auto h1 = start(l, ctx, await_into(&n, ev.read_some(bytes_of(v))));
        auto h2 = start(l, ctx, await_into(&rd, ev.readable()));
        l.run_until_idle();
        // Odd rounds race a write against the cancel: the read either took the count or was
        // canceled and left it in the eventfd, never both and never neither.
        bool write = i % 2 == 1;
        std::thread canceler([&] { cancel(); });
        std::thread writer([&] {
            if (write) {
                std::uint64_t one = 1;
                CHECK(::write(ev.fd(), &one, sizeof one) == sizeof one);
            }
        });
        run_until(l, [&] { return n.has_value() && rd.has_value(); });
        canceler.join();
        writer.join();
        std::uint64_t left = 0;
        bool remains = ::read(ev.fd(), &left, sizeof left) == sizeof left;
        if (n->has_value()) {
            CHECK(write);
            CHECK(v == 1);
            CHECK_FALSE(remains);
        } else {
            CHECK(n->error() == errc::canceled);
            CHECK(remains == write);
        }
        CHECK((rd->has_value() || rd->error() == errc::canceled));
    }
    CHECK(ev.stats().readers == 0);
}

TEST_CASE("closing an async_fd resumes its waiters with EBADF and cancels its polls") {
    fixture f;
    pipe_pair p;
    std::optional<result<std::size_t>> n;
    std::optional<result<void>> rd;
    std::array<std::byte, 4> buf{};
    std::optional<async_fd> r(std::in_place, p.r);
    auto h1 = start(f.l, f.l.background(), await_into(&n, r->read_some(buf)));
    auto h2 = start(f.l, f.l.background(), await_into(&rd, r->readable()));
    f.l.run_until_idle();
    CHECK(r->stats().read_armed);
    r.reset(); // destroys it: the fd closes at once, the poll's memory waits for its CQE
    CHECK(::fcntl(p.r, F_GETFD) < 0);
    f.l.run_until_idle();
    REQUIRE(n);
    REQUIRE(rd);
    CHECK(n->error() == std::error_code(EBADF, std::system_category()));
    CHECK(rd->error() == std::error_code(EBADF, std::system_category()));
    // The canceled poll's CQE frees what it used (ASan checks both the leak and the reuse).
    for (int i = 0; i < 10; ++i) {
        f.l.run_once(1ms);
    }
    ::close(p.w);
}

TEST_CASE("a loop destroyed before a closed async_fd's canceled poll completes frees it") {
    pipe_pair p;
    {
        loop l;
        async_fd r(::eventfd(0, EFD_CLOEXEC));
        async_fd w(p.w);
        (void)fill(p.w); // full: not writable (and its read end is readable)
        std::optional<result<void>> rd, wr;
        auto h1 = start(l, l.background(), await_into(&rd, r.readable()));
        auto h2 = start(l, l.background(), await_into(&wr, w.writable()));
        l.run_until_idle();
        CHECK(r.stats().read_armed);
        CHECK(w.stats().write_armed);
        CHECK(r.close().has_value());
        CHECK(w.close().has_value());
        l.run_until_idle(); // the waiters resume; the cancels may not have been reaped yet
        REQUIRE(rd);
        REQUIRE(wr);
        CHECK(rd->error() == std::error_code(EBADF, std::system_category()));
        CHECK(wr->error() == std::error_code(EBADF, std::system_category()));
    } // the loop goes with the orphaned polls (LeakSanitizer checks they were freed)
    ::close(p.r);
}

TEST_CASE("an async_fd that outlives its loop closes cleanly or works on the next loop") {
    async_fd ev(::eventfd(0, EFD_CLOEXEC));
    async_fd other(::eventfd(0, EFD_CLOEXEC));
    {
        loop l;
        std::optional<result<void>> rd, rd2;
        {
            auto h = start(l, l.background(), await_into(&rd, ev.readable()));
            auto h2 = start(l, l.background(), await_into(&rd2, other.readable()));
            l.run_until_idle();
            CHECK(ev.stats().read_armed);
            CHECK(other.stats().read_armed);
        } // the waiters are canceled; the polls stay armed
        REQUIRE(rd);
        CHECK(rd->error() == errc::canceled);
    } // the loop ends with both polls in the kernel
    CHECK_FALSE(ev.stats().read_armed);
    CHECK(other.close().has_value()); // nothing to cancel: the ring is gone
    loop l2;
    std::uint64_t v = 0;
    std::optional<result<std::size_t>> m;
    auto h = start(l2, l2.background(), await_into(&m, ev.read_some(bytes_of(v))));
    l2.run_until_idle();
    CHECK_FALSE(m);
    CHECK(ev.stats().read_armed); // a new poll, on this loop
    std::uint64_t one = 1;
    REQUIRE(::write(ev.fd(), &one, sizeof one) == sizeof one);
    run_until(l2, [&] { return m.has_value(); });
    REQUIRE(m->has_value());
    CHECK(v == 1);
}

TEST_CASE("end of file and errors are values") {
    // SIGPIPE would end the test where write(2) on a pipe without a reader fails with EPIPE.
    struct ignore_sigpipe {
        void (*old)(int) = std::signal(SIGPIPE, SIG_IGN);
        ~ignore_sigpipe() { std::signal(SIGPIPE, old); }
    } guard;
    fixture f;
    SUBCASE("a reader waiting when the writer closes reads 0") {
        pipe_pair p;
        async_fd r(p.r);
        std::array<std::byte, 4> buf{};
        std::optional<result<std::size_t>> n;
        auto h = start(f.l, f.l.background(), await_into(&n, r.read_some(buf)));
        f.l.run_until_idle();
        CHECK_FALSE(n);
        ::close(p.w);
        run_until(f.l, [&] { return n.has_value(); });
        REQUIRE(n->has_value());
        CHECK(**n == 0);
    }
    SUBCASE("a writer waiting on a full pipe when the reader closes gets EPIPE") {
        pipe_pair p;
        async_fd w(p.w);
        (void)fill(p.w);
        std::array<std::byte, 4> buf{};
        std::optional<result<std::size_t>> n;
        auto h = start(f.l, f.l.background(), await_into(&n, w.write_some(buf)));
        f.l.run_until_idle();
        CHECK_FALSE(n);
        ::close(p.r);
        run_until(f.l, [&] { return n.has_value(); });
        REQUIRE_FALSE(n->has_value());
        CHECK(n->error() == std::error_code(EPIPE, std::system_category()));
    }
    SUBCASE("an async_fd that is not open fails with EBADF") {
        async_fd none;
        CHECK_FALSE(none.is_open());
        std::array<std::byte, 4> buf{};
        std::optional<result<std::size_t>> n;
        std::optional<result<void>> rd;
        auto h1 = start(f.l, f.l.background(), await_into(&n, none.read_some(buf)));
        auto h2 = start(f.l, f.l.background(), await_into(&rd, none.readable()));
        f.l.run_until_idle();
        REQUIRE(n);
        REQUIRE(rd);
        CHECK(n->error() == std::error_code(EBADF, std::system_category()));
        CHECK(rd->error() == std::error_code(EBADF, std::system_category()));
    }
    SUBCASE("a read of an fd that is not readable fails with its errno") {
        pipe_pair p;
        async_fd w(p.w); // the write end: read(2) gives EBADF
        std::array<std::byte, 4> buf{};
        std::optional<result<std::size_t>> n;
        auto h = start(f.l, f.l.background(), await_into(&n, w.read_some(buf)));
        f.l.run_until_idle();
        REQUIRE(n);
        CHECK(n->error() == std::error_code(EBADF, std::system_category()));
        ::close(p.r);
    }
}

TEST_CASE("release gives the fd back open; a moved async_fd keeps its waiters") {
    fixture f;
    pipe_pair p;
    async_fd a(p.r);
    std::array<std::byte, 4> buf{};
    std::optional<result<std::size_t>> n;
    auto h = start(f.l, f.l.background(), await_into(&n, a.read_some(buf)));
    f.l.run_until_idle();
    async_fd b(std::move(a));
    CHECK_FALSE(a.is_open());
    CHECK(b.stats().readers == 1);
    put(p.w, "ok");
    run_until(f.l, [&] { return n.has_value(); });
    CHECK(**n == 2);
    CHECK(b.release() == p.r);
    CHECK_FALSE(b.is_open());
    CHECK(::fcntl(p.r, F_GETFD) >= 0); // still open
    ::close(p.r);
    ::close(p.w);
}
