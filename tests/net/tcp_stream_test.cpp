#include "context/manual_clock.hpp"
#include "context/with_cancel.hpp"
#include "net/tcp_listener.hpp"
#include "net/tcp_stream.hpp"
#include "runtime/loop.hpp"
#include "runtime/spawn.hpp"
#include "tests/support/test_util.hpp"

#include <doctest/doctest.h>

#include <array>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <string>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>
#include <vector>

using namespace tether;
using namespace tether::net;
using namespace std::chrono_literals;

namespace {

struct tcp_pair {
    tcp_stream client;
    tcp_stream server;
};

tcp_listener listen_loopback(int backlog = SOMAXCONN) {
    listen_options o;
    o.backlog = backlog;
    result<tcp_listener> l = tcp_listener::bind(address::ipv4_loopback(), o);
    REQUIRE(l);
    return std::move(*l);
}

// Lifetime: `lis` is borrowed until the task completes.
task<tcp_pair> connect_pair(const tcp_listener* lis) {
    result<tcp_stream> c = co_await tcp_stream::connect(*lis->local_addr());
    REQUIRE(c);
    result<tcp_stream> s = co_await lis->accept();
    REQUIRE(s);
    co_return tcp_pair{std::move(*c), std::move(*s)};
}

template <class T>
task<T> join(join_handle<T> h) {
    auto r = co_await h;
    REQUIRE(r);
    if constexpr (!std::is_void_v<T>) {
        co_return std::move(*r);
    }
}

std::span<const std::byte> bytes_of(std::string_view s) {
    return std::as_bytes(std::span(s.data(), s.size()));
}

std::string to_string(std::span<const std::byte> b) {
    return std::string(reinterpret_cast<const char*>(b.data()), b.size());
}

// Echoes until the peer ends the stream; returns the bytes echoed and why it stopped.
task<io_result> echo(tcp_stream* s) {
    std::array<std::byte, 4096> buf;
    std::size_t total = 0;
    for (;;) {
        result<std::size_t> n = co_await s->read_some(buf);
        if (!n) {
            co_return io_result{total, n.error()};
        }
        io_result w = co_await s->write_all(std::span(buf.data(), *n));
        total += w.bytes;
        if (!w) {
            co_return io_result{total, w.error};
        }
    }
}

task<void> echo_round_trips(const tcp_listener* lis) {
    tcp_pair p = co_await connect_pair(lis);
    auto server = co_await spawn(echo(&p.server));
    for (std::size_t size : {1u, 7u, 100u, 4096u, 4097u, 65536u, 300000u}) {
        std::string msg(size, '\0');
        for (std::size_t i = 0; i < size; ++i) {
            msg[i] = static_cast<char>('a' + (i * 7 + size) % 26);
        }
        io_result w = co_await p.client.write_all(msg);
        CHECK(w.bytes == size);
        CHECK_FALSE(w.error);
        std::string back(size, '\0');
        io_result r = co_await p.client.read_exact(std::as_writable_bytes(std::span(back)));
        CHECK(r.bytes == size);
        CHECK_FALSE(r.error);
        CHECK(back == msg);
    }
    REQUIRE(p.client.shutdown(shutdown_how::write));
    io_result echoed = co_await join(std::move(server));
    CHECK(echoed.error == io_errc::eof);
    CHECK(echoed.bytes == 1 + 7 + 100 + 4096 + 4097 + 65536 + 300000);
}

// ---- 64 MiB both ways ----------------------------------------------------------------

constexpr std::size_t big = 64u << 20;
constexpr std::size_t chunk = 256u << 10;

std::uint64_t next(std::uint64_t& x) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return x;
}

// Hashes words, so both sides must see the same chunking: read_exact gives whole chunks.
std::uint64_t mix(std::uint64_t h, std::span<const std::byte> b) {
    for (std::size_t i = 0; i + 8 <= b.size(); i += 8) {
        std::uint64_t w;
        std::memcpy(&w, b.data() + i, 8);
        h = (h ^ w) * 0x100000001b3ULL;
    }
    return h;
}

