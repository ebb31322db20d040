// Runs examples/echo_server as a user would: starts it with --port 0, reads the address it
// prints, echoes through it over plain sockets (many connections at once, small and large
// messages, half-close), then kills it. Also runs it without arguments (its self-check, what
// `./dev bench` runs). The binary's path comes in ECHO_SERVER.

#include <doctest/doctest.h>

#include <arpa/inet.h>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <netinet/in.h>
#include <poll.h>
#include <spawn.h>
#include <string>
#include <sys/socket.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <utility>
#include <vector>

extern char** environ;

namespace {

// The server under test; killed and reaped if a check fails before it exits.
struct child {
    pid_t pid = -1;
    int out = -1;
    child() = default;
    child(const child&) = delete;
    child& operator=(const child&) = delete;
    child(child&& o) noexcept : pid(std::exchange(o.pid, -1)), out(std::exchange(o.out, -1)) {}
    ~child() {
        if (pid > 0) {
            kill(pid, SIGKILL);
            waitpid(pid, nullptr, 0);
        }
        if (out >= 0) {
            close(out);
        }
    }
    // Waits for the process to end and returns its status.
    int wait() {
        int status = 0;
        REQUIRE(waitpid(pid, &status, 0) == pid);
        pid = -1;
        return status;
    }
};

child start(const char* path, std::vector<std::string> args) {
    int fds[2];
    REQUIRE(pipe(fds) == 0);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
    posix_spawn_file_actions_addclose(&fa, fds[0]);
    std::vector<char*> argv{const_cast<char*>(path)};
    for (std::string& a : args) {
        argv.push_back(a.data());
    }
    argv.push_back(nullptr);
    child c;
    REQUIRE(posix_spawn(&c.pid, path, &fa, nullptr, argv.data(), environ) == 0);
    posix_spawn_file_actions_destroy(&fa);
    close(fds[1]);
    c.out = fds[0];
    return c;
}

std::string read_line(const child& c) {
    std::string line;
    char ch;
    pollfd p{c.out, POLLIN, 0};
    while (line.find('\n') == std::string::npos) {
        REQUIRE(poll(&p, 1, 30000) == 1);
        REQUIRE(read(c.out, &ch, 1) == 1);
        line += ch;
    }
    return line;
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

} // namespace

TEST_CASE("echo_server echoes every byte on every connection until the peer closes") {
    const char* path = std::getenv("ECHO_SERVER");
    if (path == nullptr) {
        MESSAGE("ECHO_SERVER is not set: nothing to check");
        return;
    }
    child c = start(path, {"--port", "0"});
    std::string line = read_line(c);
    REQUIRE(line.rfind("listening on 127.0.0.1:", 0) == 0);
    int port = std::atoi(line.c_str() + line.rfind(':') + 1);
    REQUIRE(port > 0);

    // Many connections open at once, each echoing a few messages.
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
    REQUIRE(kill(c.pid, SIGTERM) == 0);
    int status = c.wait();
    CHECK(WIFSIGNALED(status));
}

TEST_CASE("echo_server --loops 2 echoes on every connection, whichever loop took it") {
    const char* path = std::getenv("ECHO_SERVER");
    if (path == nullptr) {
        MESSAGE("ECHO_SERVER is not set: nothing to check");
        return;
    }
    child c = start(path, {"--port", "0", "--loops", "2"});
    std::string line = read_line(c);
    REQUIRE(line.rfind("listening on 127.0.0.1:", 0) == 0);
    int port = std::atoi(line.c_str() + line.rfind(':') + 1);
    REQUIRE(port > 0);
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
    for (int fd : conns) {
        close(fd);
    }
    REQUIRE(kill(c.pid, SIGTERM) == 0);
    int status = c.wait();
    CHECK(WIFSIGNALED(status));
}

TEST_CASE("echo_server without arguments echoes through itself and exits 0") {
    const char* path = std::getenv("ECHO_SERVER");
    if (path == nullptr) {
        MESSAGE("ECHO_SERVER is not set: nothing to check");
        return;
    }
    child c = start(path, {});
    CHECK(read_line(c).rfind("listening on 127.0.0.1:", 0) == 0);
    CHECK(read_line(c) == "echoed: hello, tether\n");
    int status = c.wait();
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
}
