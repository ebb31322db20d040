// Runs examples/hello_server as a user would: starts it on port 0, reads the address it
// prints, exercises every route over plain sockets, then sends SIGTERM and expects a clean
// exit (graceful shutdown). The binary's path comes in HELLO_SERVER.

#include "child_process.hpp"

#include <doctest/doctest.h>

#include <arpa/inet.h>
#include <csignal>
#include <cstdlib>
#include <netinet/in.h>
#include <poll.h>
#include <string>
#include <sys/socket.h>
#include <unistd.h>

namespace {

// Returns the port the server says it listens on.
int port_of(check::child_process& c) {
    std::string line;
    REQUIRE(c.next_line(line));
    REQUIRE(line.rfind("listening on 127.0.0.1:", 0) == 0);
    return std::atoi(line.c_str() + line.rfind(':') + 1);
}

std::string request(int port, const std::string& raw) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    REQUIRE(fd >= 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    REQUIRE(write(fd, raw.data(), raw.size()) == static_cast<ssize_t>(raw.size()));
    std::string got;
    char buf[4096];
    pollfd p{fd, POLLIN, 0};
    while (poll(&p, 1, 30000) == 1) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n <= 0) {
            break;
        }
        got.append(buf, static_cast<std::size_t>(n));
    }
    close(fd);
    return got;
}

// An HS256 token for {"sub":"ada","role":"admin"} signed with "tether-example-secret".
constexpr const char* token =
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhZGEiLCJyb2xlIjoiYWRtaW4ifQ."
    "VCV0Am7wtlca7Giz93-YLRR5kxd5yHMFYo19cdIarqg";

void check_server(const char* loops) {
    const char* path = std::getenv("HELLO_SERVER");
    REQUIRE(path != nullptr);
    check::child_process c(path, {"--port", "0", "--loops", loops});
    int port = port_of(c);

    std::string hello = request(port, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    CHECK(hello.find("HTTP/1.1 200 OK") == 0);
    CHECK(hello.find("X-Request-ID: ") != std::string::npos);
    CHECK(hello.find("\r\n\r\nHello, World!") != std::string::npos);

    std::string who =
        request(port, std::string("GET /whoami HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ") +
                          token + "\r\nConnection: close\r\n\r\n");
    CHECK(who.find("\r\n\r\nada\n") != std::string::npos);
    std::string anon =
        request(port, "GET /whoami HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    CHECK(anon.find("HTTP/1.1 401") == 0);

    std::string echo = request(
        port,
        "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello");
    CHECK(echo.find("\r\n\r\nhello") != std::string::npos);

    std::string slow =
        request(port, "GET /slow?ms=20 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    CHECK(slow.find("slept 20 ms") != std::string::npos);

    std::string bad = request(port, "GET / HTTP/1.1\r\nHost: x\r\nBad Header: 1\r\n\r\n");
    CHECK(bad.find("HTTP/1.1 400") == 0);
    std::string again = request(port, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    CHECK(again.find("HTTP/1.1 200 OK") == 0);
    // Connections from many source ports: with several loops, the kernel spreads them.
    for (int i = 0; i < 20; ++i) {
        std::string more = request(port, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        CHECK(more.find("\r\n\r\nHello, World!") != std::string::npos);
    }

    c.signal(SIGTERM);
    CHECK(c.wait() == 0); // exited by itself, with 0
}

} // namespace

TEST_CASE("hello_server serves its routes and shuts down cleanly on SIGTERM") {
    check_server("1");
}

TEST_CASE("hello_server --loops 2 serves on two loops and shuts both down on SIGTERM") {
    check_server("2");
}
