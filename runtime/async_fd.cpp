#include "runtime/async_fd.hpp"

#include "runtime/detail/loop_impl.hpp"

#include <liburing.h>

#include <cassert>
#include <cerrno>
#include <fcntl.h>
#include <memory>
#include <poll.h>
#include <unistd.h>
#include <utility>

namespace tether::detail {

/// One direction of an async_fd: its queue and its one-shot poll.
struct fd_side final : completion {
    fd_poll* owner = nullptr;
    wait_list waiters;
    std::size_t count = 0; // queued waiters
    unsigned mask = 0;     // POLLIN or POLLOUT
    bool armed = false;    // a POLL_ADD is in the kernel
    bool canceling = false;
};

class fd_polls;

/// An async_fd's polls and queues: made by its first wait, on that wait's loop. Freed by
/// close() when no poll is in flight; otherwise close() cancels the polls and the last CQE
/// frees it (or the loop's end, which takes the CQEs with it).
struct fd_poll {
    int fd;
    loop* lp; // null once the loop has ended (the async_fd outlived it)
    bool open = true;
    fd_side in;
    fd_side out;
    std::uint64_t polls = 0;
    std::uint64_t cancels = 0;
    fd_polls* registry = nullptr; // the loop's list of fd_polls, while linked in it
    fd_poll* prev = nullptr;
    fd_poll* next = nullptr;

    fd_poll(int f, loop* l) noexcept : fd(f), lp(l) {
        in.owner = this;
        in.mask = POLLIN;
        in.complete = &on_cqe;
        out.owner = this;
        out.mask = POLLOUT;
        out.complete = &on_cqe;
    }
    fd_poll(const fd_poll&) = delete;
    fd_poll& operator=(const fd_poll&) = delete;

    loop_impl& impl() const noexcept { return lp->impl(); }
    bool in_flight() const noexcept { return in.armed || out.armed; }

    void arm(fd_side& s) {
        io_uring_sqe* sqe = impl().get_sqe();
        io_uring_prep_poll_add(sqe, fd, s.mask);
        io_uring_sqe_set_data(sqe, static_cast<completion*>(&s));
        s.armed = true;
        s.canceling = false;
        ++polls;
    }

    void cancel(fd_side& s) {
        if (!s.armed || s.canceling) {
            return;
        }
        impl().cancel_in_kernel(&s);
        s.canceling = true;
        ++cancels;
    }