task<std::uint64_t> send_stream(tcp_stream* s, std::uint64_t seed) {
    std::vector<std::byte> buf(chunk);
    std::uint64_t h = 0xcbf29ce484222325ULL;
    for (std::size_t sent = 0; sent < big; sent += chunk) {
        for (std::size_t i = 0; i < chunk; i += 8) {
            std::uint64_t w = next(seed);
            std::memcpy(buf.data() + i, &w, 8);
        }
        h = mix(h, buf);
        io_result w = co_await s->write_all(buf);
        REQUIRE(w);
    }
    co_return h;
}

task<std::uint64_t> receive_stream(tcp_stream* s) {
    std::vector<std::byte> buf(chunk);
    std::uint64_t h = 0xcbf29ce484222325ULL;
    for (std::size_t got = 0; got < big; got += chunk) {
        io_result r = co_await s->read_exact(buf);
        REQUIRE(r);
        h = mix(h, buf);
    }
    // Nothing more: the next read sees the writer's end.
    std::array<std::byte, 1> one;
    result<std::size_t> end = co_await s->read_some(one);
    CHECK(end.error() == io_errc::eof);
    co_return h;
}

task<void> shut_after(task<std::uint64_t> t, tcp_stream* s, std::uint64_t* h) {
    *h = co_await std::move(t);
    REQUIRE(s->shutdown(shutdown_how::write));
}

task<void> transfer_both_ways(const tcp_listener* lis) {
    tcp_pair p = co_await connect_pair(lis);
    std::uint64_t sent_up = 0;
    std::uint64_t sent_down = 0;
    auto up = co_await spawn(shut_after(send_stream(&p.client, 1), &p.client, &sent_up));
    auto down = co_await spawn(shut_after(send_stream(&p.server, 2), &p.server, &sent_down));
    auto got_up = co_await spawn(receive_stream(&p.server));
    auto got_down = co_await spawn(receive_stream(&p.client));
    co_await join(std::move(up));
    co_await join(std::move(down));
    CHECK(co_await join(std::move(got_up)) == sent_up);
    CHECK(co_await join(std::move(got_down)) == sent_down);
    CHECK(sent_up != sent_down);
}

// ---- half-close ------------------------------------------------------------------------

task<void> half_close(const tcp_listener* lis) {
    tcp_pair p = co_await connect_pair(lis);
    REQUIRE(co_await p.client.write_all("request"));
    REQUIRE(p.client.shutdown(shutdown_how::write));

    // The server reads to EOF, then still answers on its half.
    std::string got;
    std::array<std::byte, 3> buf;
    for (;;) {
        result<std::size_t> n = co_await p.server.read_some(buf);
        if (!n) {
            CHECK(n.error() == io_errc::eof);
            break;
        }
        got += to_string(std::span(buf.data(), *n));
    }
    CHECK(got == "request");
    REQUIRE(co_await p.server.write_all("response"));
    REQUIRE(p.server.close());

    std::array<std::byte, 8> reply;
    io_result r = co_await p.client.read_exact(reply);
    CHECK(r.bytes == 8);
    CHECK(to_string(reply) == "response");
    io_result more = co_await p.client.read_exact(reply);
    CHECK(more.bytes == 0);
    CHECK(more.error == io_errc::eof);
}

// Closing with SO_LINGER 0 sends a RST instead of a FIN.
void reset(tcp_stream& s) {
    linger l{1, 0};
    REQUIRE(::setsockopt(s.native_handle(), SOL_SOCKET, SO_LINGER, &l, sizeof l) == 0);
    REQUIRE(s.close());
}

task<io_result> read_exact_into(tcp_stream* s, std::vector<std::byte>* buf) {
    co_return co_await s->read_exact(*buf);
}

task<io_result> write_all_from(tcp_stream* s, std::vector<std::byte>* buf) {
    co_return co_await s->write_all(*buf);
}

task<join_handle<io_result>> start(task<io_result> t) {
    co_return co_await spawn(std::move(t));
}

