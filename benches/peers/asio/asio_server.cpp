// asio_server: the Boost.Asio peer of tether's echo and HTTP benchmarks, written the way an
// Asio user writes a coroutine server: co_spawn, awaitable<>, use_awaitable, one io_context
// on one thread, one coroutine per connection.
//
//   asio_server echo PORT    echoes every byte back
//   asio_server http PORT    answers every request (ended by an empty line) with Hello, World!
//
// Built twice from this file (benches/meson.build): asio_uring with BOOST_ASIO_HAS_IO_URING
// and BOOST_ASIO_DISABLE_EPOLL (every socket operation goes through io_uring), and
// asio_epoll with Asio's default reactor. Listens on 127.0.0.1:PORT.

#include "../c/canned_http.h"

#include <array>
#include <boost/asio/buffer.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace asio = boost::asio;
using asio::ip::tcp;

namespace {

canned_response response{{}, 0, 0, "asio"};

asio::awaitable<void> echo(tcp::socket s) {
    std::array<char, 16384> buf;
    for (;;) {
        std::size_t n = co_await s.async_read_some(asio::buffer(buf), asio::use_awaitable);
        co_await asio::async_write(s, asio::buffer(buf.data(), n), asio::use_awaitable);
    }
}

asio::awaitable<void> http(tcp::socket s) {
    std::array<char, 16384> buf;
    std::string out;
    unsigned state = 0;
    for (;;) {
        std::size_t n = co_await s.async_read_some(asio::buffer(buf), asio::use_awaitable);
        std::size_t requests = count_requests(buf.data(), n, &state);
        if (requests == 0) {
            continue;
        }
        canned_response_refresh(&response);
        out.clear();
        for (std::size_t i = 0; i < requests; ++i) {
            out.append(response.bytes, response.len);
        }
        co_await asio::async_write(s, asio::buffer(out), asio::use_awaitable);
    }
}

asio::awaitable<void> session(tcp::socket s, bool http_mode) {
    try {
        s.set_option(tcp::no_delay(true));
        if (http_mode) {
            co_await http(std::move(s));
        } else {
            co_await echo(std::move(s));
        }
    } catch (const std::exception&) {
        // EOF or a reset: the connection ends alone.
    }
}

asio::awaitable<void> listen(tcp::acceptor& acceptor, bool http_mode) {
    for (;;) {
        try {
            tcp::socket s = co_await acceptor.async_accept(asio::use_awaitable);
            asio::co_spawn(acceptor.get_executor(), session(std::move(s), http_mode),
                           asio::detached);
        } catch (const std::exception&) {
            // EMFILE and friends: try again.
        }
    }
}

} // namespace

int main(int argc, char** argv) {
    if (argc != 3 || (std::strcmp(argv[1], "echo") != 0 && std::strcmp(argv[1], "http") != 0)) {
        std::fprintf(stderr, "usage: asio_server {echo|http} PORT\n");
        return 2;
    }
    bool http_mode = std::strcmp(argv[1], "http") == 0;
    std::signal(SIGPIPE, SIG_IGN);
    asio::io_context io(1);
    tcp::acceptor acceptor(io);
    tcp::endpoint at(asio::ip::address_v4::loopback(),
                     static_cast<unsigned short>(std::atoi(argv[2])));
    acceptor.open(at.protocol());
    acceptor.set_option(tcp::acceptor::reuse_address(true));
    acceptor.bind(at);
    acceptor.listen(4096);
    asio::co_spawn(io, listen(acceptor, http_mode), asio::detached);
    io.run();
}
