#include "net/detail/acceptor.hpp"

#include "net/detail/net_service.hpp"
#include "net/io_errc.hpp"
#include "runtime/detail/loop_impl.hpp"

#include <liburing.h>

#include <fmt/format.h>

#include <algorithm>
#include <cassert>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <deque>
#include <string>
#include <sys/socket.h>
#include <unistd.h>

namespace tether::net::detail {

using namespace std::chrono_literals;
using tether::detail::completion;
using tether::detail::loop_impl;
using tether::detail::timer_node;

namespace {

// Connections accepted that nobody took yet. Past this many the multishot accept is
// canceled, so the rest wait in the kernel's backlog (which the listener's owner sized),
// and re-armed by the next accept() that finds the queue empty.
constexpr std::size_t max_ready = 128;

// Back-off after EMFILE, ENFILE, ENOMEM or ENOBUFS: Go's net/http delays, 5 ms doubling to
// 1 s. Failures less than `episode_gap` apart belong to one episode, logged once.
constexpr duration first_delay = 5ms;
constexpr duration max_delay = 1s;
constexpr duration episode_gap = 10s;

bool is_resource_error(int err) noexcept {
    return err == EMFILE || err == ENFILE || err == ENOMEM || err == ENOBUFS;
}

// Errors that concern one connection (it went away before we took it), not the listener.
bool is_transient_error(int err) noexcept {
    return err == ECONNABORTED || err == EINTR || err == EAGAIN || err == EPROTO || err == EPERM ||
           err == ENETDOWN || err == ENONET || err == EHOSTDOWN || err == EHOSTUNREACH ||
           err == ENETUNREACH || err == ENOPROTOOPT || err == EOPNOTSUPP;
}

} // namespace

struct acceptor final : completion, orphan {
    int fd;
    std::string name;
    loop* lp = nullptr; // the loop of the first accept; every accept runs there
    bool open = true;
    bool armed = false;     // a multishot accept is in the kernel
    bool canceling = false; // and an ASYNC_CANCEL for it was sent
    std::deque<int> ready;
    accept_wait* head = nullptr;
    accept_wait* tail = nullptr;
    timer_node timer;
    bool timer_armed = false;
    duration delay{};
    time_point last_failure{};
    acceptor_stats stats;

    acceptor(int f, std::string n) : fd(f), name(std::move(n)) {}
    ~acceptor() override {
        for (int c : ready) {
            ::close(c);
        }
    }

    loop_impl& impl() const noexcept { return lp->impl(); }

    void push(accept_wait* w) noexcept {
        w->next = nullptr;
        w->prev = tail;
        (tail ? tail->next : head) = w;
        tail = w;
    }
    void remove(accept_wait* w) noexcept {
        (w->prev ? w->prev->next : head) = w->next;
        (w->next ? w->next->prev : tail) = w->prev;
        w->next = w->prev = nullptr;
    }
    accept_wait* pop() noexcept {
        accept_wait* w = head;
        if (w) {
            remove(w);
        }
        return w;
    }

    void arm() {
        io_uring_sqe* sqe = impl().get_sqe();
        io_uring_prep_multishot_accept(sqe, fd, nullptr, nullptr, SOCK_CLOEXEC);
        io_uring_sqe_set_data(sqe, static_cast<completion*>(this));
        armed = true;
        canceling = false;
        ++stats.arms;
    }
    void cancel_multishot() {
        if (!armed || canceling) {
            return;
        }
        impl().cancel_in_kernel(this);
        canceling = true;
    }

    void back_off(int err) {
        time_point now = impl().now();
        if (stats.episodes == 0 || now - last_failure >= episode_gap) {
            ++stats.episodes;
            // Once per episode: a server out of descriptors must not also flood its log.
            // snprintf, not fmt: this runs out of descriptors, where UBSan cannot check
            // fmt's first virtual call (its vptr check probes memory through a pipe).
            char line[512];
            int n = std::snprintf(
                line, sizeof line,
                "tether: accept on %s: %s; pausing accepts, retrying with backoff (up to %lld "
                "ms)\n",
                name.c_str(), std::strerror(err),
                static_cast<long long>(
                    std::chrono::duration_cast<std::chrono::milliseconds>(max_delay).count()));
            if (n > 0) {
                std::fwrite(line, 1, std::min(static_cast<std::size_t>(n), sizeof line - 1),
                            stderr);
            }
            std::fflush(stderr);
        }
        last_failure = now;
        delay = delay == duration::zero() ? first_delay : std::min(delay * 2, max_delay);
        ++stats.backoffs;
        timer.when = now + delay;
        timer.fire = &on_timer;
        timer.data = this;
        impl().add_timer(timer);
        timer_armed = true;
    }

