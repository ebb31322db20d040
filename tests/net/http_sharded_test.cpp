// The HTTP server on several loops: one shard per loop, one SO_REUSEPORT group, shut down
// as one.

#include "context/with_deadline.hpp"
#include "net/http/sharded_server.hpp"
#include "net/tcp_stream.hpp"
#include "runtime/loop.hpp"
#include "runtime/runtime.hpp"
#include "runtime/sleep.hpp"
#include "runtime/spawn.hpp"

#include <doctest/doctest.h>

#include <array>
#include <atomic>
#include <charconv>
#include <mutex>
#include <set>
#include <string>
#include <vector>

using namespace tether;
using namespace std::chrono_literals;
using http::request;
using http::response_writer;

namespace {

// What happened to each request, by its id (the X-Id header, echoed as the body). A handler
// that began must have its response read whole by the client; a connection closed before
// the first byte of a response is fine only for a request whose handler never began (the
// server closed an idle connection while the request was still on its way).
struct ledger {
    std::mutex m;
    std::set<int> started;  // handlers that began
    std::set<int> complete; // responses a client read whole, with the right body
    std::set<int> closed;   // connections closed (or reset) before any response byte
    std::set<int> partial;  // responses cut short, or not the request's own
    int started_done = 0;   // handlers that began under a context already done
    std::atomic<int> next_id{1};

    void add(std::set<int>& to, int id) {
        std::lock_guard g(m);
        to.insert(id);
    }
    // Checks the rule; returns how many requests were lost (started, never answered).
    int check() {
        std::lock_guard g(m);
        int lost = 0;
        for (int id : started) {
            if (complete.count(id) == 0) {
                ++lost;
            }
        }
        INFO("started " << started.size() << ", complete " << complete.size() << ", closed "
                        << closed.size() << ", partial " << partial.size()
                        << ", started under a done context " << started_done);
        CHECK(lost == 0);
        CHECK(partial.empty());
        CHECK(started_done == 0);
        for (int id : complete) {
            CHECK(started.count(id) == 1); // no answer without a handler
        }
        return lost;
    }
};

ledger* book = nullptr;

// Reads one response (head, then Content-Length bytes) and returns its body in `body`.
// Returns 1 when whole, 0 when the connection ended before its first byte, -1 when it ended
// in the middle.
task<int> read_response(net::tcp_stream& s, std::string& buf, std::string* body = nullptr) {
    std::size_t need = std::string::npos;
    std::size_t head_end = 0;
    char chunk[4096];
    for (;;) {
        std::size_t end = buf.find("\r\n\r\n");
        if (end != std::string::npos && need == std::string::npos) {
            std::size_t p = buf.find("Content-Length: ");
            if (p == std::string::npos || p > end) {
                co_return -1;
            }
            head_end = end + 4;
            need = head_end + std::stoul(buf.substr(p + 16));
        }
        if (need != std::string::npos && buf.size() >= need) {
            if (body != nullptr) {
                body->assign(buf, head_end, need - head_end);
            }
            buf.erase(0, need);
            co_return 1;
        }
        auto r = co_await s.read_some(std::as_writable_bytes(std::span(chunk)));
        if (!r) {
            co_return buf.empty() ? 0 : -1;
        }
        buf.append(chunk, *r);
    }
}

// Sends request `id` on `s` and files its outcome; false when the connection is finished.
task<bool> one_request(net::tcp_stream& s, std::string& buf, int id) {
    std::string req = "GET /work HTTP/1.1\r\nHost: x\r\nX-Id: " + std::to_string(id) + "\r\n\r\n";
    auto [n, err] = co_await s.write_all(std::string_view(req));
    std::string body;
    int got = 0;
    if (!err) {
        got = co_await read_response(s, buf, &body);
    }
    if (got == 1 && body == std::to_string(id)) {
        book->add(book->complete, id);
        co_return true;
    }
    book->add(got == 0 ? book->closed : book->partial, id);
    co_return false;
}

// One client: connects again and again, sends keep-alive requests and reads each response,
// until the server stops taking connections.
task<void> client(net::address at) {
    for (int attempt = 0; attempt < 10000; ++attempt) {
        auto s = co_await net::tcp_stream::connect(at);
        if (!s) {
            co_return; // the listeners are closed: shutdown has begun
        }
        std::string buf;
        for (int i = 0; i < 20; ++i) {
            if (bool more = co_await one_request(*s, buf, book->next_id++); !more) {
                break;
            }
        }
    }
}

int request_id(request& req) {
    std::string_view v = req.header("X-Id");
    int id = 0;
    std::from_chars(v.data(), v.data() + v.size(), id);
    return id;
}

task<void> work(request& req, response_writer& w) {
    int id = request_id(req);
    book->add(book->started, id);
    if (req.ctx().is_done()) {
        std::lock_guard g(book->m);
        ++book->started_done;
    }
    // Long enough that shutdown finds requests in flight.
    (void)co_await sleep_for(3ms);
    w.write(std::to_string(id));
}

task<void> quick(request& req, response_writer& w) {
    int id = request_id(req);
    book->add(book->started, id);
    if (req.ctx().is_done()) {
        std::lock_guard g(book->m);
        ++book->started_done;
    }
    w.write(std::to_string(id));
    co_return;
}

} // namespace

