// http_server: tether's side of the HTTP benchmark (benches/run.py): plaintext
// "Hello, World!" as the peers of benches/peers serve it.
//
//   http_server [--port N] [--middleware] [--recover] [--timeout] [--auth] [--loops N]
//       Listens on 127.0.0.1:N (0, the default, picks a port), prints "listening on ADDRESS"
//       once it accepts, and serves `GET /` with "Hello, World!" (Date, Server, Content-Type
//       and Content-Length headers) until SIGINT or SIGTERM.
//       --middleware  wraps the handler in request_id() and access_log(FILE*), the log
//                     lines written to /dev/null (formatted and written, not skipped)
//       --recover     wraps the handler in recover() (inside those, with --middleware)
//       --timeout     wraps the handler in timeout(5s) (inside all those)
//       --auth        wraps the route in bearer_auth(), whose verifier takes the token
//                     "bench" (send `Authorization: Bearer bench`; 401 without it)
//       --loops N     serves on N loops, N threads (default 1): each loop accepts on its own
//                     socket of one SO_REUSEPORT group (http::sharded_server)
//
// Requests go through a serve_mux, as an application's would.

#include "net/http/middleware.hpp"
#include "net/http/server.hpp"
#include "net/http/sharded_server.hpp"
#include "runtime/loop.hpp"
#include "runtime/runtime.hpp"
#include "runtime/signal.hpp"
#include "runtime/spawn.hpp"
#include "tether/tether.hpp"

#include <fmt/format.h>

#include <cerrno>
#include <charconv>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <optional>
#include <string_view>

using namespace tether;

namespace {

// Synchronous (http::sync_handler): it never awaits, so the server calls it directly, with
// no coroutine frame per request, as an application's handler that answers from memory
// would be written.
void hello(http::request&, http::response_writer& w) {
    w.headers().set("Server", "tether");
    w.headers().set("Content-Type", "text/plain");
    w.write("Hello, World!");
}

// Serves with `Server` (http::server on one loop, or http::sharded_server over `rt`'s
// loops) until SIGINT or SIGTERM, then shuts down with 5 s of grace.
template <class Server>
task<int> serve(Server& srv, std::uint16_t port) {
    context root = co_await this_coro::context;
    auto [ctx, stop_signals] = notify_context(root, {SIGINT, SIGTERM});
    if (auto r = srv.listen(net::address::ipv4_loopback(port)); !r) {
        fmt::print(stderr, "http_server: listen: {}\n", r.error().message());
        co_return 1;
    }
    fmt::print("listening on {}\n", *srv.local_addr());
    std::fflush(stdout);

    auto serving = co_await spawn(srv.serve());
    (void)co_await ctx.done(); // SIGINT or SIGTERM
    auto [grace, cancel_grace] = with_timeout(without_cancel(root), std::chrono::seconds(5));
    auto r = co_await with_context(grace, srv.shutdown());
    (void)co_await serving;
    co_return r ? 0 : 1;
}

int usage() {
    fmt::print(stderr,
               "usage: http_server [--port N] [--middleware] [--recover] [--timeout] [--auth] "
               "[--loops N]\n");
    return 2;
}

bool parse(std::string_view s, auto& out) {
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
    return ec == std::errc{} && end == s.data() + s.size();
}

} // namespace

int main(int argc, char** argv) {
    std::uint16_t port = 0;
    bool middleware = false;
    bool recover = false;
    bool timeout = false;
    bool auth = false;
    std::size_t loops = 1;
    for (int i = 1; i < argc; ++i) {
        std::string_view a = argv[i];
        if (a == "--middleware") {
            middleware = true;
        } else if (a == "--recover") {
            recover = true;
        } else if (a == "--timeout") {
            timeout = true;
        } else if (a == "--auth") {
            auth = true;
        } else if (a == "--port" && i + 1 < argc) {
            if (!parse(argv[++i], port)) {
                return usage();
            }
        } else if (a == "--loops" && i + 1 < argc) {
            if (!parse(argv[++i], loops) || loops == 0) {
                return usage();
            }
        } else {
            return usage();
        }
    }
    // The access log's sink: a buffered FILE on /dev/null, so that each line is formatted
    // and written as a real log's would be, minus the disk.
    std::FILE* devnull = std::fopen("/dev/null", "w");
    if (devnull == nullptr) {
        fmt::print(stderr, "http_server: /dev/null: {}\n", std::strerror(errno));
        return 1;
    }
    http::serve_mux mux;
    if (auth) {
        mux.handle(
            "GET /{$}",
            http::chain(http::from_sync(hello), {http::bearer_auth([](std::string_view token) {
                            return token == "bench"
                                       ? std::optional<http::identity>(http::identity{"bench", {}})
                                       : std::nullopt;
                        })}));
    } else {
        mux.handle("GET /{$}", hello);
    }
    http::handler app = mux.as_handler();
    if (timeout) {
        app = http::chain(app, {http::timeout(std::chrono::seconds(5))});
    }
    if (recover) {
        app = http::chain(app, {http::recover()});
    }
    if (middleware) {
        // Lines gathered per connection turn, one fwrite each (fwrite locks the FILE: safe
        // from every loop's thread).
        app = http::chain(app, {http::request_id(), http::access_log(devnull)});
    }
    int rc = 0;
    if (loops == 1) {
        http::server srv(app);
        rc = tether::run(serve(srv, port));
    } else {
        runtime rt(runtime::options{.loops = loops});
        http::sharded_server srv(rt, app);
        rc = rt.block_on(serve(srv, port));
    }
    std::fclose(devnull);
    return rc;
}
