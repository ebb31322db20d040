#include "context/manual_clock.hpp"
#include "context/with_cancel.hpp"
#include "net/recv_buffer.hpp"
#include "net/tcp_listener.hpp"
#include "net/tcp_stream.hpp"
#include "runtime/loop.hpp"
#include "runtime/spawn.hpp"

#include <doctest/doctest.h>

#include <array>
#include <cstdint>
#include <fstream>
#include <sstream>
#include <string>
#include <sys/socket.h>
#include <vector>

using namespace tether;
using namespace tether::net;
using namespace std::chrono_literals;

namespace {

struct tcp_pair {
    tcp_stream client;
    tcp_stream server;
};

tcp_listener listen_loopback() {
    result<tcp_listener> l = tcp_listener::bind(address::ipv4_loopback());
    REQUIRE(l);
    return std::move(*l);
}

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

std::string pattern(std::size_t n) {
    std::string s(n, '\0');
    for (std::size_t i = 0; i < n; ++i) {
        s[i] = static_cast<char>('a' + (i * 7 + i / 4096) % 26);
    }
    return s;
}

void send_all(int fd, std::string_view s) {
    std::size_t off = 0;
    while (off < s.size()) {
        ssize_t n = ::send(fd, s.data() + off, s.size() - off, MSG_NOSIGNAL);
        REQUIRE(n > 0);
        off += static_cast<std::size_t>(n);
    }
}

task<result<recv_buffer>> receive_one(tcp_stream* s) {
    co_return co_await s->receive();
}

// Sends `text` from the client end and runs `l` until the server end receives one buffer.
result<recv_buffer> send_and_receive(loop& l, tcp_pair& p, std::string_view text) {
    send_all(p.client.native_handle(), text);
    return l.block_on(receive_one(&p.server));
}

// Receives until EOF and returns everything.
task<std::string> receive_all(tcp_stream* s) {
    std::string out;
    for (;;) {
        result<recv_buffer> b = co_await s->receive();
        if (!b) {
            CHECK(b.error() == io_errc::eof);
            co_return out;
        }
        CHECK(b->size() > 0);
        CHECK(b->size() <= 4096);
        out += b->text();
    }
}

task<void> shut_after_write(tcp_stream* s, std::string text) {
    REQUIRE(co_await s->write_all(text));
    REQUIRE(s->shutdown(shutdown_how::write));
}

// A receive bounded by a 10 ms timeout, and a task that spawns one and returns its handle.
task<result<recv_buffer>> receive_briefly(tcp_stream* s) {
    co_return co_await tether::with_timeout(10ms, s->receive());
}
task<join_handle<result<recv_buffer>>> start_brief_receive(tcp_stream* s) {
    co_return co_await spawn(receive_briefly(s));
}

} // namespace

TEST_CASE("receive echoes with pool buffers, one multishot recv for many receives") {
    loop l;
    tcp_listener lis = listen_loopback();
    tcp_pair p = l.block_on(connect_pair(&lis));
    struct d {
        static task<void> echo(tcp_stream* s) {
            for (;;) {
                result<recv_buffer> b = co_await s->receive();
                if (!b) {
                    co_return;
                }
                // The pool's buffer goes straight back out: no copy.
                REQUIRE(co_await s->write_all(b->data()));
            }
        }
        static task<void> run(tcp_pair* p) {
            auto server = co_await spawn(echo(&p->server));
            for (int i = 0; i < 100; ++i) {
                std::string msg = "message " + std::to_string(i);
                REQUIRE(co_await p->client.write_all(msg));
                std::string back(msg.size(), '\0');
                REQUIRE(co_await p->client.read_exact(std::as_writable_bytes(std::span(back))));
                CHECK(back == msg);
            }
            REQUIRE(p->client.shutdown(shutdown_how::write));
            co_await join(std::move(server));
        }
    };
    l.block_on(d::run(&p));
    CHECK(p.server.receive_stats().arms == 1);
    CHECK(p.server.receive_stats().queued == 0);
}

