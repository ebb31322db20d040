// embed_epoll: an existing epoll program that drives a tether loop through loop.fd().
//
// The host has its own epoll loop with its own sources: a timerfd that ticks, and a pipe fed by
// a worker thread. It adds the tether loop's fd to the same epoll set and calls loop.poll()
// whenever that fd is readable; it never blocks inside tether and passes epoll_wait no timeout
// of tether's (the loop's fd becomes readable when a tether timer is due). Meanwhile tether
// tasks sleep, write and read a file on io_uring, and have a read canceled by a deadline; the
// worker thread posts work to the tether loop with loop.post(). The program ends by itself and
// exits 0 if everything happened.
//
//     build/examples/embed_epoll

#include "context/with_deadline.hpp"
#include "runtime/file.hpp"
#include "runtime/io.hpp"
#include "runtime/loop.hpp"
#include "runtime/sleep.hpp"
#include "runtime/spawn.hpp"

#include <fmt/format.h>

#include <array>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <sys/epoll.h>
#include <sys/timerfd.h>
#include <thread>
#include <unistd.h>

using namespace std::chrono_literals;

namespace {

constexpr int worker_messages = 5;

// What the tether side reports back to the host.
struct app_report {
    bool file_ok = false;
    bool slept = false;
    bool deadline_canceled_read = false;
    bool finished = false;
};

std::span<const std::byte> bytes(std::string_view s) {
    return std::as_bytes(std::span(s));
}

// The tether side: plain tether code, unaware that it is embedded.
tether::task<void> app(std::string dir, int idle_fd, app_report* out) {
    using tether::file;
    // Sleep on tether's timers: the host's epoll_wait wakes for it through loop.fd().
    out->slept = (co_await tether::sleep_for(20ms)).has_value();

    // File I/O on the ring.
    std::string path = dir + "/greeting.txt";
    std::string_view text = "hello from tether, inside someone else's epoll loop";
    if (tether::result<file> f = co_await file::open(path, O_RDWR | O_CREAT | O_TRUNC, 0600)) {
        auto w = co_await f->write_at(bytes(text), 0);
        auto s = co_await f->fsync();
        std::array<char, 128> buf{};
        auto r = co_await f->read_at(std::as_writable_bytes(std::span(buf)), 0);
        auto c = co_await f->close();
        out->file_ok = w && *w == text.size() && s && r &&
                       std::string_view(buf.data(), *r) == text && c.has_value();
    } else {
        fmt::print(stderr, "open {}: {}\n", path, f.error().message());
    }

    // A read that never gets data, under a deadline: canceled in the kernel when it passes.
    std::array<std::byte, 8> buf{};
    auto r = co_await tether::with_timeout(10ms, tether::read(idle_fd, buf));
    out->deadline_canceled_read = !r && r.error() == tether::errc::deadline_exceeded;
    out->finished = true;
}

void check(bool ok, const char* what) {
    if (!ok) {
        fmt::print(stderr, "embed_epoll: {}: {}\n", what, std::strerror(errno));
        std::exit(EXIT_FAILURE);
    }
}

void watch(int ep, int fd) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = fd;
    check(::epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) == 0, "epoll_ctl");
}

} // namespace

