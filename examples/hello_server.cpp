// hello_server: the reference HTTP server people try first.
//
//   hello_server [--port N] [--loops N] [--jwt-secret S]
//
// Routes:
//   GET  /          "Hello, World!"
//   GET  /whoami    the `sub` claim of a valid HS256 bearer JWT, read back from the request
//                   context (401 without one)
//   POST /echo      the request body
//   GET  /slow?ms=N sleeps N ms under the request context: a client that goes away, or the
//                   5 s timeout middleware, cancels the sleep
//
// Every request gets a request ID (X-Request-ID), an access log line and exception
// recovery. SIGINT/SIGTERM cancel the root context: the server stops accepting, lets
// in-flight requests finish (up to 10 s) and exits 0.
//
// With --loops N the server runs on N loops, N threads (default 1): each loop accepts on its
// own socket of one SO_REUSEPORT group and serves its connections (http::sharded_server);
// shutdown stops all of them and waits for every loop's requests.

#include "net/http/middleware.hpp"
#include "net/http/server.hpp"
#include "net/http/sharded_server.hpp"
#include "runtime/loop.hpp"
#include "runtime/runtime.hpp"
#include "runtime/signal.hpp"
#include "runtime/sleep.hpp"
#include "runtime/spawn.hpp"
#include "tether/tether.hpp"

#include <fmt/format.h>

#include <charconv>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <optional>
#include <string>
#include <string_view>

using namespace tether;
using namespace std::chrono_literals;

namespace {

std::optional<std::string> base64url_decode(std::string_view in) {
    std::string out;
    unsigned buf = 0;
    int bits = 0;
    for (char c : in) {
        int v;
        if (c >= 'A' && c <= 'Z') {
            v = c - 'A';
        } else if (c >= 'a' && c <= 'z') {
            v = c - 'a' + 26;
        } else if (c >= '0' && c <= '9') {
            v = c - '0' + 52;
        } else if (c == '-') {
            v = 62;
        } else if (c == '_') {
            v = 63;
        } else {
            return std::nullopt;
        }
        buf = (buf << 6) | static_cast<unsigned>(v);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out.push_back(static_cast<char>((buf >> bits) & 0xff));
        }
    }
    return out;
}

// Finds "name": in a flat JSON object and returns its raw value (a string's contents, or a
// number's digits). Enough for the claims this example reads; not a JSON parser.
std::optional<std::string_view> claim(std::string_view json, std::string_view name) {
    std::string key = fmt::format("\"{}\"", name);
    std::size_t p = json.find(key);
    if (p == std::string_view::npos) {
        return std::nullopt;
    }
    p = json.find(':', p + key.size());
    if (p == std::string_view::npos) {
        return std::nullopt;
    }
    ++p;
    while (p < json.size() && json[p] == ' ') {
        ++p;
    }
    if (p < json.size() && json[p] == '"') {
        std::size_t e = json.find('"', p + 1);
        if (e == std::string_view::npos) {
            return std::nullopt;
        }
        return json.substr(p + 1, e - p - 1);
    }
    std::size_t e = p;
    while (e < json.size() && json[e] >= '0' && json[e] <= '9') {
        ++e;
    }
    return e > p ? std::optional(json.substr(p, e - p)) : std::nullopt;
}

// Verifies an HS256 JWT signed with `secret`: the algorithm, the signature (in constant
// time) and, if present, the expiry. Returns the identity from "sub" and "role".
std::optional<http::identity> verify_jwt(std::string_view token, const std::string& secret) {
    std::size_t d1 = token.find('.');
    std::size_t d2 = d1 == std::string_view::npos ? d1 : token.find('.', d1 + 1);
    if (d2 == std::string_view::npos) {
        return std::nullopt;
    }
    auto header = base64url_decode(token.substr(0, d1));
    auto payload = base64url_decode(token.substr(d1 + 1, d2 - d1 - 1));
    auto sig = base64url_decode(token.substr(d2 + 1));
    if (!header || !payload || !sig || claim(*header, "alg") != "HS256") {
        return std::nullopt;
    }
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned mac_len = 0;
    std::string_view signing_input = token.substr(0, d2);
    if (HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()),
             reinterpret_cast<const unsigned char*>(signing_input.data()), signing_input.size(),
             mac, &mac_len) == nullptr ||
        mac_len != sig->size() || CRYPTO_memcmp(mac, sig->data(), mac_len) != 0) {
        return std::nullopt;
    }
    if (auto exp = claim(*payload, "exp")) {
        long long when = 0;
        std::from_chars(exp->data(), exp->data() + exp->size(), when);
        if (when < static_cast<long long>(std::time(nullptr))) {
            return std::nullopt;
        }
    }
    auto sub = claim(*payload, "sub");
    if (!sub) {
        return std::nullopt;
    }
    return http::identity{std::string(*sub), std::string(claim(*payload, "role").value_or(""))};
}