TEST_CASE("a large transfer through receive arrives whole and in order") {
    loop l;
    tcp_listener lis = listen_loopback();
    tcp_pair p = l.block_on(connect_pair(&lis));
    std::string big = pattern(8 << 20);
    struct d {
        static task<std::string> run(tcp_pair* p, std::string big) {
            auto writer = co_await spawn(shut_after_write(&p->client, big));
            std::string got = co_await receive_all(&p->server);
            co_await join(std::move(writer));
            co_return got;
        }
    };
    CHECK(l.block_on(d::run(&p, big)) == big);
}

TEST_CASE("a stream whose queue is long stops receiving until it is read") {
    loop l;
    tcp_listener lis = listen_loopback();
    tcp_pair p = l.block_on(connect_pair(&lis));
    result<recv_buffer> one = send_and_receive(l, p, "first");
    REQUIRE(one);
    CHECK(one->text() == "first");
    one->reset();
    CHECK(p.server.receive_stats().receiving); // the multishot recv stays armed

    // 1 MiB arrives while nobody reads: it lands in the queue, which, past 16 buffers, cancels
    // the multishot recv (the kernel may drain what the socket held before the cancel lands).
    std::string big = pattern(1 << 20);
    send_all(p.client.native_handle(), big);
    l.run_until_idle();
    net::detail::recv_stats st = p.server.receive_stats();
    CAPTURE(st.queued);
    CHECK(st.pauses >= 1);
    CHECK(st.queued >= 16);
    CHECK_FALSE(st.receiving);

    // What comes next stays in the socket, where it slows the sender, until a read drains
    // the queue.
    std::string more = pattern(64 << 10);
    send_all(p.client.native_handle(), more);
    for (int i = 0; i < 3; ++i) {
        l.run_until_idle();
    }
    CHECK(p.server.receive_stats().queued == st.queued);
    REQUIRE(p.client.shutdown(shutdown_how::write));
    CHECK(l.block_on(receive_all(&p.server)) == big + more);
    CHECK(p.server.receive_stats().arms >= 2);
}

TEST_CASE("read_some and read_exact after receive read through the queue, in order") {
    loop l;
    tcp_listener lis = listen_loopback();
    tcp_pair p = l.block_on(connect_pair(&lis));
    result<recv_buffer> b = send_and_receive(l, p, "abc");
    REQUIRE(b);
    CHECK(b->text() == "abc");
    b->reset();
    send_all(p.client.native_handle(), "defghijklmnop");
    l.run_until_idle(); // queued by the multishot recv
    struct d {
        static task<std::string> run(tcp_pair* p) {
            std::array<std::byte, 3> three;
            result<std::size_t> n = co_await p->server.read_some(three);
            REQUIRE(n);
            std::string out(reinterpret_cast<const char*>(three.data()), *n);
            std::array<std::byte, 4> four;
            io_result r = co_await p->server.read_exact(four);
            REQUIRE(r);
            out += std::string(reinterpret_cast<const char*>(four.data()), 4);
            result<recv_buffer> rest = co_await p->server.receive(); // the partly read buffer
            REQUIRE(rest);
            out += "|" + std::string(rest->text());
            co_return out;
        }
    };
    CHECK(l.block_on(d::run(&p)) == "defghij|klmnop");
}

TEST_CASE("a canceled receive takes nothing; bytes arriving later wait for the next") {
    manual_clock clk;
    loop l({.clock = &clk});
    tcp_listener lis = listen_loopback();
    tcp_pair p = l.block_on(connect_pair(&lis));
    auto h = l.block_on(start_brief_receive(&p.server));
    l.run_until_idle();
    clk.advance(9ms);
    l.run_until_idle();
    CHECK_FALSE(h.done());
    clk.advance(1ms);
    CHECK(l.block_on(join(std::move(h))).error() == errc::deadline_exceeded);

    send_all(p.client.native_handle(), "later");
    l.run_until_idle();
    CHECK(p.server.receive_stats().queued == 1); // the multishot recv stayed armed

    // Sticky: under a context already canceled, receive takes nothing from the queue.
    auto [ctx, cancel] = with_cancel(l.background());
    cancel();
    CHECK(l.block_on(ctx, receive_one(&p.server)).error() == errc::canceled);
    result<recv_buffer> b = l.block_on(receive_one(&p.server));
    REQUIRE(b);
    CHECK(b->text() == "later");
}

