// echo_bench: tether's echo server against the reference servers of ../shared/peers, under
// one load client.
//
// Each server runs as its own process pinned to CPU 0; the load client (this process, one
// epoll thread, as ../shared/peers/src/echo_load.c) is pinned to CPU 1. Scenarios:
//   64 connections ping-ponging 64 B, then 1 KiB: round trips per second, latency, and the
//   server's CPU per round trip (the load client saturates its core first on a two-core
//   machine, so CPU per request is what separates the fast servers);
//   10,000 idle connections: the server's RSS growth per connection.
// Servers alternate round by round (A B C A B C ...) so that drift hits all alike; the table
// shows medians. tether's server is this program re-run with --serve (the same code as
// examples/echo_server). Peers are found built by ../shared/peers/run.sh build; raw-uring and
// raw-epoll are compiled from their sources if they are not.
//
//   echo_bench [--seconds S] [--rounds N] [--conns N] [--idle N] [--peers DIR] [--only a,b]
//   echo_bench --quick             1 s per run, 1 round, 2,000 idle connections
//   echo_bench --serve             (internal) run tether's echo server, print its port

#include "net/recv_buffer.hpp"
#include "net/tcp_listener.hpp"
#include "net/tcp_stream.hpp"
#include "runtime/loop.hpp"
#include "runtime/task_group.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <arpa/inet.h>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <map>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <optional>
#include <poll.h>
#include <sched.h>
#include <string>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace {

// ---- tether's server ---------------------------------------------------------------------

using namespace tether;
using namespace tether::net;

task<void> echo(tcp_stream conn) {
    tcp_stream s = std::move(conn); // closes when the peer is done, not when the frame goes
    (void)s.set_nodelay(true);
    for (;;) {
        result<recv_buffer> b = co_await s.receive();
        if (!b) {
            co_return;
        }
        if (io_result w = co_await s.write_all(b->data()); !w) {
            co_return;
        }
    }
}

task<void> serve(const tcp_listener* lis) {
    task_group conns = co_await task_group::make();
    for (;;) {
        result<tcp_stream> s = co_await lis->accept();
        if (s && !co_await conns.spawn(echo(std::move(*s)))) {
            break;
        }
    }
    (void)co_await conns.wait();
}

int run_tether_server() {
    loop l;
    result<tcp_listener> lis = tcp_listener::bind(address::ipv4_loopback(0));
    if (!lis) {
        fmt::print(stderr, "echo_bench --serve: {}\n", lis.error().message());
        return 1;
    }
    fmt::print("{}\n", lis->local_addr()->port());
    std::fflush(stdout);
    l.block_on(serve(&*lis));
    return 0;
}

// ---- processes ---------------------------------------------------------------------------

std::uint64_t now_ns() {
    return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                          std::chrono::steady_clock::now().time_since_epoch())
                                          .count());
}

void pin_to(int cpu) {
    if (static_cast<int>(std::thread::hardware_concurrency()) <= cpu) {
        return;
    }
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    sched_setaffinity(0, sizeof set, &set);
}

struct server_proc {
    pid_t pid = -1;
    int port = 0;
};

