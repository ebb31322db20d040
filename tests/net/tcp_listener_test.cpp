#include "context/manual_clock.hpp"
#include "context/with_cancel.hpp"
#include "net/tcp_listener.hpp"
#include "net/tcp_stream.hpp"
#include "runtime/loop.hpp"
#include "runtime/spawn.hpp"

#include <doctest/doctest.h>

#include <array>
#include <cerrno>
#include <dirent.h>
#include <fcntl.h>
#include <string>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>
#include <vector>

using namespace tether;
using namespace tether::net;
using namespace std::chrono_literals;

namespace {

tcp_listener listen_loopback(listen_options o = {}) {
    result<tcp_listener> l = tcp_listener::bind(address::ipv4_loopback(), o);
    REQUIRE(l);
    return std::move(*l);
}

// A client connected with a blocking connect(2): the handshake completes into the backlog.
int connect_blocking(const address& at) {
    int fd = ::socket(at.native_family(), SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(fd >= 0);
    REQUIRE(::connect(fd, at.data(), at.size()) == 0);
    return fd;
}

address local_of(int fd) {
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) == 0);
    return *address::from_sockaddr(reinterpret_cast<sockaddr*>(&ss), len);
}

template <class T>
task<T> join(join_handle<T> h) {
    auto r = co_await h;
    REQUIRE(r);
    if constexpr (!std::is_void_v<T>) {
        co_return std::move(*r);
    }
}

task<result<tcp_stream>> accept_one(const tcp_listener* lis) {
    co_return co_await lis->accept();
}

task<join_handle<result<tcp_stream>>> start_accept(const tcp_listener* lis) {
    co_return co_await spawn(accept_one(lis));
}

task<result<tcp_stream>> accept_under(context ctx, const tcp_listener* lis) {
    co_return co_await with_context(std::move(ctx), lis->accept());
}

// Returns the highest descriptor open in this process.
int highest_fd() {
    int high = 2;
    DIR* d = ::opendir("/proc/self/fd");
    REQUIRE(d != nullptr);
    while (dirent* e = ::readdir(d)) {
        if (e->d_name[0] != '.') {
            high = std::max(high, std::atoi(e->d_name));
        }
    }
    ::closedir(d);
    return high;
}

} // namespace

TEST_CASE("accept returns connections in arrival order, including ones that came first") {
    loop l;
    tcp_listener lis = listen_loopback();
    address at = *lis.local_addr();
    std::vector<int> clients;
    for (int i = 0; i < 3; ++i) {
        clients.push_back(connect_blocking(at));
    }
    for (int c : clients) {
        result<tcp_stream> s = l.block_on(accept_one(&lis));
        REQUIRE(s);
        CHECK(*s->peer_addr() == local_of(c));
        ::close(c);
    }
}

TEST_CASE("one multishot accept serves many connections") {
    loop l;
    tcp_listener lis = listen_loopback();
    address at = *lis.local_addr();
    for (int i = 0; i < 50; ++i) {
        auto h = l.block_on(start_accept(&lis));
        l.run_until_idle();
        int c = connect_blocking(at);
        result<tcp_stream> s = l.block_on(join(std::move(h)));
        REQUIRE(s);
        ::close(c);
    }
    CHECK(lis.stats().accepted == 50);
    CHECK(lis.stats().arms == 1);
}

TEST_CASE("connections nobody takes pause the multishot accept; accepting resumes it") {
    loop l;
    tcp_listener lis = listen_loopback();
    address at = *lis.local_addr();
    std::vector<int> clients;
    for (int i = 0; i < 200; ++i) {
        clients.push_back(connect_blocking(at));
    }
    std::size_t accepted = 0;
    for (std::size_t i = 0; i < clients.size(); ++i) {
        result<tcp_stream> s = l.block_on(accept_one(&lis));
        REQUIRE(s);
        ++accepted;
    }
    CHECK(accepted == 200);
    // Queued past 128, the multishot accept was canceled (the kernel may have accepted them
    // all in the meantime); the next accept arms it again.
    CHECK(lis.stats().pauses >= 1);
    std::uint64_t arms = lis.stats().arms;
    int late = connect_blocking(at);
    result<tcp_stream> s = l.block_on(accept_one(&lis));
    REQUIRE(s);
    CHECK(*s->peer_addr() == local_of(late));
    CHECK(lis.stats().arms == arms + 1);
    ::close(late);
    for (int c : clients) {
        ::close(c);
    }
}