TEST_CASE("a receive waiting on the armed multishot recv obeys its context") {
    // Once a stream receives and its queue is empty, a receive waits for the multishot
    // recv's next CQE at once (the inline path); cancellation works there as anywhere.
    manual_clock clk;
    loop l({.clock = &clk});
    tcp_listener lis = listen_loopback();
    tcp_pair p = l.block_on(connect_pair(&lis));
    result<recv_buffer> first = send_and_receive(l, p, "first");
    REQUIRE(first);
    CHECK(first->text() == "first");
    first->reset();
    REQUIRE(p.server.receive_stats().receiving);
    REQUIRE(p.server.receive_stats().queued == 0);

    // Sticky: under a context already canceled, it fails without waiting.
    {
        auto [ctx, cancel] = with_cancel(l.background());
        cancel();
        CHECK(l.block_on(ctx, receive_one(&p.server)).error() == errc::canceled);
    }

    // A deadline while it waits.
    struct d {
        // Receives until its context ends; returns how many buffers it got. Its awaits
        // share its task's registration (await_chain) from the fourth on.
        static task<int> count(tcp_stream* s) {
            for (int n = 0;; ++n) {
                result<recv_buffer> b = co_await s->receive();
                if (!b) {
                    CHECK(b.error() == errc::canceled);
                    co_return n;
                }
                CHECK(b->text() == "x");
            }
        }
        static task<join_handle<int>> start_count(tcp_stream* s) {
            co_return co_await spawn(count(s));
        }
    };
    auto h = l.block_on(start_brief_receive(&p.server));
    l.run_until_idle();
    clk.advance(9ms);
    l.run_until_idle();
    CHECK_FALSE(h.done());
    clk.advance(1ms);
    CHECK(l.block_on(join(std::move(h))).error() == errc::deadline_exceeded);

    // Canceled while it waits, in a task whose reads share its chain.
    auto [ctx, cancel] = with_cancel(l.background());
    join_handle<int> counter = l.block_on(ctx, d::start_count(&p.server));
    for (int i = 0; i < 6; ++i) {
        send_all(p.client.native_handle(), "x");
        l.run_until_idle();
    }
    CHECK_FALSE(counter.done());
    cancel();
    CHECK(l.block_on(join(std::move(counter))) == 6);

    // The multishot recv stayed armed: later bytes wait for the next receive.
    send_all(p.client.native_handle(), "later");
    l.run_until_idle();
    CHECK(p.server.receive_stats().queued == 1);
    CHECK(p.server.receive_stats().arms == 1);
    result<recv_buffer> b = l.block_on(receive_one(&p.server));
    REQUIRE(b);
    CHECK(b->text() == "later");
}

TEST_CASE("closing a stream with bytes queued and a recv armed releases everything") {
    loop l;
    tcp_listener lis = listen_loopback();
    tcp_pair p = l.block_on(connect_pair(&lis));
    send_all(p.client.native_handle(), "x");
    REQUIRE(l.block_on(receive_one(&p.server)));
    send_all(p.client.native_handle(), "queued");
    l.run_until_idle();
    CHECK(p.server.receive_stats().queued == 1);
    REQUIRE(p.server.close());
    l.run_until_idle(); // the multishot recv's last CQE frees its state
    // The peer sees the close.
    char c;
    CHECK(::recv(p.client.native_handle(), &c, 1, 0) == 0);
}