// Starts `argv` in its own process group on CPU 0. If `port_from_stdout`, reads the port it
// prints; else it must listen on `port`.
std::optional<server_proc> start_server(const std::vector<std::string>& argv,
                                        const std::vector<std::string>& env, int port,
                                        bool port_from_stdout) {
    int out[2];
    if (::pipe2(out, O_CLOEXEC) < 0) {
        return std::nullopt;
    }
    pid_t pid = ::fork();
    if (pid < 0) {
        return std::nullopt;
    }
    if (pid == 0) {
        ::setpgid(0, 0);
        pin_to(0);
        ::dup2(out[1], STDOUT_FILENO);
        int devnull = ::open("/dev/null", O_RDWR);
        ::dup2(devnull, STDIN_FILENO);
        ::dup2(devnull, STDERR_FILENO); // the peers' banners would cut the tables
        for (const std::string& e : env) {
            ::putenv(const_cast<char*>(e.c_str()));
        }
        std::vector<char*> args;
        for (const std::string& a : argv) {
            args.push_back(const_cast<char*>(a.c_str()));
        }
        args.push_back(nullptr);
        ::execv(args[0], args.data());
        ::_exit(127);
    }
    ::close(out[1]);
    server_proc p{pid, port};
    if (port_from_stdout) {
        std::string line;
        char ch;
        pollfd pfd{out[0], POLLIN, 0};
        while (line.find('\n') == std::string::npos && ::poll(&pfd, 1, 10000) == 1 &&
               ::read(out[0], &ch, 1) == 1) {
            line += ch;
        }
        p.port = std::atoi(line.c_str());
    }
    ::close(out[0]);
    // Ready once the port accepts.
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sa.sin_port = htons(static_cast<std::uint16_t>(p.port));
    for (int i = 0; i < 500 && p.port > 0; ++i) {
        int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0;
        ::close(fd);
        if (ok) {
            return p;
        }
        if (::waitpid(pid, nullptr, WNOHANG) == pid) {
            return std::nullopt;
        }
        std::this_thread::sleep_for(20ms);
    }
    ::kill(-pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    return std::nullopt;
}

void stop_server(const server_proc& p) {
    ::kill(-p.pid, SIGTERM);
    for (int i = 0; i < 50; ++i) {
        if (::waitpid(p.pid, nullptr, WNOHANG) == p.pid) {
            return;
        }
        std::this_thread::sleep_for(100ms);
    }
    ::kill(-p.pid, SIGKILL);
    ::waitpid(p.pid, nullptr, 0);
}

// utime + stime of the whole process (every thread), in seconds.
double cpu_seconds(pid_t pid) {
    FILE* f = std::fopen(fmt::format("/proc/{}/stat", pid).c_str(), "r");
    if (f == nullptr) {
        return 0;
    }
    char buf[2048];
    std::size_t n = std::fread(buf, 1, sizeof buf - 1, f);
    std::fclose(f);
    buf[n] = '\0';
    const char* p = std::strrchr(buf, ')'); // the command may hold spaces
    unsigned long utime = 0;
    unsigned long stime = 0;
    if (p != nullptr) {
        std::sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &utime, &stime);
    }
    return static_cast<double>(utime + stime) / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

long rss_kib(pid_t pid) {
    FILE* f = std::fopen(fmt::format("/proc/{}/status", pid).c_str(), "r");
    if (f == nullptr) {
        return 0;
    }
    char line[256];
    long kib = 0;
    while (std::fgets(line, sizeof line, f)) {
        if (std::sscanf(line, "VmRSS: %ld kB", &kib) == 1) {
            break;
        }
    }
    std::fclose(f);
    return kib;
}

// ---- the load client (echo_load.c's algorithm) ------------------------------------------

int connect_loopback(int port) {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sa.sin_port = htons(static_cast<std::uint16_t>(port));
    if (fd < 0 || ::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) < 0) {
        if (fd >= 0) {
            ::close(fd);
        }
        return -1;
    }
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

struct load_result {
    double rps = 0;
    double p50_us = 0;
    double p99_us = 0;
    std::uint64_t errors = 0;
};

// Log-linear latency histogram, 64 sub-buckets per power of two (~1.6 %), as echo_load's.
struct histogram {
    static constexpr int sub = 64;
    std::vector<std::uint64_t> counts = std::vector<std::uint64_t>(64 * sub);
    std::uint64_t total = 0;
    static int bucket(std::uint64_t v) {
        if (v < sub) {
            return static_cast<int>(v);
        }
        int msb = 63 - __builtin_clzll(v);
        int shift = msb - 6;
        return (shift + 1) * sub + static_cast<int>((v >> shift) & (sub - 1));
    }
    static std::uint64_t mid(int i) {
        if (i < sub) {
            return static_cast<std::uint64_t>(i);
        }
        int shift = i / sub - 1;
        std::uint64_t lo = static_cast<std::uint64_t>(sub + i % sub) << shift;
        return lo + ((std::uint64_t{1} << shift) >> 1);
    }
    void add(std::uint64_t v) {
        ++counts[static_cast<std::size_t>(bucket(v))];
        ++total;
    }
    double percentile(double q) const {
        if (total == 0) {
            return 0;
        }
        auto want = static_cast<std::uint64_t>(q * static_cast<double>(total));
        std::uint64_t seen = 0;
        for (std::size_t i = 0; i < counts.size(); ++i) {
            seen += counts[i];
            if (seen > want) {
                return static_cast<double>(mid(static_cast<int>(i)));
            }
        }
        return 0;
    }
};

load_result run_load(int port, int nconns, int size, double warm_s, double secs) {
    struct conn {
        int fd = -1;
        bool alive = true;
        int sent = 0;
        int got = 0;
        std::uint64_t t0 = 0;
        std::vector<char> rbuf;
    };
    std::vector<char> msg(static_cast<std::size_t>(size));
    for (int i = 0; i < size; ++i) {
        msg[static_cast<std::size_t>(i)] = static_cast<char>('a' + i % 26);
    }
    load_result res;
    int ep = ::epoll_create1(EPOLL_CLOEXEC);
    std::vector<conn> conns(static_cast<std::size_t>(nconns));
    for (conn& c : conns) {
        c.fd = connect_loopback(port);
        if (c.fd < 0) {
            ++res.errors;
            c.alive = false;
            continue;
        }
        ::fcntl(c.fd, F_SETFL, ::fcntl(c.fd, F_GETFL) | O_NONBLOCK);
        c.rbuf.resize(static_cast<std::size_t>(size));
        epoll_event ev{};
        ev.events = EPOLLIN;
        ev.data.ptr = &c;
        ::epoll_ctl(ep, EPOLL_CTL_ADD, c.fd, &ev);
    }
    auto push = [&](conn& c) {
        while (c.sent < size) {
            ssize_t w = ::send(c.fd, msg.data() + c.sent, static_cast<std::size_t>(size - c.sent),
                               MSG_NOSIGNAL);
            if (w > 0) {
                c.sent += static_cast<int>(w);
            } else if (w < 0 && errno == EINTR) {
                continue;
            } else if (w < 0 && errno == EAGAIN) {
                epoll_event ev{};
                ev.events = EPOLLIN | EPOLLOUT;
                ev.data.ptr = &c;
                ::epoll_ctl(ep, EPOLL_CTL_MOD, c.fd, &ev);
                return true;
            } else {
                return false;
            }
        }
        return true;
    };
    std::uint64_t start = now_ns();
    std::uint64_t from = start + static_cast<std::uint64_t>(warm_s * 1e9);
    std::uint64_t end = from + static_cast<std::uint64_t>(secs * 1e9);
    histogram h;
    for (conn& c : conns) {
        if (c.alive) {
            c.t0 = now_ns();
            c.alive = push(c);
        }
    }
    std::vector<epoll_event> evs(1024);
    std::uint64_t t = start;
    while (t < end) {
        int n = ::epoll_wait(ep, evs.data(), static_cast<int>(evs.size()), 100);
        t = now_ns();
        for (int i = 0; i < n; ++i) {
            conn& c = *static_cast<conn*>(evs[static_cast<std::size_t>(i)].data.ptr);
            if (!c.alive) {
                continue;
            }
            if (evs[static_cast<std::size_t>(i)].events & EPOLLOUT) {
                epoll_event ev{};
                ev.events = EPOLLIN;
                ev.data.ptr = &c;
                ::epoll_ctl(ep, EPOLL_CTL_MOD, c.fd, &ev);
                if (!push(c)) {
                    c.alive = false;
                    ++res.errors;
                    continue;
                }
            }
            ssize_t r =
                ::recv(c.fd, c.rbuf.data() + c.got, static_cast<std::size_t>(size - c.got), 0);
            if (r < 0 && (errno == EAGAIN || errno == EINTR)) {
                continue;
            }
            if (r <= 0) {
                c.alive = false;
                ++res.errors;
                continue;
            }
            c.got += static_cast<int>(r);
            if (c.got < size) {
                continue;
            }
            t = now_ns();
            if (std::memcmp(c.rbuf.data(), msg.data(), static_cast<std::size_t>(size)) != 0) {
                c.alive = false;
                ++res.errors;
                continue;
            }
            if (t >= from && t < end) {
                h.add(t - c.t0);
            }
            c.got = 0;
            c.sent = 0;
            c.t0 = t;
            if (!push(c)) {
                c.alive = false;
                ++res.errors;
            }
        }
    }
    for (conn& c : conns) {
        if (c.fd >= 0) {
            ::close(c.fd);
        }
    }
    ::close(ep);
    res.rps = static_cast<double>(h.total) / secs;
    res.p50_us = h.percentile(0.50) / 1000.0;
    res.p99_us = h.percentile(0.99) / 1000.0;
    return res;
}

// Opens `n` connections and makes one 64-byte round trip on each; returns how many worked.
// The caller closes `fds`.
int open_idle(int port, int n, std::vector<int>& fds) {
    char msg[64];
    std::memset(msg, 'i', sizeof msg);
    int ok = 0;
    for (int i = 0; i < n; ++i) {
        int fd = connect_loopback(port);
        if (fd < 0) {
            break;
        }
        fds.push_back(fd);
        char back[64];
        if (::send(fd, msg, sizeof msg, MSG_NOSIGNAL) == sizeof msg &&
            ::recv(fd, back, sizeof back, MSG_WAITALL) == sizeof back) {
            ++ok;
        }
    }
    return ok;
}

// ---- the servers -------------------------------------------------------------------------

struct server_spec {
    std::string name;
    std::vector<std::string> argv; // "{PORT}" is replaced
    std::vector<std::string> env;
    bool prints_port = false;
};

int free_port() {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa);
    socklen_t len = sizeof sa;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len);
    ::close(fd);
    return ntohs(sa.sin_port);
}