task<result<std::size_t>> read_some_under(context ctx, tcp_stream* s, std::span<std::byte> buf) {
    co_return co_await with_context(std::move(ctx), s->read_some(buf));
}

task<result<std::size_t>> read_some_of(tcp_stream* s, std::span<std::byte> buf) {
    co_return co_await s->read_some(buf);
}

} // namespace

TEST_CASE("echo round trips over loopback TCP carry every byte in order") {
    loop l;
    tcp_listener lis = listen_loopback();
    l.block_on(echo_round_trips(&lis));
}

TEST_CASE("64 MiB cross in both directions at once, intact") {
    loop l;
    tcp_listener lis = listen_loopback();
    l.block_on(transfer_both_ways(&lis));
}

TEST_CASE("after a half-close the peer reads EOF and can still answer") {
    loop l;
    tcp_listener lis = listen_loopback();
    l.block_on(half_close(&lis));
}

TEST_CASE("a peer reset ends a pending read with connection_reset") {
    loop l;
    tcp_listener lis = listen_loopback();
    tcp_pair p = l.block_on(connect_pair(&lis));
    std::vector<std::byte> buf(100);
    auto h = l.block_on(start(read_exact_into(&p.server, &buf)));
    l.run_until_idle();
    REQUIRE_FALSE(h.done());
    REQUIRE(::send(p.client.native_handle(), "abc", 3, 0) == 3);
    reset(p.client);
    io_result r = l.block_on(join(std::move(h)));
    CHECK(r.error == std::errc::connection_reset);
    CHECK(r.bytes == 3); // the bytes before the reset are reported, not lost
}

TEST_CASE("a peer reset ends write_all with the bytes written so far") {
    loop l;
    tcp_listener lis = listen_loopback();
    tcp_pair p = l.block_on(connect_pair(&lis));
    std::vector<std::byte> buf(big, std::byte{'x'});
    auto h = l.block_on(start(write_all_from(&p.server, &buf)));
    l.run_until_idle();
    REQUIRE_FALSE(h.done()); // the socket buffers are full
    char sink[1000];
    REQUIRE(::recv(p.client.native_handle(), sink, sizeof sink, 0) > 0);
    reset(p.client);
    io_result r = l.block_on(join(std::move(h)));
    CHECK((r.error == std::errc::connection_reset || r.error == std::errc::broken_pipe));
    CHECK(r.bytes > 0);
    CHECK(r.bytes < big);
}

TEST_CASE("writing to a closed peer gives EPIPE or ECONNRESET, never SIGPIPE") {
    loop l;
    tcp_listener lis = listen_loopback();
    tcp_pair p = l.block_on(connect_pair(&lis));
    REQUIRE(p.server.close());
    struct d {
        static task<io_result> write_until_error(tcp_stream* s) {
            for (int i = 0; i < 1000; ++i) {
                io_result w = co_await s->write_all("data");
                if (w.error) {
                    co_return w;
                }
            }
            co_return io_result{};
        }
    };
    std::error_code e = l.block_on(d::write_until_error(&p.client)).error;
    CHECK((e == std::errc::broken_pipe || e == std::errc::connection_reset));
}

TEST_CASE("connecting to a port with no listener is refused") {
    loop l;
    // A bound socket that does not listen holds the port, so nobody else can take it.
    int holder = ::socket(AF_INET, SOCK_STREAM, 0);
    REQUIRE(holder >= 0);
    address lo = address::ipv4_loopback();
    REQUIRE(::bind(holder, lo.data(), lo.size()) == 0);
    sockaddr_in sin{};
    socklen_t len = sizeof sin;
    REQUIRE(::getsockname(holder, reinterpret_cast<sockaddr*>(&sin), &len) == 0);
    address at = lo.with_port(ntohs(sin.sin_port));
    result<tcp_stream> s = l.block_on(tcp_stream::connect(at));
    CHECK(s.error() == std::errc::connection_refused);
    ::close(holder);
}