TEST_CASE("a canceled accept takes nothing; the next accept gets the connection") {
    loop l;
    tcp_listener lis = listen_loopback();
    auto [ctx, cancel] = with_cancel(l.background());
    struct d {
        static task<join_handle<result<tcp_stream>>> start(context c, const tcp_listener* lis) {
            co_return co_await spawn(accept_under(std::move(c), lis));
        }
    };
    auto h = l.block_on(d::start(ctx, &lis));
    l.run_until_idle();
    CHECK_FALSE(h.done());
    cancel();
    result<tcp_stream> r = l.block_on(join(std::move(h)));
    CHECK(r.error() == errc::canceled);

    int c = connect_blocking(*lis.local_addr());
    l.run_until_idle(); // the multishot accept, still armed, queues it
    result<tcp_stream> s = l.block_on(accept_one(&lis));
    REQUIRE(s);
    CHECK(*s->peer_addr() == local_of(c));
    ::close(c);
}

TEST_CASE("under a context already canceled, accept takes nothing, not even a queued one") {
    loop l;
    tcp_listener lis = listen_loopback();
    int c = connect_blocking(*lis.local_addr());
    auto [ctx, cancel] = with_cancel(l.background());
    cancel();
    CHECK(l.block_on(accept_under(ctx, &lis)).error() == errc::canceled);
    result<tcp_stream> s = l.block_on(accept_one(&lis));
    REQUIRE(s);
    CHECK(*s->peer_addr() == local_of(c));
    ::close(c);
}

TEST_CASE("closing a listener resumes a pending accept with io_errc::closed") {
    loop l;
    tcp_listener lis = listen_loopback();
    auto h = l.block_on(start_accept(&lis));
    l.run_until_idle();
    REQUIRE_FALSE(h.done());
    tcp_listener moved = std::move(lis); // the accept follows the listener's state
    moved.close();
    CHECK(l.block_on(join(std::move(h))).error() == io_errc::closed);
    CHECK(l.block_on(accept_one(&moved)).error() == io_errc::closed);
    CHECK(l.block_on(accept_one(&lis)).error() == io_errc::closed);
    CHECK_FALSE(moved.is_open());
    moved.close(); // twice is fine
    l.run_until_idle();
}

TEST_CASE("a listener destroyed with connections queued closes them") {
    loop l;
    address at;
    int c;
    {
        tcp_listener lis = listen_loopback();
        at = *lis.local_addr();
        c = connect_blocking(at);
        auto h = l.block_on(start_accept(&lis));
        REQUIRE(l.block_on(join(std::move(h))));
        int c2 = connect_blocking(at);
        l.run_until_idle(); // queued, not taken
        ::close(c2);
    }
    l.run_until_idle();
    // The port is free again once the multishot accept is gone.
    listen_options o;
    o.reuse_addr = true;
    CHECK(tcp_listener::bind(at, o));
    ::close(c);
}

TEST_CASE("reuse_port lets two listeners share a port; without it the port is in use") {
    listen_options shared;
    shared.reuse_port = true;
    tcp_listener a = listen_loopback(shared);
    address at = *a.local_addr();
    result<tcp_listener> b = tcp_listener::bind(at, shared);
    CHECK(b);
    result<tcp_listener> c = tcp_listener::bind(at);
    CHECK(c.error() == std::errc::address_in_use);
}

TEST_CASE("bind_group binds a SO_REUSEPORT group on one port; the kernel spreads connections") {
    loop l; // before the listeners: they close on it
    result<std::vector<tcp_listener>> g = tcp_listener::bind_group(address::ipv4_loopback(), 2);
    REQUIRE(g);
    REQUIRE(g->size() == 2);
    address at = *(*g)[0].local_addr();
    CHECK(at.port() != 0);
    CHECK((*g)[1].local_addr()->port() == at.port());
    // Another socket can't take the port without joining the group.
    CHECK(tcp_listener::bind(at).error() == std::errc::address_in_use);
    // 64 connections from distinct source ports: each listener gets some (the chance that
    // the hash sends all of them to one is 2^-63).
    std::vector<int> clients;
    for (int i = 0; i < 64; ++i) {
        clients.push_back(connect_blocking(at));
    }
    std::array<int, 2> got =
        l.block_on([](std::vector<tcp_listener>* ls) -> task<std::array<int, 2>> {
            std::array<int, 2> n{};
            for (int i = 0; i < 64; ++i) {
                // Whichever listener has one queued: a short timeout on each in turn.
                for (std::size_t k = 0;; k = (k + 1) % 2) {
                    task<result<tcp_stream>> acc = with_timeout(20ms, (*ls)[k].accept());
                    auto r = co_await std::move(acc);
                    if (r) {
                        ++n[k];
                        break;
                    }
                }
            }
            co_return n;
        }(&*g));
    CHECK(got[0] + got[1] == 64);
    CHECK(got[0] > 0);
    CHECK(got[1] > 0);
    for (int fd : clients) {
        ::close(fd);
    }
    // Port 0 for a group of 0 gives one listener.
    result<std::vector<tcp_listener>> one = tcp_listener::bind_group(address::ipv4_loopback(), 0);
    REQUIRE(one);
    CHECK(one->size() == 1);
}