TEST_CASE("when the pool runs dry, receive falls back to buffers of its own") {
    loop l;
    tcp_listener lis = listen_loopback();
    tcp_pair p = l.block_on(connect_pair(&lis));
    std::string big = pattern(5 << 20); // more than the pool's 1024 buffers of 4 KiB
    struct d {
        static task<std::string> run(tcp_pair* p, std::string big) {
            auto writer = co_await spawn(shut_after_write(&p->client, big));
            std::vector<recv_buffer> held; // every buffer kept: the pool empties
            std::string got;
            for (;;) {
                result<recv_buffer> b = co_await p->server.receive();
                if (!b) {
                    CHECK(b.error() == io_errc::eof);
                    break;
                }
                got += b->text();
                held.push_back(std::move(*b));
            }
            CHECK(p->server.receive_stats().fallbacks >= 1);
            held.clear();
            co_await join(std::move(writer));
            co_return got;
        }
    };
    CHECK(l.block_on(d::run(&p, big)) == big);
}

TEST_CASE("a recv_buffer moves, resets, and returns its buffer once") {
    loop l;
    tcp_listener lis = listen_loopback();
    tcp_pair p = l.block_on(connect_pair(&lis));
    result<recv_buffer> b = send_and_receive(l, p, "move me");
    REQUIRE(b);
    recv_buffer moved = std::move(*b);
    CHECK(b->empty());
    CHECK(moved.text() == "move me");
    recv_buffer assigned;
    assigned = std::move(moved);
    CHECK(moved.empty());
    CHECK(assigned.size() == 7);
    assigned.reset();
    CHECK(assigned.empty());
    assigned.reset(); // twice is fine
}

namespace {

// The line "THPeligible: N" of the mapping in /proc/self/smaps that holds `p`, or -1.
int thp_eligible(const void* p) {
    auto at = reinterpret_cast<std::uintptr_t>(p);
    std::ifstream smaps("/proc/self/smaps");
    std::string line;
    bool inside = false;
    while (std::getline(smaps, line)) {
        std::uintptr_t lo = 0;
        std::uintptr_t hi = 0;
        char dash = 0;
        std::istringstream head(line);
        if (head >> std::hex >> lo >> dash >> hi && dash == '-') {
            inside = lo <= at && at < hi;
        } else if (inside && line.starts_with("THPeligible:")) {
            return std::stoi(line.substr(line.find(':') + 1));
        }
    }
    return -1;
}

} // namespace

TEST_CASE("the pool's buffers are on memory the kernel may back with huge pages") {
    std::ifstream mode("/sys/kernel/mm/transparent_hugepage/enabled");
    std::string modes;
    if (!std::getline(mode, modes) || modes.find("[never]") != std::string::npos) {
        MESSAGE("no transparent huge pages here: nothing to check");
        return;
    }
    loop l;
    tcp_listener lis = listen_loopback();
    tcp_pair p = l.block_on(connect_pair(&lis));
    result<recv_buffer> b = send_and_receive(l, p, "on a huge page");
    REQUIRE(b);
    CHECK(b->text() == "on a huge page");
    CHECK(thp_eligible(b->data().data()) == 1);
}

TEST_CASE("pool buffers start on different cache colours") {
    loop l;
    tcp_listener lis = listen_loopback();
    tcp_pair p = l.block_on(connect_pair(&lis));
    result<recv_buffer> a = send_and_receive(l, p, "first");
    REQUIRE(a);
    result<recv_buffer> b = send_and_receive(l, p, "second");
    REQUIRE(b);
    CHECK(a->text() == "first");
    CHECK(b->text() == "second");
    // Two buffers held at once are two pool buffers; 4 KiB apart they would share the
    // cache sets their first lines map to.
    auto at = [](const recv_buffer& r) {
        return reinterpret_cast<std::uintptr_t>(r.data().data());
    };
    CHECK(at(*a) % 4096 != at(*b) % 4096);
    CHECK(at(*a) % 64 == 0);
    CHECK(at(*b) % 64 == 0);
}