TEST_CASE("connect refuses an address that is not IP") {
    loop l;
    result<tcp_stream> s = l.block_on(tcp_stream::connect(*address::local("/nowhere")));
    CHECK(s.error() == std::errc::invalid_argument);
}

TEST_CASE("a connect that never completes ends at the context's deadline") {
    manual_clock clk;
    loop l({.clock = &clk});
    // A backlog of 0 admits one connection; nobody accepts it, so the next SYN is dropped
    // and that connect waits for minutes.
    tcp_listener lis = listen_loopback(0);
    address at = *lis.local_addr();
    int filler = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    REQUIRE(filler >= 0);
    int r = ::connect(filler, at.data(), at.size());
    REQUIRE((r == 0 || errno == EINPROGRESS));
    pollfd pfd{filler, POLLOUT, 0};
    REQUIRE(::poll(&pfd, 1, 5000) == 1); // the handshake completes into the queue

    auto [ctx, cancel] = with_timeout(l.background(), 100ms);
    struct d {
        static task<join_handle<result<tcp_stream>>> start(address a) {
            co_return co_await spawn(tcp_stream::connect(a));
        }
    };
    auto h = l.block_on(ctx, d::start(at));
    l.run_until_idle();
    clk.advance(99ms);
    l.run_until_idle();
    CHECK_FALSE(h.done());
    clk.advance(1ms);
    result<tcp_stream> s = l.block_on(join(std::move(h)));
    CHECK(s.error() == errc::deadline_exceeded);
    ::close(filler);
}

TEST_CASE("canceling a context resumes thousands of pending reads, each canceled") {
    constexpr std::size_t n = 1000;
    // Two descriptors per connection: raise the soft limit if it is the usual 1024.
    rlimit old{};
    REQUIRE(::getrlimit(RLIMIT_NOFILE, &old) == 0);
    rlimit raised = old;
    raised.rlim_cur = std::max<rlim_t>(old.rlim_cur, std::min<rlim_t>(old.rlim_max, 2 * n + 100));
    REQUIRE(raised.rlim_cur >= 2 * n + 50);
    REQUIRE(::setrlimit(RLIMIT_NOFILE, &raised) == 0);
    {
        loop l;
        tcp_listener lis = listen_loopback();
        std::vector<tcp_pair> pairs;
        for (std::size_t i = 0; i < n; ++i) {
            pairs.push_back(l.block_on(connect_pair(&lis)));
        }
        std::vector<std::array<std::byte, 16>> bufs(n);
        auto [ctx, cancel] = with_cancel(l.background());
        struct d {
            static task<std::vector<join_handle<result<std::size_t>>>>
            start_all(std::vector<tcp_pair>* ps, std::vector<std::array<std::byte, 16>>* bs) {
                std::vector<join_handle<result<std::size_t>>> hs;
                for (std::size_t i = 0; i < ps->size(); ++i) {
                    hs.push_back(co_await spawn(read_some_of(&(*ps)[i].server, (*bs)[i])));
                }
                co_return hs;
            }
            static task<std::size_t>
            count_canceled(std::vector<join_handle<result<std::size_t>>> hs) {
                std::size_t canceled = 0;
                for (auto& h : hs) {
                    auto r = co_await h;
                    REQUIRE(r);
                    canceled += r->error() == errc::canceled ? 1 : 0;
                }
                co_return canceled;
            }
        };
        auto hs = l.block_on(ctx, d::start_all(&pairs, &bufs));
        l.run_until_idle();
        std::size_t pending = 0;
        for (auto& h : hs) {
            pending += h.done() ? 0 : 1;
        }
        CHECK(pending == n);
        cancel();
        CHECK(l.block_on(d::count_canceled(std::move(hs))) == n);

        // The canceled reads consumed nothing: the streams still carry bytes.
        REQUIRE(::send(pairs[7].client.native_handle(), "after", 5, 0) == 5);
        auto r = l.block_on(read_some_of(&pairs[7].server, bufs[7]));
        REQUIRE(r);
        CHECK(to_string(std::span(bufs[7].data(), *r)) == "after");
    }
    REQUIRE(::setrlimit(RLIMIT_NOFILE, &old) == 0);
}

