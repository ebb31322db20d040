// echo_server: a TCP echo server on tether.
//
//   echo_server --port N [--host ADDR] [--loops N]
//       Listens on ADDR:N (127.0.0.1 by default; port 0 lets the kernel choose), prints
//       "listening on ADDRESS" once it accepts, and echoes every byte of every connection
//       back until the peer closes. Runs until killed. With --loops N (N > 1) it runs N
//       loops on N threads, each accepting on its own socket of one SO_REUSEPORT group and
//       serving the connections it accepts.
//   echo_server
//       The same on a free port, then connects to itself, echoes one message, prints it and
//       exits: what `./dev bench` runs.
//
// Each connection is a task of the accept loop's task_group; a connection that errs ends alone.
// The echo loop receives with `receive()`: buffers come from the loop's provided-buffer ring
// only when bytes arrive.

#include "net/recv_buffer.hpp"
#include "net/tcp_listener.hpp"
#include "net/tcp_stream.hpp"
#include "runtime/loop.hpp"
#include "runtime/runtime.hpp"
#include "runtime/spawn.hpp"
#include "runtime/task_group.hpp"

#include <fmt/format.h>

#include <array>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <span>
#include <string_view>
#include <vector>

using namespace tether;
using namespace tether::net;

namespace {

// Receives into buffers lent by the loop's pool and sends them straight back: a connection
// waiting for its peer holds no buffer, and no byte is copied in user space.
task<void> echo(tcp_stream conn) {
    // A local, not the parameter: the connection closes as the task ends, whoever keeps
    // its frame.
    tcp_stream s = std::move(conn);
    (void)s.set_nodelay(true);
    for (;;) {
        result<recv_buffer> b = co_await s.receive();
        if (!b) {
            co_return; // EOF, a reset, or the server's context ended
        }
        if (io_result w = co_await s.write_all(b->data()); !w) {
            co_return;
        }
    }
}

// Lifetime: `lis` is borrowed until the task completes (the listener is closed to end it).
task<void> serve(const tcp_listener* lis) {
    task_group conns = co_await task_group::make();
    for (;;) {
        result<tcp_stream> s = co_await lis->accept();
        if (!s) {
            if (s.error() == io_errc::closed || s.error() == errc::canceled) {
                break;
            }
            continue; // one connection failed; the listener goes on
        }
        if (result<void> r = co_await conns.spawn(echo(std::move(*s))); !r) {
            break; // the server's context ended
        }
    }
    (void)co_await conns.wait();
}

task<int> demo() {
    result<tcp_listener> lis = tcp_listener::bind(address::ipv4_loopback(0));
    if (!lis) {
        fmt::print(stderr, "echo_server: {}\n", lis.error().message());
        co_return 1;
    }
    fmt::print("listening on {}\n", *lis->local_addr());
    join_handle<void> server = co_await spawn(serve(&*lis));
    result<tcp_stream> c = co_await tcp_stream::connect(*lis->local_addr());
    if (!c) {
        fmt::print(stderr, "echo_server: connect: {}\n", c.error().message());
        co_return 1;
    }
    std::string_view msg = "hello, tether";
    std::array<char, 13> back{};
    io_result w = co_await c->write_all(msg);
    io_result r = co_await c->read_exact(std::as_writable_bytes(std::span(back)));
    if (!w || !r) {
        fmt::print(stderr, "echo_server: echo failed: {}\n", (w ? r.error : w.error).message());
        co_return 1;
    }
    fmt::print("echoed: {}\n", std::string_view(back.data(), back.size()));
    (void)c->close();
    lis->close();
    (void)co_await server;
    co_return 0;
}

task<int> run_server(address at) {
    result<tcp_listener> lis = tcp_listener::bind(at);
    if (!lis) {
        fmt::print(stderr, "echo_server: listen on {}: {}\n", at, lis.error().message());
        co_return 1;
    }
    fmt::print("listening on {}\n", *lis->local_addr());
    std::fflush(stdout);
    co_await serve(&*lis);
    co_return 0;
}

// One accept loop per loop of `rt`, each on its own listener of one SO_REUSEPORT group.
task<int> run_sharded(runtime* rt, address at) {
    result<std::vector<tcp_listener>> group = tcp_listener::bind_group(at, rt->size());
    if (!group) {
        fmt::print(stderr, "echo_server: listen on {}: {}\n", at, group.error().message());
        co_return 1;
    }
    fmt::print("listening on {}\n", *group->front().local_addr());
    std::fflush(stdout);
    context ctx = co_await this_coro::context;
    std::vector<join_handle<void>> shards;
    for (std::size_t i = 0; i < rt->size(); ++i) {
        shards.push_back(spawn_on(rt->loop(i), ctx, serve(&(*group)[i])));
    }
    for (join_handle<void>& h : shards) {
        (void)co_await h;
    }
    co_return 0;
}

int usage() {
    fmt::print(stderr, "usage: echo_server [--port N] [--host ADDR] [--loops N]\n");
    return 2;
}

} // namespace

int main(int argc, char** argv) {
    if (argc == 1) {
        return tether::run(demo());
    }
    std::uint16_t port = 0;
    std::size_t loops = 1;
    std::string host = "127.0.0.1";
    bool have_port = false;
    for (int i = 1; i < argc; ++i) {
        std::string_view arg = argv[i];
        if (i + 1 >= argc) {
            return usage();
        }
        std::string_view value = argv[++i];
        if (arg == "--port") {
            auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), port);
            if (ec != std::errc{} || end != value.data() + value.size()) {
                return usage();
            }
            have_port = true;
        } else if (arg == "--host") {
            host = value;
        } else if (arg == "--loops") {
            auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), loops);
            if (ec != std::errc{} || end != value.data() + value.size() || loops == 0) {
                return usage();
            }
        } else {
            return usage();
        }
    }
    std::string text = host.find(':') != std::string::npos ? fmt::format("[{}]:{}", host, port)
                                                           : fmt::format("{}:{}", host, port);
    result<address> at = address::parse(text);
    if (!have_port || !at) {
        return usage();
    }
    if (loops > 1) {
        runtime rt(runtime::options{.loops = loops});
        return rt.block_on(run_sharded(&rt, *at));
    }
    return tether::run(run_server(*at));
}