    static void on_cqe(completion* c, int res, std::uint32_t flags) noexcept;
};

namespace {

const char polls_key = 0; // its address names the service

} // namespace

/// Every fd_poll made on a loop. When the loop ends, the closed ones still waiting for their
/// last CQE are freed (the ring takes the CQE with it), and the open ones learn that their
/// loop is gone: their async_fd frees them without touching the ring, or makes new ones on
/// the next loop it is used on.
class fd_polls final : public loop_service {
public:
    static fd_polls& of(loop_impl& l) {
        if (auto* s = l.service(&polls_key)) {
            return static_cast<fd_polls&>(*s);
        }
        return static_cast<fd_polls&>(l.add_service(&polls_key, std::make_unique<fd_polls>()));
    }
    fd_polls() = default;
    fd_polls(const fd_polls&) = delete;
    fd_polls& operator=(const fd_polls&) = delete;
    ~fd_polls() override {
        while (fd_poll* p = head_) {
            unlink(p);
            if (p->open) {
                // Its waiters' frames may be gone already: nothing of them is touched again.
                p->lp = nullptr;
                p->in.armed = p->out.armed = false;
            } else {
                delete p;
            }
        }
    }
    void link(fd_poll* p) noexcept {
        p->registry = this;
        p->prev = nullptr;
        p->next = head_;
        if (head_ != nullptr) {
            head_->prev = p;
        }
        head_ = p;
    }
    void unlink(fd_poll* p) noexcept {
        if (p->prev != nullptr) {
            p->prev->next = p->next;
        } else {
            head_ = p->next;
        }
        if (p->next != nullptr) {
            p->next->prev = p->prev;
        }
        p->registry = nullptr;
    }
    /// Unlinks and frees `p`.
    static void release(fd_poll* p) noexcept {
        if (p->registry != nullptr) {
            p->registry->unlink(p);
        }
        delete p;
    }

private:
    fd_poll* head_ = nullptr;
};

namespace {

fd_waiter* waiter_of(list_hook* h) noexcept {
    return static_cast<fd_waiter*>(list_waiter::from(h));
}

// Takes `w` off its queue and resumes it (queued on the loop, not inline) with `e`.
void wake(fd_side& s, fd_waiter* w, std::error_code e) noexcept {
    s.waiters.remove(w);
    --s.count;
    w->w.finish(e);
}

enum class attempt { done, would_block };

// Tries w's read or write once (EINTR retried); on anything but EAGAIN the outcome is in
// w.done or `e`.
attempt try_io(int fd, fd_waiter& w, std::error_code& e) noexcept {
    for (;;) {
        ssize_t n =
            w.kind == fd_waiter::op::read ? ::read(fd, w.buf, w.len) : ::write(fd, w.buf, w.len);
        if (n >= 0) {
            w.done = static_cast<std::size_t>(n);
            return attempt::done;
        }
        if (errno == EINTR) {
            continue;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            return attempt::would_block;
        }
        e = system_error_code(errno);
        return attempt::done;
    }
}

// A waiter canceled by its context: the queue loses it (list_waiter::canceled unlinked it).
void left(void* side) noexcept {
    --static_cast<fd_side*>(side)->count;
}

// Fails every waiter of `s` with `e`.
void fail_all(fd_side& s, std::error_code e) noexcept {
    while (list_hook* h = s.waiters.front()) {
        wake(s, waiter_of(h), e);
    }
}

} // namespace

void fd_poll::on_cqe(completion* c, int res, std::uint32_t) noexcept {
    auto& s = *static_cast<fd_side*>(c);
    fd_poll* p = s.owner;
    s.armed = false;
    s.canceling = false;
    if (!p->open) {
        if (!p->in_flight()) {
            fd_polls::release(p);
        }
        return;
    }
    if (res < 0) {
        if (res != -ECANCELED) {
            fail_all(s, system_error_code(-res)); // EBADF, EINVAL: no poll of this fd works
            return;
        }
    } else {
        // Ready (POLLERR and POLLHUP count: a read then sees the end or the error). Every
        // readiness waiter resumes; reads (writes) are tried in order until one would block,
        // and the rest keep waiting on the re-armed poll.
        bool blocked = false;
        list_hook* h = s.waiters.front();
        while (h != nullptr) {
            list_hook* next = h->next;
            fd_waiter* w = waiter_of(h);
            if (w->kind == fd_waiter::op::wait) {
                wake(s, w, no_error);
            } else if (!blocked) {
                std::error_code e;
                if (try_io(p->fd, *w, e) == attempt::done) {
                    wake(s, w, e);
                } else {
                    blocked = true;
                }
            }
            h = next;
        }
    }
    if (s.count > 0) {
        p->arm(s);
    }
}

bool fd_suspend(async_fd& a, fd_waiter& w, const context& c, std::coroutine_handle<> h) noexcept {
    if (std::error_code e = c.err()) {
        w.w.error = e; // sticky: no syscall under a context that is done
        return false;
    }
    if (a.fd_ < 0) {
        w.w.error = system_error_code(EBADF);
        return false;
    }
    if (w.kind != fd_waiter::op::wait) {
        std::error_code e;
        if (try_io(a.fd_, w, e) == attempt::done) {
            w.w.error = e;
            return false;
        }
    }
    loop* l = current_loop();
    assert(l != nullptr && "async_fd must be awaited on a running loop");
    fd_poll* p = a.poll_;
    if (p != nullptr && p->lp == nullptr) {
        delete p; // its loop has ended: start afresh on this one
        p = a.poll_ = nullptr;
    }
    if (p == nullptr) {
        p = a.poll_ = new fd_poll(a.fd_, l);
        fd_polls::of(l->impl()).link(p);
    }
    assert(p->lp == l && "an async_fd is used on one loop");
    fd_side& s = w.write_side ? p->out : p->in;
    w.after_cancel = &left;
    w.owner = &s;
    if (!w.enqueue(s.waiters, c, h)) {
        return false;
    }
    ++s.count;
    if (!s.armed) {
        p->arm(s);
    }
    return true;
}

namespace {

// Closes `p` (may be null): its waiters fail with EBADF, its polls are canceled, and it is
// freed now or by its last CQE.
void close_poll(fd_poll* p) noexcept {
    if (p == nullptr) {
        return;
    }
    if (p->lp == nullptr) {
        delete p; // its loop has ended, and its polls and waiters with it
        return;
    }
    p->open = false;
    fail_all(p->in, system_error_code(EBADF));
    fail_all(p->out, system_error_code(EBADF));
    if (!p->in_flight()) {
        fd_polls::release(p);
        return;
    }
    p->cancel(p->in);
    p->cancel(p->out);
    // Stays in the loop's list until its last CQE (or the loop's end) frees it.
}

} // namespace

} // namespace tether::detail

namespace tether {

async_fd::async_fd(int fd) noexcept : fd_(fd) {
    if (fd_ < 0) {
        fd_ = -1;
        return;
    }
    int fl = ::fcntl(fd_, F_GETFL);
    if (fl >= 0 && (fl & O_NONBLOCK) == 0) {
        (void)::fcntl(fd_, F_SETFL, fl | O_NONBLOCK);
    }
}

async_fd::async_fd(async_fd&& o) noexcept
    : fd_(std::exchange(o.fd_, -1)), poll_(std::exchange(o.poll_, nullptr)) {
}

async_fd& async_fd::operator=(async_fd&& o) noexcept {
    if (this != &o) {
        (void)close();
        fd_ = std::exchange(o.fd_, -1);
        poll_ = std::exchange(o.poll_, nullptr);
    }
    return *this;
}

async_fd::~async_fd() {
    (void)close();
}

result<void> async_fd::close() noexcept {
    int fd = release();
    if (fd >= 0 && ::close(fd) < 0 && errno != EINTR) {
        return system_error_code(errno); // after EINTR the fd is closed all the same (Linux)
    }
    return {};
}

int async_fd::release() noexcept {
    detail::close_poll(std::exchange(poll_, nullptr));
    return std::exchange(fd_, -1);
}

detail::fd_poll_stats async_fd::stats() const noexcept {
    detail::fd_poll_stats st;
    if (const detail::fd_poll* p = poll_) {
        st.polls = p->polls;
        st.cancels = p->cancels;
        st.read_armed = p->in.armed;
        st.write_armed = p->out.armed;
        st.readers = p->in.count;
        st.writers = p->out.count;
    }
    return st;
}

} // namespace tether