TEST_CASE("under a context already canceled, a read fails at once and consumes nothing") {
    loop l;
    tcp_listener lis = listen_loopback();
    tcp_pair p = l.block_on(connect_pair(&lis));
    REQUIRE(::send(p.client.native_handle(), "x", 1, 0) == 1);
    auto [ctx, cancel] = with_cancel(l.background());
    cancel();
    std::array<std::byte, 4> buf;
    result<std::size_t> r = l.block_on(read_some_under(ctx, &p.server, buf));
    CHECK(r.error() == errc::canceled);
    result<std::size_t> ok = l.block_on(read_some_of(&p.server, buf));
    REQUIRE(ok);
    CHECK(*ok == 1);
}

TEST_CASE("a read under with_timeout ends at the deadline and the next read gets the data") {
    manual_clock clk;
    loop l({.clock = &clk});
    tcp_listener lis = listen_loopback();
    tcp_pair p = l.block_on(connect_pair(&lis));
    std::array<std::byte, 8> buf;
    struct d {
        static task<result<std::size_t>> read_briefly(tcp_stream* s, std::span<std::byte> b) {
            co_return co_await tether::with_timeout(50ms, s->read_some(b));
        }
        static task<join_handle<result<std::size_t>>> start(tcp_stream* s, std::span<std::byte> b) {
            co_return co_await spawn(read_briefly(s, b));
        }
    };
    auto h = l.block_on(d::start(&p.server, buf));
    l.run_until_idle();
    clk.advance(49ms);
    l.run_until_idle();
    CHECK_FALSE(h.done());
    clk.advance(1ms);
    result<std::size_t> r = l.block_on(join(std::move(h)));
    CHECK(r.error() == errc::deadline_exceeded);
    REQUIRE(::send(p.client.native_handle(), "late", 4, 0) == 4);
    result<std::size_t> late = l.block_on(read_some_of(&p.server, buf));
    REQUIRE(late);
    CHECK(to_string(std::span(buf.data(), *late)) == "late");
}

TEST_CASE("writev sends every buffer in order, however many") {
    loop l;
    tcp_listener lis = listen_loopback();
    tcp_pair p = l.block_on(connect_pair(&lis));
    std::vector<std::string> parts;
    std::string all;
    for (int i = 0; i < 20; ++i) {
        parts.push_back(
            std::string(static_cast<std::size_t>(i * 1000 + 1), static_cast<char>('a' + i)));
        all += parts.back();
    }
    parts.insert(parts.begin() + 3, std::string()); // empty pieces are skipped
    std::vector<std::span<const std::byte>> spans;
    for (const auto& s : parts) {
        spans.push_back(bytes_of(s));
    }
    struct d {
        static task<io_result> send(tcp_stream* s, std::vector<std::span<const std::byte>>* v) {
            co_return co_await s->writev(*v);
        }
        static task<std::string> recv(tcp_stream* s, std::size_t n) {
            std::string out(n, '\0');
            io_result r = co_await s->read_exact(std::as_writable_bytes(std::span(out)));
            REQUIRE(r);
            co_return out;
        }
    };
    io_result w = l.block_on(d::send(&p.client, &spans));
    CHECK(w.bytes == all.size());
    CHECK_FALSE(w.error);
    CHECK(l.block_on(d::recv(&p.server, all.size())) == all);
}

TEST_CASE("socket options read back what was set") {
    loop l;
    tcp_listener lis = listen_loopback();
    tcp_pair p = l.block_on(connect_pair(&lis));
    REQUIRE(p.client.set_nodelay(true));
    CHECK(*p.client.nodelay());
    REQUIRE(p.client.set_nodelay(false));
    CHECK_FALSE(*p.client.nodelay());
    REQUIRE(p.client.set_keepalive(true));
    CHECK(*p.client.keepalive());
    REQUIRE(p.client.set_keepalive(30s, 5s, 3));
    CHECK(*p.client.keepalive());
    REQUIRE(p.client.set_send_buffer_size(64 * 1024));
    CHECK(*p.client.send_buffer_size() >= 64 * 1024); // the kernel doubles it
    REQUIRE(p.client.set_receive_buffer_size(64 * 1024));
    CHECK(*p.client.receive_buffer_size() >= 64 * 1024);
}