int main() {
    std::string dir = (std::filesystem::temp_directory_path() / "tether-embed-XXXXXX").string();
    check(::mkdtemp(dir.data()) != nullptr, "mkdtemp");

    tether::loop lp;

    // The host's own event sources.
    int ep = ::epoll_create1(EPOLL_CLOEXEC);
    check(ep >= 0, "epoll_create1");
    int tick = ::timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
    check(tick >= 0, "timerfd_create");
    itimerspec every_5ms{};
    every_5ms.it_interval.tv_nsec = 5'000'000;
    every_5ms.it_value.tv_nsec = 5'000'000;
    check(::timerfd_settime(tick, 0, &every_5ms, nullptr) == 0, "timerfd_settime");
    int worker_pipe[2];
    check(::pipe2(worker_pipe, O_CLOEXEC | O_NONBLOCK) == 0, "pipe2");
    int idle_pipe[2]; // never written: the tether read on it is canceled by its deadline
    check(::pipe2(idle_pipe, O_CLOEXEC) == 0, "pipe2");

    // The tether loop is one more source.
    watch(ep, tick);
    watch(ep, worker_pipe[0]);
    watch(ep, lp.fd());

    app_report report;
    std::optional<tether::join_handle<void>> app_task;
    lp.post(
        [&] { app_task.emplace(tether::spawn(lp.background(), app(dir, idle_pipe[0], &report))); });

    // A foreign thread: talks to the host through its pipe, and to tether through post().
    int posted_ran = 0; // touched only on the loop's thread (the host's main thread)
    std::thread worker([&] {
        for (int i = 0; i < worker_messages; ++i) {
            char c = static_cast<char>('0' + i);
            [[maybe_unused]] ssize_t n = ::write(worker_pipe[1], &c, 1);
            lp.post([&posted_ran] { ++posted_ran; });
            std::this_thread::sleep_for(2ms);
        }
        ::close(worker_pipe[1]);
    });

    int ticks = 0;
    int worker_bytes = 0;
    bool worker_done = false;
    int tether_turns = 0;
    // The host's watchdog, in case the embedding were broken: its own ticks would keep
    // epoll_wait returning, so it checks the time.
    auto give_up = std::chrono::steady_clock::now() + 20s;
    while (!(report.finished && worker_done && posted_ran == worker_messages && ticks >= 3)) {
        if (std::chrono::steady_clock::now() > give_up) {
            fmt::print(stderr,
                       "embed_epoll: stalled: slept {}, file {}, deadline read {}, finished {}, "
                       "posts {}, worker done {}, ticks {}, tether turns {}\n",
                       report.slept, report.file_ok, report.deadline_canceled_read, report.finished,
                       posted_ran, worker_done, ticks, tether_turns);
            worker.join();
            return EXIT_FAILURE;
        }
        std::array<epoll_event, 8> evs{};
        // No timeout from tether: its timers make lp.fd() readable.
        int n = ::epoll_wait(ep, evs.data(), static_cast<int>(evs.size()), 1000);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        check(n >= 0, "epoll_wait");
        for (int i = 0; i < n; ++i) {
            int fd = evs[static_cast<std::size_t>(i)].data.fd;
            if (fd == lp.fd()) {
                lp.poll();
                ++tether_turns;
            } else if (fd == tick) {
                std::uint64_t expirations = 0;
                if (::read(tick, &expirations, sizeof expirations) == sizeof expirations) {
                    ticks += static_cast<int>(expirations);
                }
            } else if (fd == worker_pipe[0]) {
                std::array<char, 16> buf{};
                ssize_t got = ::read(worker_pipe[0], buf.data(), buf.size());
                if (got > 0) {
                    worker_bytes += static_cast<int>(got);
                } else if (got == 0) {
                    worker_done = true;
                    check(::epoll_ctl(ep, EPOLL_CTL_DEL, worker_pipe[0], nullptr) == 0,
                          "epoll_ctl del");
                }
            }
        }
    }
    worker.join();
    bool app_done = app_task && app_task->done();
    app_task.reset();

    ::close(idle_pipe[0]);
    ::close(idle_pipe[1]);
    ::close(worker_pipe[0]);
    ::close(tick);
    ::close(ep);
    std::filesystem::remove_all(dir);

    fmt::print("host: {} timer ticks, {} bytes from the worker, {} tether turns\n", ticks,
               worker_bytes, tether_turns);
    fmt::print("tether: slept {}, file round trip {}, read canceled at its deadline {}, "
               "{} posts from the worker ran\n",
               report.slept, report.file_ok, report.deadline_canceled_read, posted_ran);
    bool ok = app_done && report.slept && report.file_ok && report.deadline_canceled_read &&
              worker_bytes == worker_messages && posted_ran == worker_messages;
    fmt::print("{}\n", ok ? "ok" : "FAILED");
    return ok ? EXIT_SUCCESS : EXIT_FAILURE;
}