// The routes that never await are synchronous handlers (http::sync_handler): plain
// functions, called with no coroutine frame of their own where nothing else needs one.
void hello(http::request&, http::response_writer& w) {
    w.headers().set("Content-Type", "text/plain; charset=utf-8");
    w.write("Hello, World!");
}

void whoami(http::request& req, http::response_writer& w) {
    // The identity was put in the request's context by bearer_auth; the handler reads it
    // from the request's context, with no parameter passing.
    const http::identity* who = http::identity_of(req.ctx());
    w.headers().set("Content-Type", "text/plain; charset=utf-8");
    w.write(who->subject);
    w.write("\n");
}

task<void> echo(http::request& req, http::response_writer& w) {
    auto body = co_await req.read_all();
    if (!body) {
        w.write_header(body.error() == std::errc::message_size ? 413 : 400);
        co_return;
    }
    if (auto ct = req.header("content-type"); !ct.empty()) {
        w.headers().set("Content-Type", ct);
    }
    w.write(*body);
}

task<void> slow(http::request& req, http::response_writer& w) {
    int ms = 1000;
    std::string_view q = req.query();
    if (auto p = q.find("ms="); p != std::string_view::npos) {
        std::from_chars(q.data() + p + 3, q.data() + q.size(), ms);
    }
    auto r = co_await sleep_for(std::chrono::milliseconds(ms));
    if (!r) {
        // Canceled: the client left, or the timeout middleware fired (it answers 503).
        co_return;
    }
    w.write(fmt::format("slept {} ms\n", ms));
}

task<int> serve(runtime* rt, std::uint16_t port, std::string secret) {
    context root = co_await this_coro::context;
    auto [ctx, stop_signals] = notify_context(root, {SIGINT, SIGTERM});

    http::serve_mux mux;
    mux.handle("GET /{$}", hello);
    mux.handle("GET /whoami", http::chain(http::from_sync(whoami),
                                          {http::bearer_auth([secret](std::string_view token) {
                                              return verify_jwt(token, secret);
                                          })}));
    mux.handle("POST /echo", echo);
    mux.handle("GET /slow", slow);
    http::handler app = http::chain(mux.as_handler(), {http::request_id(), http::access_log(),
                                                       http::recover(), http::timeout(5s)});
    http::sharded_server srv(*rt, app);
    if (auto r = srv.listen(net::address::ipv4_loopback(port)); !r) {
        fmt::print(stderr, "hello_server: listen: {}\n", r.error().message());
        co_return 1;
    }
    fmt::print("listening on {}\n", *srv.local_addr());
    std::fflush(stdout);

    auto serving = co_await spawn(srv.serve());
    (void)co_await ctx.done(); // SIGINT or SIGTERM
    fmt::print(stderr, "hello_server: {}, shutting down\n", cause(ctx).message());
    auto [grace, cancel_grace] = with_timeout(without_cancel(root), 10s);
    auto r = co_await with_context(grace, srv.shutdown());
    (void)co_await serving;
    co_return r ? 0 : 1;
}

} // namespace

int main(int argc, char** argv) {
    std::uint16_t port = 8080;
    std::size_t loops = 1;
    std::string secret = "tether-example-secret";
    for (int i = 1; i < argc; ++i) {
        std::string_view a = argv[i];
        if (a == "--port" && i + 1 < argc) {
            port = static_cast<std::uint16_t>(std::atoi(argv[++i]));
        } else if (a == "--jwt-secret" && i + 1 < argc) {
            secret = argv[++i];
        } else if (a == "--loops" && i + 1 < argc && std::atoi(argv[i + 1]) > 0) {
            loops = static_cast<std::size_t>(std::atoi(argv[++i]));
        } else {
            fmt::print(stderr, "usage: hello_server [--port N] [--loops N] [--jwt-secret S]\n");
            return 2;
        }
    }
    try {
        runtime rt(runtime::options{.loops = loops});
        return rt.block_on(serve(&rt, port, secret));
    } catch (const std::exception& e) {
        fmt::print(stderr, "hello_server: {}\n", e.what());
        return 1;
    }
}