TEST_CASE("local_addr and peer_addr name the two ends") {
    loop l;
    tcp_listener lis = listen_loopback();
    tcp_pair p = l.block_on(connect_pair(&lis));
    CHECK(*p.client.peer_addr() == *lis.local_addr());
    CHECK(*p.server.local_addr() == *lis.local_addr());
    CHECK(*p.server.peer_addr() == *p.client.local_addr());
    CHECK(p.client.local_addr()->is_loopback());
}

TEST_CASE("adopt takes a descriptor connected elsewhere, blocking or not") {
    loop l;
    tcp_listener lis = listen_loopback();
    address at = *lis.local_addr();
    const int kinds[] = {0, SOCK_NONBLOCK};
    for (int flags : kinds) {
        CAPTURE(flags);
        int fd = ::socket(AF_INET, SOCK_STREAM | flags, 0);
        REQUIRE(fd >= 0);
        int r = ::connect(fd, at.data(), at.size());
        REQUIRE((r == 0 || errno == EINPROGRESS));
        tcp_stream c = tcp_stream::adopt(fd);
        struct d {
            static task<std::string> round_trip(tcp_stream* c, const tcp_listener* lis) {
                result<tcp_stream> s = co_await lis->accept();
                REQUIRE(s);
                REQUIRE(co_await c->write_all("adopted"));
                std::array<std::byte, 7> buf;
                io_result got = co_await s->read_exact(buf);
                REQUIRE(got);
                // And the other way, into the adopted socket.
                REQUIRE(co_await s->write_all("back"));
                std::array<std::byte, 4> back;
                io_result b = co_await c->read_exact(back);
                REQUIRE(b);
                co_return to_string(buf) + to_string(back);
            }
        };
        CHECK(l.block_on(d::round_trip(&c, &lis)) == "adoptedback");
    }
}

TEST_CASE("reads and writes of nothing return 0 without suspending") {
    loop l;
    tcp_listener lis = listen_loopback();
    tcp_pair p = l.block_on(connect_pair(&lis));
    struct d {
        static task<void> run(tcp_stream* s) {
            std::span<std::byte> none;
            result<std::size_t> r = co_await s->read_some(none);
            CHECK(*r == 0);
            result<std::size_t> w = co_await s->write_some(none);
            CHECK(*w == 0);
            io_result all = co_await s->read_exact(none);
            CHECK(all.bytes == 0);
            CHECK_FALSE(all.error);
        }
    };
    l.block_on(d::run(&p.server));
}

TEST_CASE("a moved-from stream is closed; a closed stream reports EBADF") {
    loop l;
    tcp_listener lis = listen_loopback();
    tcp_pair p = l.block_on(connect_pair(&lis));
    tcp_stream moved = std::move(p.client);
    CHECK_FALSE(p.client.is_open());
    CHECK(moved.is_open());
    REQUIRE(moved.close());
    CHECK(moved.close()); // twice is fine
    CHECK_FALSE(moved.is_open());
    std::array<std::byte, 1> buf;
    CHECK(l.block_on(read_some_of(&moved, buf)).error() == std::errc::bad_file_descriptor);
}

// ---- registered (fixed) files ----------------------------------------------------------