std::optional<server_proc> launch(const server_spec& s) {
    int port = s.prints_port ? 0 : free_port();
    std::vector<std::string> argv;
    for (std::string a : s.argv) {
        if (auto i = a.find("{PORT}"); i != std::string::npos) {
            a.replace(i, 6, std::to_string(port));
        }
        argv.push_back(a);
    }
    return start_server(argv, s.env, port, s.prints_port);
}

// Finds the peers' binaries; compiles raw_uring and raw_epoll from source if they are not
// built (they are C files that need only liburing).
std::vector<server_spec> find_peers(const fs::path& peers) {
    std::vector<fs::path> dirs;
    if (const char* b = std::getenv("PEERS_BUILD")) {
        dirs.emplace_back(b);
    }
    dirs.push_back(peers / "build");
    dirs.push_back(fs::temp_directory_path() / "peers-build");
    auto find = [&](const char* name) -> std::string {
        for (const fs::path& d : dirs) {
            std::error_code ec;
            if (fs::is_regular_file(d / name, ec)) {
                return (d / name).string();
            }
        }
        return {};
    };
    fs::path own = fs::temp_directory_path() / "tether-echo-bench-peers";
    auto compile = [&](const char* name, const char* src, const char* libs) -> std::string {
        std::string found = find(name);
        if (!found.empty() || !fs::exists(peers / "src" / src)) {
            return found;
        }
        fs::create_directories(own);
        std::string out = (own / name).string();
        std::string cmd = fmt::format("cc -O2 -o '{}' '{}' {} 2>/dev/null", out,
                                      (peers / "src" / src).string(), libs);
        return std::system(cmd.c_str()) == 0 ? out : std::string{};
    };
    std::vector<server_spec> specs;
    if (std::string p = compile("raw_uring", "raw_uring.c", "-luring"); !p.empty()) {
        specs.push_back({"raw-uring", {p, "echo", "{PORT}"}, {}, false});
    }
    if (std::string p = compile("raw_epoll", "raw_epoll.c", ""); !p.empty()) {
        specs.push_back({"raw-epoll", {p, "echo", "{PORT}"}, {}, false});
    }
    if (std::string p = find("asio_uring"); !p.empty()) {
        specs.push_back({"asio-uring", {p, "echo", "{PORT}"}, {}, false});
    }
    if (std::string p = find("asio_epoll"); !p.empty()) {
        specs.push_back({"asio-epoll", {p, "echo", "{PORT}"}, {}, false});
    }
    if (std::string p = find("go_server"); !p.empty()) {
        specs.push_back(
            {"go", {p, "-mode", "echo", "-addr", "127.0.0.1:{PORT}"}, {"GOMAXPROCS=1"}, false});
    }
    if (std::string p = find("tokio_server"); !p.empty()) {
        specs.push_back({"tokio", {p, "echo", "{PORT}"}, {}, false});
    }
    return specs;
}