    void fail_waiters(std::error_code e) noexcept {
        while (accept_wait* w = pop()) {
            w->finish(e);
        }
    }

    static void on_timer(timer_node* t) noexcept {
        auto* a = static_cast<acceptor*>(t->data);
        a->timer_armed = false;
        if (a->open && !a->armed && a->head) {
            a->arm();
        }
    }

    static void on_cqe(completion* c, int res, std::uint32_t flags) noexcept {
        auto* a = static_cast<acceptor*>(c);
        bool more = (flags & IORING_CQE_F_MORE) != 0;
        if (!more) {
            a->armed = false;
            a->canceling = false;
        }
        if (res >= 0) {
            if (!a->open) {
                ::close(res);
            } else {
                ++a->stats.accepted;
                a->delay = duration::zero();
                if (accept_wait* w = a->pop()) {
                    w->fd = res;
                    w->finish({});
                } else {
                    a->ready.push_back(res);
                    if (a->ready.size() >= max_ready && a->armed && !a->canceling) {
                        ++a->stats.pauses;
                        a->cancel_multishot();
                    }
                }
            }
        } else if (a->open && !more) {
            int err = -res;
            if (is_resource_error(err)) {
                a->back_off(err);
            } else if (err == ECANCELED || is_transient_error(err)) {
                // Our own pause, or a connection that went away: go on below.
            } else {
                // The listener itself is broken (not listening, shut down): tell the waiting
                // accepts; the next accept() tries again, so nothing spins.
                a->fail_waiters(system_error_code(err));
            }
        }
        if (more) {
            return;
        }
        if (!a->open) {
            net_service::of(a->impl()).release(a);
            return;
        }
        if (!a->timer_armed && a->head) {
            a->arm();
        }
    }
};

acceptor* acceptor_open(int fd, std::string name) {
    auto* a = new acceptor(fd, std::move(name));
    a->complete = &acceptor::on_cqe;
    return a;
}

void acceptor_close(acceptor* a) noexcept {
    if (a == nullptr) {
        return;
    }
    a->open = false;
    for (int c : a->ready) {
        ::close(c);
    }
    a->ready.clear();
    a->fail_waiters(io_errc::closed);
    if (a->timer_armed) {
        a->impl().remove_timer(a->timer);
        a->timer_armed = false;
    }
    // The multishot accept holds its own reference to the socket: closing our descriptor
    // first is safe, and the socket stops listening once the cancel below completes.
    ::close(std::exchange(a->fd, -1));
    if (a->armed) {
        a->cancel_multishot();
        net_service::of(a->impl()).keep(a); // freed by its last CQE, or with the loop
    } else {
        delete a;
    }
}

int acceptor_fd(const acceptor* a) noexcept {
    return a ? a->fd : -1;
}

acceptor_stats acceptor_get_stats(const acceptor* a) noexcept {
    return a ? a->stats : acceptor_stats{};
}

bool acceptor_suspend(accept_wait& w, const context& c, std::coroutine_handle<> h) noexcept {
    acceptor* a = w.acc;
    if (a == nullptr || !a->open) {
        w.error = io_errc::closed;
        return false;
    }
    if (std::error_code e = c.err()) {
        w.error = e; // sticky: a done context takes nothing, not even a queued connection
        return false;
    }
    loop* l = tether::detail::current_loop();
    assert(l != nullptr && "accept must be awaited on a running loop");
    if (a->lp == nullptr) {
        a->lp = l;
    }
    assert(a->lp == l && "a listener accepts on one loop");
    if (!a->ready.empty()) {
        w.fd = a->ready.front();
        a->ready.pop_front();
        return false;
    }
    w.lp = l;
    w.handle = h;
    w.on_cancel = [](tether::detail::waiter* me) noexcept {
        auto* aw = static_cast<accept_wait*>(me);
        aw->acc->remove(aw);
        aw->finish(aw->cancel_error());
    };
    if (!w.arm(c)) {
        return false;
    }
    a->push(&w);
    if (!a->armed && !a->timer_armed) {
        a->arm();
    }
    return true;
}

} // namespace tether::net::detail