namespace {

// Enough rounds of ping_pong to register both ends (each round counts one write of each; the
// first write of `a` comes before `a` receives).
constexpr std::uint32_t enough_rounds = tether::net::detail::fixed_after_uses + 4;

int slot_of(const tcp_stream& s) {
    return s.receive_stats().fixed_slot;
}

// Receives exactly `n` bytes through the pool.
task<std::string> receive_n(tcp_stream* s, std::size_t n) {
    std::string got;
    while (got.size() < n) {
        result<recv_buffer> b = co_await s->receive();
        REQUIRE(b);
        got += to_string(b->data());
    }
    co_return got;
}

// `rounds` ping-pongs through receive() and write_all: `a` writes, `b` echoes, `a` checks.
task<void> ping_pong(tcp_stream* a, tcp_stream* b, std::uint32_t rounds) {
    for (std::uint32_t i = 0; i < rounds; ++i) {
        std::string msg = "ping " + std::to_string(i);
        io_result w = co_await a->write_all(msg);
        REQUIRE(w);
        std::string mid = co_await receive_n(b, msg.size());
        io_result e = co_await b->write_all(mid);
        REQUIRE(e);
        std::string back = co_await receive_n(a, msg.size());
        CHECK(back == msg);
    }
}

// The error that ends a receive (in `error`; `bytes` is what it got).
task<io_result> receive_error(tcp_stream* s) {
    result<recv_buffer> b = co_await s->receive();
    if (!b) {
        co_return io_result{0, b.error()};
    }
    co_return io_result{b->data().size(), std::error_code{}};
}

task<io_result> receive_error_under(context ctx, tcp_stream* s) {
    co_return co_await with_context(std::move(ctx), receive_error(s));
}

task<void> half_close_registered(tcp_pair* p) {
    REQUIRE(p->client.shutdown(shutdown_how::write));
    io_result end = co_await receive_error(&p->server);
    CHECK(end.error == io_errc::eof);
    io_result w = co_await p->server.write_all("after");
    REQUIRE(w);
    std::string got = co_await receive_n(&p->client, 5);
    CHECK(got == "after");
}

task<void> write_on(tcp_stream* s, std::string text) {
    io_result w = co_await s->write_all(text);
    CHECK(w);
    CHECK_FALSE(w.error);
}

// A connected pair on `l` that has ping-ponged enough for both ends to register their fds.
tcp_pair busy_pair(loop& l, tcp_listener* lis) {
    tcp_pair p = l.block_on(connect_pair(lis));
    l.block_on(ping_pong(&p.client, &p.server, enough_rounds));
    return p;
}

} // namespace

TEST_CASE("a busy receiving stream registers its fd; close frees the slot and the peer sees EOF") {
    loop l;
    tcp_listener lis = listen_loopback();
    tcp_pair p = l.block_on(connect_pair(&lis));
    // A few ops use the plain fd.
    l.block_on(ping_pong(&p.client, &p.server, 4));
    CHECK(slot_of(p.client) == -1);
    CHECK(slot_of(p.server) == -1);
    CHECK(l.fixed_files_in_use() == 0);
    // Enough ops register both ends; the bytes still flow, now through the slots.
    l.block_on(ping_pong(&p.client, &p.server, enough_rounds));
    CHECK(slot_of(p.client) >= 0);
    CHECK(slot_of(p.server) >= 0);
    CHECK(slot_of(p.client) != slot_of(p.server));
    CHECK(l.fixed_files_in_use() == 2);
    // A move keeps the slot.
    tcp_stream server = std::move(p.server);
    l.block_on(ping_pong(&p.client, &server, 3));
    REQUIRE(server.close());
    CHECK(l.fixed_files_in_use() == 1);
    // The table let go of the socket: the peer sees the close.
    CHECK(l.block_on(receive_error(&p.client)).error == io_errc::eof);
    REQUIRE(p.client.close());
    CHECK(l.fixed_files_in_use() == 0);
}

