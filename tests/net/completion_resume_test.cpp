// A stream's completions resume the awaiting coroutine from the CQE handler when nothing else
// is ready (loop_impl::resume_completed), and queue it behind what is.
#include "net/unix_stream.hpp"
#include "runtime/detail/loop_impl.hpp"
#include "runtime/event.hpp"
#include "runtime/loop.hpp"
#include "runtime/spawn.hpp"

#include <doctest/doctest.h>

#include <array>
#include <string>
#include <thread>
#include <unistd.h>
#include <utility>

using namespace tether;
using namespace tether::net;

namespace {

std::pair<unix_stream, unix_stream> make_pair() {
    result<std::pair<unix_stream, unix_stream>> p = unix_stream::pair();
    REQUIRE(p);
    return std::move(*p);
}

// Echoes `rounds` messages of `size` bytes through `server` (receive, then write_all).
task<void> echo(unix_stream* server, int rounds) {
    for (int i = 0; i < rounds; ++i) {
        result<recv_buffer> b = co_await server->receive();
        REQUIRE(b);
        io_result w = co_await server->write_all(b->data());
        REQUIRE(w);
    }
}

task<int> ping_pong(unix_stream* client, unix_stream* server, int rounds) {
    join_handle<void> srv = co_await spawn(echo(server, rounds));
    std::array<char, 8> msg{'p', 'i', 'n', 'g', '0', '1', '2', '3'};
    std::array<char, 8> back{};
    int ok = 0;
    for (int i = 0; i < rounds; ++i) {
        msg[7] = static_cast<char>('0' + i % 10);
        // One byte at a time would let receive() return a partial message: read_exact.
        REQUIRE(co_await client->write_all(std::as_bytes(std::span(msg))));
        io_result r = co_await client->read_exact(std::as_writable_bytes(std::span(back)));
        REQUIRE(r);
        ok += back == msg ? 1 : 0;
    }
    REQUIRE(co_await srv);
    co_return ok;
}

// Records `name` once a byte arrives on `s` (through read_some, or receive()), then sets `ev`.
task<void> note_read(unix_stream* s, bool lease, char name, std::string* order, event* ev,
                     event* suspended) {
    suspended->set(); // this task runs next up to its read's suspension
    if (lease) {
        result<recv_buffer> b = co_await s->receive();
        REQUIRE(b);
    } else {
        std::array<std::byte, 4> buf{};
        result<std::size_t> n = co_await s->read_some(buf);
        REQUIRE(n);
    }
    *order += name;
    ev->set();
}

task<void> note_event(event* ev, std::string* order) {
    REQUIRE(co_await ev->wait());
    *order += 'E';
}

// Two reads complete in one turn; the first one's coroutine sets an event that makes a third
// ready. Returns the order in which the three ran.
task<std::string> two_completions(unix_stream* a, int a_peer, unix_stream* b, int b_peer) {
    std::string order;
    event ev;
    event a_suspending;
    event b_suspending;
    join_handle<void> e = co_await spawn(note_event(&ev, &order));
    join_handle<void> ra = co_await spawn(note_read(a, false, 'A', &order, &ev, &a_suspending));
    join_handle<void> rb = co_await spawn(note_read(b, true, 'B', &order, &ev, &b_suspending));
    REQUIRE(co_await a_suspending.wait());
    REQUIRE(co_await b_suspending.wait());
    // Both reads are queued for the kernel, which sees their bytes at the loop's next enter.
    REQUIRE(::write(a_peer, "a", 1) == 1);
    REQUIRE(::write(b_peer, "b", 1) == 1);
    REQUIRE(co_await ra);
    REQUIRE(co_await rb);
    REQUIRE(co_await e);
    co_return order;
}

} // namespace

TEST_CASE("a stream's completions resume the awaiting coroutine without the ready queue") {
    loop l;
    auto [client, server] = make_pair();
    std::uint64_t before = l.impl().direct_resumes;
    CHECK(l.block_on(ping_pong(&client, &server, 200)) == 200);
    // Each round trip completes a receive and a write on the server and a write and a read on
    // the client: most of them find nothing else ready.
    CHECK(l.impl().direct_resumes - before >= 200);
}

TEST_CASE("a completion's coroutine runs after the coroutines already made ready") {
    // Whichever read completes first resumes at once and makes the event's waiter ready; the
    // other read's coroutine, completed after, queues behind that waiter. (Were both reads'
    // CQEs in separate turns, the order would be the same.)
    loop l;
    auto [a, a_peer] = make_pair();
    auto [b, b_peer] = make_pair();
    std::string order =
        l.block_on(two_completions(&a, a_peer.native_handle(), &b, b_peer.native_handle()));
    REQUIRE(order.size() == 3);
    CHECK(order[1] == 'E');
    CHECK(order.find('A') != std::string::npos);
    CHECK(order.find('B') != std::string::npos);
}