TEST_CASE("a multi-loop server shut down under load loses no accepted request") {
    // Several rounds: the race with a request arriving on a connection shutdown closes as
    // idle happens at the instant of shutdown only.
    for (int round = 0; round < 3; ++round) {
        CAPTURE(round);
        ledger c;
        book = &c;
        runtime rt(runtime::options{.loops = 2});
        http::serve_mux mux;
        mux.handle("GET /work", work);
        http::sharded_server srv(rt, mux.as_handler());
        REQUIRE(srv.listen(net::address::ipv4_loopback(0)).has_value());
        REQUIRE(srv.size() == 2);
        net::address at = *srv.local_addr();

        auto shut = rt.block_on(
            [](runtime* r, http::sharded_server* s, net::address a) -> task<result<void>> {
                auto serving = co_await spawn(s->serve());
                // Clients on both loops, so that both shards and both threads are busy.
                std::vector<join_handle<void>> clients;
                context ctx = co_await this_coro::context;
                for (int i = 0; i < 16; ++i) {
                    clients.push_back(spawn_on(r->loop(i % 2), ctx, client(a)));
                }
                (void)co_await sleep_for(200ms);
                auto [grace, cancel] = with_timeout(ctx, 20s);
                task<result<void>> down = with_context(grace, s->shutdown());
                result<void> res = co_await std::move(down);
                for (auto& h : clients) {
                    (void)co_await h;
                }
                auto served = co_await serving;
                CHECK(served.has_value());
                co_return res;
            }(&rt, &srv, at));
        CHECK(shut.has_value());
        CHECK(c.started.size() > 20);
        CHECK(c.check() == 0);
        for (std::size_t i = 0; i < srv.size(); ++i) {
            CHECK(srv.shard(i).active_connections() == 0);
        }
        book = nullptr;
    }
}

TEST_CASE("a request that reaches an idle connection as shutdown closes it is answered or "
          "cleanly closed") {
    // The request is written, and shutdown begins as soon as the write completes: the
    // server's read of it has completed in the kernel but not resumed yet, and shutdown sees
    // the connection idle. Either the request is served or its handler never begins.
    ledger c;
    book = &c;
    loop l;
    int answered = 0;
    for (int i = 0; i < 50; ++i) {
        CAPTURE(i);
        http::serve_mux mux;
        mux.handle("GET /work", quick);
        http::server srv(mux.as_handler());
        REQUIRE(srv.listen(net::address::ipv4_loopback(0)).has_value());
        net::address at = *srv.local_addr();
        answered += l.block_on([](http::server* s, net::address a) -> task<int> {
            auto serving = co_await spawn(s->serve());
            auto conn = co_await net::tcp_stream::connect(a);
            REQUIRE(conn.has_value());
            std::string buf;
            // A first request makes the connection a served, idle keep-alive one.
            bool first = co_await one_request(*conn, buf, book->next_id++);
            CHECK(first);
            (void)co_await sleep_for(1ms); // the server is back in its read
            int id = book->next_id++;
            std::string req =
                "GET /work HTTP/1.1\r\nHost: x\r\nX-Id: " + std::to_string(id) + "\r\n\r\n";
            auto [n, err] = co_await conn->write_all(std::string_view(req));
            REQUIRE_FALSE(err);
            auto down = co_await s->shutdown();
            CHECK(down.has_value());
            std::string body;
            int got = co_await read_response(*conn, buf, &body);
            if (got == 1 && body == std::to_string(id)) {
                book->add(book->complete, id);
            } else {
                book->add(got == 0 ? book->closed : book->partial, id);
            }
            auto served = co_await serving;
            CHECK(served.has_value());
            co_return got == 1 ? 1 : 0;
        }(&srv, at));
        CHECK(srv.active_connections() == 0);
    }
    MESSAGE("answered " << answered << " of 50 requests sent as shutdown began");
    CHECK(c.check() == 0);
    book = nullptr;
}

TEST_CASE("every shard serves: connections spread over the loops") {
    runtime rt(runtime::options{.loops = 2});
    static std::array<std::atomic<int>, 2> hits{};
    static runtime* the_rt = nullptr;
    the_rt = &rt;
    http::serve_mux mux;
    mux.handle("GET /", [](request&, response_writer& w) -> task<void> {
        loop* l = co_await this_coro::loop;
        for (std::size_t i = 0; i < 2; ++i) {
            if (&the_rt->loop(i) == l) {
                ++hits[i];
            }
        }
        w.write("ok");
    });
    http::sharded_server srv(rt, mux.as_handler());
    REQUIRE(srv.listen(net::address::ipv4_loopback(0)).has_value());
    net::address at = *srv.local_addr();
    auto r = rt.block_on([](http::sharded_server* s, net::address a) -> task<result<void>> {
        auto serving = co_await spawn(s->serve());
        for (int i = 0; i < 64; ++i) {
            auto c = co_await net::tcp_stream::connect(a);
            REQUIRE(c.has_value());
            (void)co_await c->write_all(
                std::string_view("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"));
            std::string buf;
            int got = co_await read_response(*c, buf);
            CHECK(got == 1);
        }
        auto res = co_await s->shutdown();
        (void)co_await serving;
        co_return res;
    }(&srv, at));
    CHECK(r.has_value());
    CHECK(hits[0] + hits[1] == 64);
    CHECK(hits[0] > 0);
    CHECK(hits[1] > 0);
}