TEST_CASE("on a registered stream, half-close, cancel and peer reset end receives as before") {
    loop l;
    tcp_listener lis = listen_loopback();
    tcp_pair p = busy_pair(l, &lis);
    REQUIRE(slot_of(p.server) >= 0);
    REQUIRE(slot_of(p.client) >= 0);

    // Half-close: the peer reads EOF and still answers.
    l.block_on(half_close_registered(&p));

    // A pending receive canceled resumes with the context's error.
    auto [ctx, cancel] = with_cancel(l.background());
    auto pending = l.block_on(start(receive_error_under(ctx, &p.client)));
    l.run_until_idle();
    REQUIRE_FALSE(pending.done());
    cancel();
    CHECK(l.block_on(join(std::move(pending))).error == errc::canceled);

    // A pending receive ends with the peer's reset.
    auto reading = l.block_on(start(receive_error(&p.client)));
    l.run_until_idle();
    REQUIRE_FALSE(reading.done());
    reset(p.server);
    CHECK(l.fixed_files_in_use() == 1);
    CHECK(l.block_on(join(std::move(reading))).error == std::errc::connection_reset);
    REQUIRE(p.client.close());
    CHECK(l.fixed_files_in_use() == 0);
}

TEST_CASE("closing a registered stream while its receive waits ends it and the peer sees EOF") {
    loop l;
    tcp_listener lis = listen_loopback();
    tcp_pair p = busy_pair(l, &lis);
    REQUIRE(slot_of(p.server) >= 0);
    // The server's multishot recv is armed; its task waits on it.
    auto waiting = l.block_on(start(receive_error(&p.server)));
    l.run_until_idle();
    REQUIRE_FALSE(waiting.done());
    REQUIRE(p.server.close());
    CHECK(l.block_on(join(std::move(waiting))).error == io_errc::closed);
    CHECK(l.block_on(receive_error(&p.client)).error == io_errc::eof);
    CHECK(l.fixed_files_in_use() == 1);
}

TEST_CASE("streams beyond a full table keep their plain fds and still work") {
    loop::options o;
    o.fixed_files = 1;
    loop l(o);
    tcp_listener lis = listen_loopback();
    tcp_pair a = l.block_on(connect_pair(&lis));
    tcp_pair b = l.block_on(connect_pair(&lis));
    l.block_on(ping_pong(&a.client, &a.server, enough_rounds));
    l.block_on(ping_pong(&b.client, &b.server, enough_rounds));
    CHECK(l.fixed_files_in_use() == 1);
    // One end of the first pair took the only slot; the rest use plain fds.
    REQUIRE((slot_of(a.client) == 0) != (slot_of(a.server) == 0));
    CHECK(slot_of(b.client) == -1);
    CHECK(slot_of(b.server) == -1);
    tcp_stream& registered = slot_of(a.client) == 0 ? a.client : a.server;
    tcp_stream& peer = slot_of(a.client) == 0 ? a.server : a.client;
    // The slot comes free with its stream; the next busy stream takes it.
    REQUIRE(registered.close());
    CHECK(l.block_on(receive_error(&peer)).error == io_errc::eof);
    CHECK(l.fixed_files_in_use() == 0);
    l.block_on(ping_pong(&b.client, &b.server, enough_rounds));
    CHECK(l.fixed_files_in_use() == 1);
    CHECK((slot_of(b.client) == 0) != (slot_of(b.server) == 0));

    // No table at all: everything on plain fds.
    loop::options none;
    none.fixed_files = 0;
    loop l0(none);
    tcp_listener lis0 = listen_loopback(); // a listener accepts on one loop
    tcp_pair c = l0.block_on(connect_pair(&lis0));
    l0.block_on(ping_pong(&c.client, &c.server, enough_rounds));
    CHECK(l0.fixed_files_in_use() == 0);
    CHECK(slot_of(c.client) == -1);
}

TEST_CASE("a write issued on another loop than the registered stream's uses the plain fd") {
    loop a;
    loop b;
    tcp_listener lis = listen_loopback();
    tcp_pair p = busy_pair(a, &lis);
    REQUIRE(slot_of(p.client) >= 0);
    // b's ring has no table: an SQE naming a's slot would fail there with EBADF.
    b.block_on(write_on(&p.client, "from b"));
    CHECK(b.fixed_files_in_use() == 0);
    CHECK(a.block_on(receive_n(&p.server, 6)) == "from b");
}
