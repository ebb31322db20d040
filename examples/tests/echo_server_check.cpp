// Runs examples/echo_server as a user would: starts it with --port 0, reads the address it
// prints, echoes through it over plain sockets (many connections at once, small and large
// messages, half-close), then kills it. Also runs it without arguments (its self-check, what
// `./dev bench` runs). The binary's path comes in ECHO_SERVER.

#include "child_process.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <arpa/inet.h>
#include <csignal>
#include <cstdlib>
#include <netinet/in.h>
#include <poll.h>
#include <string>
#include <sys/socket.h>
#include <thread>
#include <unistd.h>
#include <vector>

namespace {

const char* echo_server_path() {
    const char* path = std::getenv("ECHO_SERVER");
    REQUIRE(path != nullptr);
    return path;
}

// Returns the port the server says it listens on.
int port_of(check::child_process& c) {
    std::string line;
    REQUIRE(c.next_line(line));
    REQUIRE(line.rfind("listening on 127.0.0.1:", 0) == 0);
    int port = std::atoi(line.c_str() + line.rfind(':') + 1);
    REQUIRE(port > 0);
    return port;
}

int connect_to(int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    REQUIRE(fd >= 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    return fd;
}

bool write_all(int fd, const std::string& s) {
    std::size_t off = 0;
    while (off < s.size()) {
        ssize_t n = send(fd, s.data() + off, s.size() - off, MSG_NOSIGNAL);
        if (n <= 0) {
            return false;
        }
        off += static_cast<std::size_t>(n);
    }
    return true;
}

std::string read_n(int fd, std::size_t n) {
    std::string got;
    char buf[65536];
    pollfd p{fd, POLLIN, 0};
    while (got.size() < n && poll(&p, 1, 30000) == 1) {
        ssize_t r = recv(fd, buf, std::min(sizeof buf, n - got.size()), 0);
        if (r <= 0) {
            break;
        }
        got.append(buf, static_cast<std::size_t>(r));
    }
    return got;
}

std::string pattern(std::size_t n, int seed) {
    std::string s(n, '\0');
    for (std::size_t i = 0; i < n; ++i) {
        s[i] = static_cast<char>((i * 131 + static_cast<std::size_t>(seed) * 7) % 251);
    }
    return s;
}

// Opens 50 connections to `port` and echoes three rounds of messages of a different size on
// each, all connections written before any is read; returns the connections, still open.
std::vector<int> echo_on_many(int port) {
    std::vector<int> conns;
    for (int i = 0; i < 50; ++i) {
        conns.push_back(connect_to(port));
    }
    for (int round = 0; round < 3; ++round) {
        for (std::size_t i = 0; i < conns.size(); ++i) {
            REQUIRE(write_all(conns[i], pattern(100 + i, round)));
        }
        for (std::size_t i = 0; i < conns.size(); ++i) {
            CHECK(read_n(conns[i], 100 + i) == pattern(100 + i, round));
        }
    }
    return conns;
}

} // namespace

TEST_CASE("echo_server echoes every byte on every connection until the peer closes") {
    check::child_process c(echo_server_path(), {"--port", "0"});
    std::vector<int> conns = echo_on_many(port_of(c));

    // A large message in both directions at once: written by a thread while this one reads.
    std::string big = pattern(8 << 20, 9);
    std::thread writer([&] { CHECK(write_all(conns[0], big)); });
    std::string back = read_n(conns[0], big.size());
    writer.join();
    CHECK(back.size() == big.size());
    CHECK(back == big);

    // A half-close: the server sees EOF after the last bytes, echoes them, and closes.
    REQUIRE(write_all(conns[1], "last words"));
    REQUIRE(shutdown(conns[1], SHUT_WR) == 0);
    CHECK(read_n(conns[1], 10) == "last words");
    char b;
    pollfd p{conns[1], POLLIN, 0};
    REQUIRE(poll(&p, 1, 30000) == 1);
    CHECK(recv(conns[1], &b, 1, 0) == 0);

    for (int fd : conns) {
        close(fd);
    }
    c.signal(SIGTERM);
    CHECK(c.wait() == -1); // killed by the signal: the example has no graceful shutdown
}

TEST_CASE("echo_server --loops 2 echoes on every connection, whichever loop took it") {
    check::child_process c(echo_server_path(), {"--port", "0", "--loops", "2"});
    for (int fd : echo_on_many(port_of(c))) {
        close(fd);
    }
    c.signal(SIGTERM);
    CHECK(c.wait() == -1);
}

TEST_CASE("echo_server without arguments echoes through itself and exits 0") {
    check::child_process c(echo_server_path(), {});
    std::string line;
    REQUIRE(c.next_line(line));
    CHECK(line.rfind("listening on 127.0.0.1:", 0) == 0);
    REQUIRE(c.next_line(line));
    CHECK(line == "echoed: hello, tether");
    CHECK(c.wait() == 0);
}