double median(std::vector<double> v) {
    if (v.empty()) {
        return 0;
    }
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

struct options {
    double seconds = 5;
    double warm = 1;
    int rounds = 3;
    int conns = 64;
    int idle = 10000;
    fs::path peers;
    std::vector<std::string> only;
};

} // namespace

int main(int argc, char** argv) {
    options o;
    o.peers = fs::path(TETHER_SOURCE_ROOT) / ".." / "shared" / "peers";
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        auto next = [&]() -> std::string { return i + 1 < argc ? argv[++i] : ""; };
        if (a == "--serve") {
            return run_tether_server();
        } else if (a == "--seconds") {
            o.seconds = std::atof(next().c_str());
        } else if (a == "--rounds") {
            o.rounds = std::atoi(next().c_str());
        } else if (a == "--conns") {
            o.conns = std::atoi(next().c_str());
        } else if (a == "--idle") {
            o.idle = std::atoi(next().c_str());
        } else if (a == "--peers") {
            o.peers = next();
        } else if (a == "--only") {
            std::string list = next();
            for (std::size_t p = 0; p <= list.size();) {
                std::size_t c = std::min(list.find(',', p), list.size());
                o.only.push_back(list.substr(p, c - p));
                p = c + 1;
            }
        } else if (a == "--quick") {
            o.seconds = 1;
            o.warm = 0.5;
            o.rounds = 1;
            o.idle = 2000;
        } else {
            fmt::print(stderr, "usage: echo_bench [--seconds S] [--rounds N] [--conns N] "
                               "[--idle N] [--peers DIR] [--only a,b] [--quick]\n");
            return 2;
        }
    }
    std::signal(SIGPIPE, SIG_IGN);
    rlimit rl{};
    ::getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &rl);
    pin_to(1);

    std::vector<server_spec> servers;
    servers.push_back(
        {"tether", {fs::read_symlink("/proc/self/exe").string(), "--serve"}, {}, true});
    for (server_spec& s : find_peers(o.peers)) {
        servers.push_back(std::move(s));
    }
    if (!o.only.empty()) {
        std::erase_if(servers, [&](const server_spec& s) {
            return std::find(o.only.begin(), o.only.end(), s.name) == o.only.end();
        });
    }
    fmt::print("echo_bench: servers pinned to CPU 0, load client to CPU 1 ({} CPUs); {} s per "
               "run after {} s of warm-up, {} round(s), medians\n",
               std::thread::hardware_concurrency(), o.seconds, o.warm, o.rounds);
    fmt::print("peers from {}\n\n", o.peers.string());

    struct row {
        std::vector<double> rps, p50, p99, cpu_pct, cpu_us;
        std::uint64_t errors = 0;
    };
    std::string baseline = "raw-uring";
    for (int size : {64, 1024}) {
        std::map<std::string, row> rows;
        for (int r = 0; r < o.rounds; ++r) {
            for (const server_spec& s : servers) {
                std::optional<server_proc> p = launch(s);
                if (!p) {
                    fmt::print(stderr, "{}: did not start\n", s.name);
                    continue;
                }
                run_load(p->port, o.conns, size, 0, o.warm);
                double cpu0 = cpu_seconds(p->pid);
                std::uint64_t t0 = now_ns();
                load_result lr = run_load(p->port, o.conns, size, 0, o.seconds);
                double wall = static_cast<double>(now_ns() - t0) / 1e9;
                double cpu = cpu_seconds(p->pid) - cpu0;
                stop_server(*p);
                row& rw = rows[s.name];
                rw.rps.push_back(lr.rps);
                rw.p50.push_back(lr.p50_us);
                rw.p99.push_back(lr.p99_us);
                rw.cpu_pct.push_back(100.0 * cpu / wall);
                rw.cpu_us.push_back(lr.rps > 0 ? 1e6 * cpu / (lr.rps * o.seconds) : 0);
                rw.errors += lr.errors;
            }
        }
        fmt::print("echo, {} connections, {} B ping-pong\n\n", o.conns, size);
        fmt::print("| server | round trips/s | vs {} | p50 us | p99 us | server CPU % | server "
                   "CPU us/rt | vs {} | errors |\n",
                   baseline, baseline);
        fmt::print("|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        double base_rps = rows.count(baseline) ? median(rows[baseline].rps) : 0;
        double base_cpu = rows.count(baseline) ? median(rows[baseline].cpu_us) : 0;
        for (const server_spec& s : servers) {
            if (!rows.count(s.name)) {
                continue;
            }
            row& rw = rows[s.name];
            double rps = median(rw.rps);
            double cpu_us = median(rw.cpu_us);
            fmt::print("| {} | {:.0f} | {} | {:.0f} | {:.0f} | {:.0f} | {:.2f} | {} | {} |\n",
                       s.name, rps, base_rps > 0 ? fmt::format("{:.2f}", rps / base_rps) : "-",
                       median(rw.p50), median(rw.p99), median(rw.cpu_pct), cpu_us,
                       base_cpu > 0 ? fmt::format("{:.2f}", cpu_us / base_cpu) : "-", rw.errors);
        }
        fmt::print("\n");
    }

    fmt::print("idle connections: server RSS growth for {} connections, each after one "
               "64 B round trip\n\n",
               o.idle);
    fmt::print("| server | RSS before KiB | RSS after KiB | bytes per connection |\n");
    fmt::print("|---|---:|---:|---:|\n");
    for (const server_spec& s : servers) {
        std::optional<server_proc> p = launch(s);
        if (!p) {
            continue;
        }
        // Warm up as the throughput runs do (buffers, pools, thread stacks touched), then
        // measure only what the idle connections add.
        run_load(p->port, o.conns, 1024, 0, 0.5);
        std::this_thread::sleep_for(200ms);
        long before = rss_kib(p->pid);
        std::vector<int> fds;
        int ok = open_idle(p->port, o.idle, fds);
        std::this_thread::sleep_for(300ms);
        long after = rss_kib(p->pid);
        for (int fd : fds) {
            ::close(fd);
        }
        stop_server(*p);
        double per = ok > 0 ? 1024.0 * static_cast<double>(after - before) / ok : 0;
        fmt::print("| {} | {} | {} | {:.0f}{} |\n", s.name, before, after, per,
                   ok < o.idle ? fmt::format(" (only {} connected)", ok) : "");
    }
    fmt::print("\ntargets (issue 4): tether >= 0.97 x raw-uring round trips/s, CPU per round trip "
               "<= raw-uring's, ahead of the other peers, <= 1024 bytes per idle connection\n");
    return 0;
}
