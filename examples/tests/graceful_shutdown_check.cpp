// Runs examples/graceful_shutdown (its path comes in GRACEFUL_SHUTDOWN) as a user would: a
// request in flight when SIGTERM arrives still gets its answer, an idle connection is
// closed, new connections are refused, and the process exits 0; past the grace period the
// requests left are canceled and it exits 1.

#include "child_process.hpp"

#include <doctest/doctest.h>

#include <arpa/inet.h>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <netinet/in.h>
#include <poll.h>
#include <string>
#include <sys/socket.h>
#include <thread>
#include <unistd.h>

namespace {

const char* server_path() {
    const char* path = std::getenv("GRACEFUL_SHUTDOWN");
    REQUIRE(path != nullptr);
    return path;
}

int port_of(check::child_process& c) {
    std::string line = c.wait_for("listening on 127.0.0.1:");
    REQUIRE(!line.empty());
    return std::atoi(line.c_str() + line.rfind(':') + 1);
}

// Connects to 127.0.0.1:port; returns the socket, or -errno.
int dial(int port) {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(fd >= 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
        int e = errno;
        ::close(fd);
        return -e;
    }
    return fd;
}

void send_text(int fd, const std::string& s) {
    REQUIRE(::write(fd, s.data(), s.size()) == static_cast<ssize_t>(s.size()));
}

// Reads until EOF (or 30 s without data).
std::string read_all(int fd) {
    std::string got;
    char buf[4096];
    pollfd p{fd, POLLIN, 0};
    while (::poll(&p, 1, 30000) == 1) {
        ssize_t n = ::read(fd, buf, sizeof buf);
        if (n <= 0) {
            break;
        }
        got.append(buf, static_cast<std::size_t>(n));
    }
    return got;
}

} // namespace

TEST_CASE("SIGTERM: the request in flight finishes, idle and new connections don't, exit 0") {
    check::child_process c(server_path(), {"--port", "0"});
    int port = port_of(c);

    int idle = dial(port); // connected, never sends a request
    REQUIRE(idle >= 0);
    int busy = dial(port);
    REQUIRE(busy >= 0);
    send_text(busy, "GET /work?ms=3000 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    REQUIRE(c.wait_for("working 3000 ms") == "working 3000 ms");

    c.signal(SIGTERM);
    std::string line = c.wait_for("terminated signal received: shutting down");
    CHECK(line == "terminated signal received: shutting down, 1 request(s) in flight");

    // New connections are refused once the listener is closed (a connect racing the close
    // may still land in the old backlog, and is then reset).
    bool refused = false;
    for (int i = 0; i < 1000 && !refused; ++i) {
        int fd = dial(port);
        if (fd == -ECONNREFUSED) {
            refused = true;
        } else {
            if (fd >= 0) {
                ::close(fd);
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
    }
    CHECK(refused);

    // The idle connection is closed without a response.
    CHECK(read_all(idle).empty());
    ::close(idle);

    // The request in flight is answered in full.
    std::string answer = read_all(busy);
    ::close(busy);
    CHECK(answer.rfind("HTTP/1.1 200 OK", 0) == 0);
    CHECK(answer.find("\r\n\r\nworked 3000 ms\n") != std::string::npos);

    int status = c.wait();
    INFO(c.output());
    CHECK(status == 0);
    CHECK(c.output().find("shutdown complete\n") != std::string::npos);
}

TEST_CASE("past the grace period the requests left are canceled and the exit status is 1") {
    check::child_process c(server_path(), {"--port", "0", "--grace", "200"});
    int port = port_of(c);
    int busy = dial(port);
    REQUIRE(busy >= 0);
    send_text(busy, "GET /work?ms=600000 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    REQUIRE(c.wait_for("working 600000 ms") == "working 600000 ms");
    auto t0 = std::chrono::steady_clock::now();
    c.signal(SIGTERM);
    int status = c.wait();
    auto took = std::chrono::steady_clock::now() - t0;
    INFO(c.output());
    CHECK(status == 1);
    CHECK(took < std::chrono::seconds(60));
    CHECK(c.output().find("request canceled: context canceled\n") != std::string::npos);
    CHECK(c.output().find("grace period over (context deadline exceeded)") != std::string::npos);
    ::close(busy);
}

TEST_CASE("the demo (no arguments) signals itself and checks the same, then exits 0") {
    check::child_process c(server_path(), {});
    int status = c.wait();
    INFO(c.output());
    CHECK(status == 0);
    CHECK(c.output().find("demo: a new connection: refused\n") != std::string::npos);
    CHECK(c.output().find("demo: the request in flight: 200 \"worked 500 ms\"\n") !=
          std::string::npos);
}
