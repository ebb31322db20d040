#pragma once
// acceptor: the state behind a listener. A multishot accept fills a queue of connections
// that accept() takes; when descriptors or memory run out it backs off and tries again.

#include "runtime/detail/waiter.hpp"
#include "runtime/result.hpp"
#include "runtime/task.hpp"

#include <coroutine>
#include <cstdint>
#include <string>

namespace tether::net::detail {

struct acceptor;

/// One `accept()` waiting for a connection.
struct accept_wait : tether::detail::waiter {
    acceptor* acc = nullptr;
    int fd = -1; // the connection, once there is one
    accept_wait* next = nullptr;
    accept_wait* prev = nullptr;
};

/// Counters, for tests and for logs.
struct acceptor_stats {
    std::uint64_t arms = 0;     ///< multishot accepts submitted
    std::uint64_t accepted = 0; ///< connections accepted
    std::uint64_t pauses = 0;   ///< cancels because too many connections waited untaken
    std::uint64_t backoffs = 0; ///< pauses after EMFILE, ENFILE, ENOMEM or ENOBUFS
    std::uint64_t episodes = 0; ///< runs of such failures (each logged once)
};

/// Takes ownership of the listening socket `fd`; `name` says which in the log line.
acceptor* acceptor_open(int fd, std::string name);
/// Closes the listening socket and the connections nobody took, fails waiting accepts with
/// `io_errc::closed` and cancels the multishot accept; the state frees itself once the kernel
/// has let go of it. Loop thread (or before any accept).
void acceptor_close(acceptor* a) noexcept;
/// Returns the listening socket.
int acceptor_fd(const acceptor* a) noexcept;
/// Returns the counters.
acceptor_stats acceptor_get_stats(const acceptor* a) noexcept;
/// Takes a waiting connection (false: don't suspend; `w.fd` or `w.error` is set), or queues
/// `w` and makes sure a multishot accept is armed (true).
bool acceptor_suspend(accept_wait& w, const context& c, std::coroutine_handle<> h) noexcept;

/// Awaits one connection from a listener and adopts it as a `Stream`.
template <class Stream>
class accept_awaiter {
public:
    explicit accept_awaiter(acceptor* a) noexcept { w_.acc = a; }
    accept_awaiter(accept_awaiter&& o) noexcept : accept_awaiter(o.w_.acc) {}
    accept_awaiter& operator=(accept_awaiter&&) = delete;

    bool await_ready() const noexcept { return false; }
    template <class P>
    bool await_suspend(std::coroutine_handle<P> h) noexcept {
        w_.owner = tether::detail::owner_of(h);
        return acceptor_suspend(w_, tether::detail::context_of(h), h);
    }
    result<Stream> await_resume() noexcept {
        if (w_.fd < 0) {
            return w_.error;
        }
        return Stream::adopt(w_.fd);
    }

private:
    accept_wait w_;
};

} // namespace tether::net::detail
