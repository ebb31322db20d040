#include "runtime/signal.hpp"

#include "context/with_cancel.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <mutex>
#include <string>
#include <thread>
#include <unistd.h>
#include <vector>

namespace tether {

namespace detail {

/// One notify_context: its signals and the handle that cancels its context.
struct signal_entry {
    std::vector<int> signals;
    cancel_handle cancel; // called from the signal thread and from stop(): both thread-safe
};

} // namespace detail

namespace {

class signal_category_impl final : public std::error_category {
public:
    const char* name() const noexcept override { return "signal"; }
    std::string message(int signo) const override {
        // Go's cause: the signal's name, lower case, then "signal received".
        const char* d = ::sigdescr_np(signo);
        std::string s = d ? d : "signal " + std::to_string(signo);
        std::transform(s.begin(), s.end(), s.begin(),
                       [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
        return s + " signal received";
    }
};

// The write end of the self-pipe, read by the handler.
std::atomic<int> pipe_write_fd{-1};

extern "C" void on_signal(int signo) {
    // Async-signal-safe: one write(2), errno preserved. If the pipe is full the byte is
    // dropped; the ones already in it wake the thread, and each cancel is sticky anyway.
    int saved = errno;
    auto b = static_cast<unsigned char>(signo);
    [[maybe_unused]] ssize_t r = ::write(pipe_write_fd.load(std::memory_order_relaxed), &b, 1);
    errno = saved;
}

struct watched_signal {
    int watchers = 0;
    struct sigaction previous{};
};

struct signal_registry {
    std::mutex mu;
    bool started = false;
    std::vector<std::shared_ptr<detail::signal_entry>> entries;
    std::array<watched_signal, NSIG> signals{};
};

// Never destroyed: the signal thread and a late handler may use it until the process ends.
signal_registry& registry() {
    static auto* r = new signal_registry;
    return *r;
}

// The signal thread: reads signal numbers from the pipe and cancels whoever watches them.
void dispatch(int rd) {
    std::array<unsigned char, 64> buf{};
    for (;;) {
        ssize_t n = ::read(rd, buf.data(), buf.size());
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return;
        }
        for (ssize_t i = 0; i < n; ++i) {
            int signo = buf[static_cast<std::size_t>(i)];
            std::vector<std::shared_ptr<detail::signal_entry>> hit;
            {
                std::lock_guard lk(registry().mu);
                for (const auto& e : registry().entries) {
                    if (std::find(e->signals.begin(), e->signals.end(), signo) !=
                        e->signals.end()) {
                        hit.push_back(e);
                    }
                }
            }
            // Outside the lock: cancel runs the context's callbacks, which may call stop().
            for (const auto& e : hit) {
                e->cancel.cancel(std::error_code(signo, signal_category()));
            }
        }
    }
}

// Makes the pipe and starts the signal thread once (registry lock held).
void start_once(signal_registry& r) {
    if (r.started) {
        return;
    }
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) {
        throw std::system_error(errno, std::system_category(), "tether: notify_context pipe");
    }
    // Non-blocking write end: a handler must never block.
    ::fcntl(fds[1], F_SETFL, ::fcntl(fds[1], F_GETFL) | O_NONBLOCK);
    try {
        std::thread(dispatch, fds[0]).detach();
    } catch (...) {
        ::close(fds[0]);
        ::close(fds[1]);
        throw;
    }
    pipe_write_fd.store(fds[1], std::memory_order_relaxed);
    r.started = true;
}

// Drops one watcher of each of `signals`; the last one restores the previous disposition
// (registry lock held).
void unwatch(signal_registry& r, const std::vector<int>& signals) noexcept {
    for (int s : signals) {
        watched_signal& w = r.signals[static_cast<std::size_t>(s)];
        if (--w.watchers == 0) {
            ::sigaction(s, &w.previous, nullptr);
        }
    }
}

} // namespace

const std::error_category& signal_category() noexcept {
    static const signal_category_impl c;
    return c;
}

std::pair<context, notify_stop> notify_context(const context& parent,
                                               std::initializer_list<int> signals) {
    auto [ctx, cancel] = with_cancel_cause(parent);
    auto e = std::make_shared<detail::signal_entry>();
    e->signals.assign(signals.begin(), signals.end());
    std::sort(e->signals.begin(), e->signals.end());
    e->signals.erase(std::unique(e->signals.begin(), e->signals.end()), e->signals.end());
    e->cancel = std::move(cancel);

    signal_registry& r = registry();
    std::lock_guard lk(r.mu);
    start_once(r);
    std::vector<int> done;
    for (int s : e->signals) {
        if (s <= 0 || s >= NSIG) {
            unwatch(r, done);
            throw std::system_error(EINVAL, std::system_category(), "tether: notify_context");
        }
        watched_signal& w = r.signals[static_cast<std::size_t>(s)];
        if (w.watchers == 0) {
            struct sigaction sa{};
            sa.sa_handler = &on_signal;
            sigemptyset(&sa.sa_mask);
            sa.sa_flags = SA_RESTART;
            if (::sigaction(s, &sa, &w.previous) != 0) {
                int err = errno;
                unwatch(r, done);
                throw std::system_error(err, std::system_category(), "tether: sigaction");
            }
        }
        ++w.watchers;
        done.push_back(s);
    }
    r.entries.push_back(e);
    return {std::move(ctx), notify_stop(std::move(e))};
}

void notify_stop::stop() noexcept {
    if (!e_) {
        return;
    }
    std::shared_ptr<detail::signal_entry> e = std::move(e_);
    {
        signal_registry& r = registry();
        std::lock_guard lk(r.mu);
        auto it = std::find(r.entries.begin(), r.entries.end(), e);
        if (it != r.entries.end()) {
            r.entries.erase(it);
            unwatch(r, e->signals);
        }
    }
    e->cancel.cancel();
}

} // namespace tether
