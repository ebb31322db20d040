// graceful_shutdown: an HTTP server that drains when SIGTERM (or SIGINT) tells it to stop.
//
//   graceful_shutdown --port N [--grace MS]
//       Serves on 127.0.0.1:N (0 picks a port) until SIGTERM or SIGINT.
//   graceful_shutdown
//       A demo that ends by itself (what `./dev bench` runs): serves on a free port, sends a
//       request to itself, sends itself SIGTERM while that request is in flight, and checks
//       that the request still gets its answer and that a new connection is refused.
//
// Routes: GET / answers "ok"; GET /work?ms=N works for N ms (a sleep under the request's
// context), then answers "worked N ms".
//
// The signal cancels the program's root context (notify_context: Go's
// signal.NotifyContext). The server does not run under that context: a signal must not
// cancel the requests in flight, only start the shutdown, as in Go:
//
//     ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
//     go srv.ListenAndServe()
//     <-ctx.Done()
//     srv.Shutdown(timeoutCtx)
//
// `server::shutdown()` then closes the listener (new connections are refused), closes idle
// connections, lets the requests in flight finish and waits for every connection to end;
// the process exits 0. If requests are still running --grace ms (default 10000) after the
// signal, their contexts are canceled (their sleeps return errc::canceled) and the process
// exits 1.
//
// It prints one line per event on stdout, which examples/tests/graceful_shutdown_check.cpp
// reads:
//
//   listening on 127.0.0.1:40123
//   working 3000 ms
//   terminated signal received: shutting down, 1 request(s) in flight
//   worked 3000 ms
//   shutdown complete

#include "context/with_deadline.hpp"
#include "context/without_cancel.hpp"
#include "net/address.hpp"
#include "net/http/client.hpp"
#include "net/http/server.hpp"
#include "net/tcp_stream.hpp"
#include "runtime/loop.hpp"
#include "runtime/signal.hpp"
#include "runtime/sleep.hpp"
#include "runtime/spawn.hpp"
#include "runtime/task.hpp"

#include <fmt/format.h>

#include <charconv>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>
#include <unistd.h>

using namespace tether;
using namespace std::chrono_literals;
using std::chrono::milliseconds;

namespace {

// Everything runs on the loop's one thread: plain counters are enough.
int in_flight = 0;
bool shutting_down = false;

template <class... A>
void say(fmt::format_string<A...> f, A&&... a) {
    fmt::print(f, std::forward<A>(a)...);
    fmt::print("\n");
    std::fflush(stdout);
}

task<void> hello(http::request&, http::response_writer& w) {
    w.write("ok\n");
    co_return;
}

task<void> work(http::request& req, http::response_writer& w) {
    int ms = 100;
    std::string_view q = req.query();
    if (auto p = q.find("ms="); p != std::string_view::npos) {
        std::from_chars(q.data() + p + 3, q.data() + q.size(), ms);
    }
    say("working {} ms", ms);
    ++in_flight;
    result<void> slept = co_await sleep_for(milliseconds(ms));
    --in_flight;
    if (!slept) {
        // The grace period ended: shutdown() canceled every request's context.
        say("request canceled: {}", slept.error().message());
        w.write_header(503);
        co_return;
    }
    say("worked {} ms", ms);
    w.write(fmt::format("worked {} ms\n", ms));
}

// The demo's client: one request in flight across the signal, then one connection too late.
task<bool> demo_client(net::address at) {
    http::client client;
    auto get = client.get(fmt::format("http://{}/work?ms=500", at));
    join_handle<result<http::response>> slow = co_await spawn(std::move(get));
    while (in_flight == 0) {
        (void)co_await sleep_for(1ms);
    }
    say("demo: sending SIGTERM to myself");
    ::kill(::getpid(), SIGTERM);
    while (!shutting_down) {
        (void)co_await sleep_for(1ms);
    }
    // The listener is closed; the kernel stops listening once the listener's multishot
    // accept is canceled, a moment later. A connect that races it lands in the old backlog
    // and is reset when the socket goes, so try again until it is refused.
    bool refused = false;
    int tries = 0;
    while (!refused && tries++ < 1000) {
        result<net::tcp_stream> late = co_await net::tcp_stream::connect(at);
        refused = !late && late.error() == std::errc::connection_refused;
        if (!refused) {
            (void)co_await sleep_for(5ms);
        }
    }
    say("demo: a new connection: {}", refused ? "refused" : "accepted");
    result<result<http::response>> r = co_await slow;
    bool answered = r && *r && (*r)->status == 200 && (*r)->body == "worked 500 ms\n";
    say("demo: the request in flight: {}",
        answered ? fmt::format("{} \"worked 500 ms\"", (*r)->status) : std::string("lost"));
    co_return refused&& answered;
}

task<int> serve(std::optional<std::uint16_t> port, milliseconds grace) {
    context root = co_await this_coro::context;
    // Canceled by SIGTERM or SIGINT (or when `stop_signals` is called or destroyed).
    auto [ctx, stop_signals] = notify_context(root, {SIGINT, SIGTERM});

    http::serve_mux mux;
    mux.handle("GET /{$}", hello);
    mux.handle("GET /work", work);
    http::server srv(mux.as_handler());
    if (auto r = srv.listen(net::address::ipv4_loopback(port.value_or(0))); !r) {
        fmt::print(stderr, "graceful_shutdown: listen: {}\n", r.error().message());
        co_return 1;
    }
    net::address at = *srv.local_addr();
    say("listening on {}", at);

    // Under root, not ctx: the requests outlive the signal.
    join_handle<result<void>> serving = co_await spawn(srv.serve());
    join_handle<bool> demo;
    if (!port) {
        demo = co_await spawn(demo_client(at));
    }

    (void)co_await ctx.done();
    stop_signals(); // a second Ctrl-C now ends the process at once, as in Go
    say("{}: shutting down, {} request(s) in flight", cause(ctx).message(), in_flight);
    shutting_down = true;

    auto [grace_ctx, cancel_grace] = with_timeout(root, grace);
    auto stopping = with_context(grace_ctx, srv.shutdown());
    result<void> stopped = co_await std::move(stopping);
    (void)co_await serving;
    if (!stopped) {
        say("grace period over ({}): the requests left were canceled", stopped.error().message());
    }
    bool demo_ok = true;
    if (!port) {
        result<bool> d = co_await demo;
        demo_ok = d && *d;
        say("demo: {}", demo_ok ? "ok" : "FAILED");
    }
    say("shutdown complete");
    co_return stopped&& demo_ok ? EXIT_SUCCESS : EXIT_FAILURE;
}

} // namespace

int main(int argc, char** argv) {
    std::optional<std::uint16_t> port;
    milliseconds grace = 10s;
    for (int i = 1; i < argc; ++i) {
        std::string_view a = argv[i];
        if (a == "--port" && i + 1 < argc) {
            port = static_cast<std::uint16_t>(std::atoi(argv[++i]));
        } else if (a == "--grace" && i + 1 < argc) {
            grace = milliseconds(std::atoi(argv[++i]));
        } else {
            fmt::print(stderr, "usage: graceful_shutdown [--port N [--grace MS]]\n");
            return 2;
        }
    }
    return tether::run(serve(port, grace));
}