TEST_CASE("a listener binds only IP addresses") {
    CHECK(tcp_listener::bind(*address::local("/tmp/x")).error() == std::errc::invalid_argument);
}

TEST_CASE("out of descriptors, accept backs off without spinning and recovers") {
    manual_clock clk;
    loop l({.clock = &clk});

    // Run the code of the exhausted window below once with descriptors to spare: UBSan's
    // first check of each polymorphic call probes memory through a pipe (and would report a
    // false error without descriptors); checks it has made once are cached for good.
    {
        tcp_listener warm = listen_loopback();
        auto h = l.block_on(start_accept(&warm));
        l.run_until_idle();
        int c = connect_blocking(*warm.local_addr());
        REQUIRE(l.block_on(join(std::move(h))));
        ::close(c);
        // The back-off below reads the loop's clock, a call the warm-up path no longer makes
        // (a loop with no timers does not read it): make that virtual call once here.
        tether::clock* volatile source = &clk;
        (void)source->now();
    }
    l.run_until_idle();

    tcp_listener lis = listen_loopback();
    address at = *lis.local_addr();

    // The log line goes to stderr: catch it in a memfd to count it.
    int log = ::memfd_create("stderr", MFD_CLOEXEC);
    REQUIRE(log >= 0);
    int saved_stderr = ::dup(STDERR_FILENO);
    REQUIRE(saved_stderr >= 0);
    REQUIRE(::dup2(log, STDERR_FILENO) == STDERR_FILENO);

    // Exhaust the descriptors below a low limit and arm the multishot accept meanwhile. The
    // kernel reads RLIMIT_NOFILE when an accept is submitted, so this one fails for every
    // connection after, while the rest of the process (and the sanitizers, which need pipes)
    // gets descriptors again once the limit is restored.
    rlimit old{};
    REQUIRE(::getrlimit(RLIMIT_NOFILE, &old) == 0);
    rlimit low = old;
    low.rlim_cur = static_cast<rlim_t>(highest_fd() + 8);
    REQUIRE(::setrlimit(RLIMIT_NOFILE, &low) == 0);
    std::vector<int> fillers;
    for (;;) {
        int fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            REQUIRE(errno == EMFILE);
            break;
        }
        fillers.push_back(fd);
    }
    auto h = l.block_on(start_accept(&lis));
    l.run_until_idle();
    REQUIRE(::setrlimit(RLIMIT_NOFILE, &old) == 0);
    CHECK(lis.stats().arms == 1);

    std::vector<int> clients;
    for (int i = 0; i < 3; ++i) {
        clients.push_back(connect_blocking(at));
    }
    l.run_until_idle();
    CHECK_FALSE(h.done());
    CHECK(lis.stats().backoffs == 1);
    CHECK(lis.stats().episodes == 1);

    // Nothing retries before the delay (5 ms), however often the loop turns.
    for (int i = 0; i < 10; ++i) {
        l.run_until_idle();
    }
    clk.advance(4ms);
    l.run_until_idle();
    CHECK(lis.stats().arms == 1);
    CHECK_FALSE(h.done());

    // At the delay it tries again, with descriptors to spare now: the waiting accept gets the
    // first connection, and the listener serves on.
    clk.advance(1ms);
    result<tcp_stream> first = l.block_on(join(std::move(h)));
    REQUIRE(first);
    CHECK(*first->peer_addr() == local_of(clients[0]));
    CHECK(lis.stats().arms == 2);
    for (int i = 1; i < 3; ++i) {
        result<tcp_stream> s = l.block_on(accept_one(&lis));
        REQUIRE(s);
        CHECK(*s->peer_addr() == local_of(clients[static_cast<std::size_t>(i)]));
    }
    CHECK(lis.stats().episodes == 1);
    CHECK(lis.stats().backoffs == 1);
    for (int fd : fillers) {
        ::close(fd);
    }
    struct d {
        static task<std::string> hello(tcp_stream* s, int peer) {
            REQUIRE(co_await s->write_all("hi"));
            char buf[2];
            REQUIRE(::recv(peer, buf, 2, MSG_WAITALL) == 2);
            co_return std::string(buf, 2);
        }
    };
    CHECK(l.block_on(d::hello(&*first, clients[0])) == "hi");

    REQUIRE(::dup2(saved_stderr, STDERR_FILENO) == STDERR_FILENO);
    ::close(saved_stderr);
    std::string text(4096, '\0');
    ssize_t n = ::pread(log, text.data(), text.size(), 0);
    ::close(log);
    REQUIRE(n > 0);
    text.resize(static_cast<std::size_t>(n));
    CAPTURE(text);
    std::size_t lines = 0;
    for (std::size_t p = 0; (p = text.find("pausing accepts", p)) != std::string::npos; ++p) {
        ++lines;
    }
    CHECK(lines == 1);
    CHECK(text.find("Too many open files") != std::string::npos);
    for (int c : clients) {
        ::close(c);
    }
}
