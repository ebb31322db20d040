#include "runtime/loop.hpp"

#include "context/manual_clock.hpp"
#include "runtime/detail/frame_allocator.hpp"
#include "runtime/detail/loop_impl.hpp"

#include <liburing.h>

#include <fmt/format.h>

#include <algorithm>
#include <cassert>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <new>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <system_error>
#include <thread>
#include <unistd.h>

namespace tether {

namespace detail {

// Initial-exec: one %fs-relative load (a shared library's default reaches TLS through a call
// to __tls_get_addr), and 8 bytes fit the static TLS that even a dlopen'ed libtether gets.
[[gnu::tls_model("initial-exec")]] constinit thread_local loop* tls_loop = nullptr;

constinit completion ignored_cqe{[](completion*, int, std::uint32_t) noexcept {}};

loop* current_loop() noexcept {
    return tls_loop;
}

// ---- waiter ------------------------------------------------------------------------------

namespace {
void on_ctx_done(void* p) noexcept {
    auto* w = static_cast<waiter*>(p);
    if (tls_loop == w->lp) {
        if (!w->completed) {
            w->on_cancel(w);
        }
    } else {
        w->lp->impl().remote_cancel(w);
    }
}

// The clock whose time `c` tells: a loop's clock tells its source's, or the real clock's.
const clock* time_base_of(const clock* c) noexcept {
    if (const auto* lc = dynamic_cast<const loop_clock*>(c)) {
        return &lc->time_base();
    }
    return c;
}

[[gnu::noinline]] void watch_foreign_deadline(cancel_state* c, loop_impl& l) noexcept {
    loop_clock& mine = l.ctx_clock_impl();
    if (time_base_of(c->clk) == &mine.time_base()) {
        arm_foreign_deadline(c, mine);
    }
}

// Called once an await of loop `lp` is armed under `c`: if c's deadline belongs to another
// clock (another loop's, or the real clock's thread), makes sure that lp's clock fires it
// too, so that the await times out on its own loop, on time, with no wake from another
// thread. A deadline of lp's own clock costs the first compare.
inline void watch_deadline(cancel_state* c, loop* lp) noexcept {
    if (c->clk != &lp->impl().ctx_clock() && c->deadline != time_point::max()) [[unlikely]] {
        watch_foreign_deadline(c, lp->impl());
    }
}

void chain_cancel(waiter* w) noexcept {
    // The chain's cancel state is done: cancel the await suspended under it, if any (a task
    // that is running sees the state done at its next await).
    waiter* cur = static_cast<await_chain*>(w->data)->current;
    if (cur != nullptr && !cur->completed) {
        cur->on_cancel(cur);
    }
}
} // namespace

namespace {
// Counts an armed await of `owner`, and makes its chain at the chain_after-th: the part of
// await_chain::of() that runs a few times per task, kept out of its path.
[[gnu::noinline]] await_chain* make_chain(chain_owner* owner, cancel_state* c) noexcept {
    if (owner->state + 1 < chain_owner::chain_after) {
        ++owner->state; // a task that waits a few times never pays for a chain
        return nullptr;
    }
    loop* lp = tls_loop;
    if (lp == nullptr) {
        return nullptr;
    }
    auto* ch = new await_chain;
    ch->w.lp = lp;
    ch->w.data = ch;
    ch->w.on_cancel = &chain_cancel;
    ch->bound = c;
    // Holding: `c` may belong to a context shorter-lived than the task (with_timeout).
    if (!ch->w.ensure_ext().reg.arm(c, &on_ctx_done, &ch->w)) {
        delete ch; // already done: the await fails on its own
        return nullptr;
    }
    // Once for every await the chain serves (an await that arms its own registration checks
    // each time).
    watch_deadline(c, lp);
    static_assert(alignof(await_chain) >= chain_owner::chain_after);
    owner->state = reinterpret_cast<std::uintptr_t>(ch);
    return ch;
}
} // namespace

await_chain* await_chain::of(chain_owner* owner, cancel_state* c) noexcept {
    if (await_chain* ch = owner->chain()) {
        return ch->bound == c && ch->w.lp == tls_loop ? ch : nullptr;
    }
    return make_chain(owner, c);
}

void await_chain::end(chain_owner* owner) noexcept {
    if (await_chain* ch = owner->chain()) {
        owner->state = chain_owner::chain_after - 1; // the next await makes a new one
        assert(ch->current == nullptr);
        // Disarms (waiting for a callback running on another thread) and leaves the loop's
        // remote queue: nothing refers to the chain afterwards.
        ch->w.finish_quietly({});
        delete ch;
    }
}

void waiter::leave_chain() noexcept {
    on_chain = false;
    await_chain* ch = owner->chain();
    assert(ch != nullptr && ch->current == this);
    ch->current = nullptr;
}

// Everything waiter::arm() does but its common case.
[[gnu::noinline]] bool arm_slow(waiter* w, const context& c) noexcept {
    if (w->on_chain) {
        w->leave_chain(); // armed again without finishing
    }
    cancel_state* cs = c.node() ? c.node()->canceler : nullptr;
    if (cs == nullptr) {
        w->disarm_own();
        return true; // never done
    }
    if (w->owner != nullptr) {
        if (await_chain* ch = await_chain::of(w->owner, cs)) {
            w->disarm_own(); // from an earlier arm() that was not finished
            if (cs->is_done()) {
                w->error = c.err();
                return false;
            }
            ch->current = w;
            w->on_chain = true;
            return true;
        }
    }
    // Borrowed: `c` is the awaiting coroutine's context, alive until the await ends (and
    // `ctx` points at it for that long already).
    if (!w->ensure_ext().reg.arm_borrowed(c, &on_ctx_done, w)) {
        w->error = c.err();
        return false;
    }
    watch_deadline(cs, w->lp);
    return true;
}

bool waiter::arm(const context& c) noexcept {
    return arm_inline(*this, c);
}

bool waiter::arm_on(cancel_state* c) noexcept {
    completed = false;
    cancel_requested = false;
    if (c == nullptr) {
        disarm_own(); // as arming on a null state does
        return true;  // never done
    }
    if (!ensure_ext().reg.arm(c, &on_ctx_done, this)) {
        return false;
    }
    watch_deadline(c, lp);
    return true;
}

waiter_ext& waiter::ensure_ext() noexcept {
    if (ext == nullptr) {
        // The frame lists: a pop from the thread's list of the size class, no call. Under
        // the sanitizers, operator new. (A bad_alloc here ends the program, as it would
        // for a frame.)
        ext = ::new (allocate_frame(sizeof(waiter_ext))) waiter_ext;
    }
    return *ext;
}

void waiter::release_ext() noexcept {
    // Disarms (waiting for a callback running on another thread), as the registration's
    // destructor did when it was a member.
    ext->~waiter_ext();
    deallocate_frame(ext, sizeof(waiter_ext));
    ext = nullptr;
}

bool waiter::finish_quietly(std::error_code e) noexcept {
    if (completed) {
        return false;
    }
    completed = true;
    error = e;
    if (on_chain) {
        leave_chain();
    }
    // Waits for a cancel callback running on another thread; afterwards remote_queued
    // is stable (only a registration's callback queues the waiter).
    disarm_own();
    if (remote_queued) {
        lp->impl().unqueue_remote(this);
    }
    return true;
}

[[gnu::noinline]] void finish_slow(waiter* w, std::error_code e) noexcept {
    if (w->finish_quietly(e)) {
        w->lp->impl().schedule(w->handle);
    }
}

[[gnu::noinline]] void finish_slow_resume(waiter* w, std::error_code e) noexcept {
    if (w->finish_quietly(e)) {
        w->lp->impl().resume_completed(w->handle);
    }
}

void waiter::finish(std::error_code e) noexcept {
    finish_inline(*this, e);
}

std::error_code waiter::cancel_error() const noexcept {
    std::error_code e = ctx ? ctx->err() : std::error_code{};
    return e ? e : make_error_code(errc::canceled);
}

// ---- done_awaiter ------------------------------------------------------------------------

void done_awaiter::resolve(done_awaiter* self, std::error_code e) noexcept {
    if (std::exchange(self->resolved_, true)) {
        return;
    }
    self->own_.finish_quietly(e);
    self->target_w_.finish_quietly({});
    self->error_ = e;
    self->own_.lp->schedule(self->own_.handle);
}

bool done_awaiter::suspend(const context& own, std::coroutine_handle<> h) noexcept {
    loop* l = tls_loop;
    assert(l != nullptr && "co_await ctx.done() must run on a loop");
    if (target_.ready()) {
        return false;
    }
    if (std::error_code e = own.err()) {
        error_ = e;
        return false;
    }
    for (waiter* w : {&own_, &target_w_}) {
        w->lp = l;
        w->handle = h;
        w->data = this;
    }
    own_.on_cancel = [](waiter* w) noexcept {
        resolve(static_cast<done_awaiter*>(w->data), w->cancel_error());
    };
    target_w_.on_cancel = [](waiter* w) noexcept {
        resolve(static_cast<done_awaiter*>(w->data), {});
    };
    if (own.node() && own.node()->canceler == target_.state()) {
        // Waiting for our own context: done is success, one registration is enough.
        own_.on_cancel = target_w_.on_cancel;
        target_w_.completed = true;
        if (!own_.arm(own)) {
            own_.completed = true;
            return false;
        }
        return true;
    }
    target_w_.completed = false;
    own_.completed = false;
    if (!target_w_.arm_on(target_.state())) {
        target_w_.completed = true;
        return false;
    }
    if (!own_.arm(own)) {
        target_w_.finish_quietly({});
        own_.completed = true;
        error_ = own_.error;
        return false;
    }
    return true;
}

// ---- uring_op ----------------------------------------------------------------------------

void uring_op_cancel(waiter* w) noexcept {
    auto* op = &static_cast<uring_op&>(*w); // a reference: no null test (waiter is not first)
    if (op->completed || op->cancel_requested) {
        return;
    }
    op->cancel_requested = true;
    loop_impl& l = op->lp->impl();
    // The target's own CQE is what resumes the coroutine.
    l.cancel_in_kernel(op);
    ++l.submitted_cancels;
}

namespace {

void uring_op_complete(completion* c, int res, std::uint32_t flags) noexcept {
    auto* op = &static_cast<uring_op&>(*c); // a reference: no null test
    op->res = res;
    op->cqe_flags = flags;
    op->finish(no_error);
}

} // namespace

bool uring_op::start(const context& c, std::coroutine_handle<> h) noexcept {
    lp = tls_loop;
    assert(lp != nullptr && "tether I/O must be awaited on a running loop");
    handle = h;
    on_cancel = &uring_op_cancel;
    complete = &uring_op_complete;
    if (!arm(c)) {
        return false;
    }
    io_uring_sqe* sqe = lp->impl().get_sqe();
    prep(this, sqe);
    io_uring_sqe_set_data(sqe, static_cast<completion*>(this));
    return true;
}

result<int> uring_op::outcome() const noexcept {
    if (error) {
        return error; // never submitted: the context was already done
    }
    if (res >= 0) {
        return res;
    }
    if ((res == -ECANCELED || res == -EINTR) && cancel_requested) {
        return cancel_error();
    }
    return system_error_code(-res);
}

// ---- loop_clock --------------------------------------------------------------------------

void loop_clock::schedule(timer_node& t) {
    bool earliest;
    {
        std::lock_guard lk(mu_);
        earliest = heap_.push(&t);
        size_.store(heap_.size(), std::memory_order_relaxed);
    }
    if (earliest && !loop_.on_loop_thread()) {
        loop_.post([] {}); // recompute the wait
    }
}

bool loop_clock::unschedule(timer_node& t) noexcept {
    std::lock_guard lk(mu_);
    bool removed = heap_.remove(&t);
    size_.store(heap_.size(), std::memory_order_relaxed);
    return removed;
}

int loop_clock::fire_due(time_point n) {
    int fired = 0;
    std::unique_lock lk(mu_);
    while (timer_node* t = heap_.pop_due(n)) {
        size_.store(heap_.size(), std::memory_order_relaxed);
        lk.unlock();
        t->fire(t);
        ++fired;
        lk.lock();
    }
    return fired;
}

time_point loop_clock::next() const {
    std::lock_guard lk(mu_);
    return heap_.next();
}

const clock& loop_clock::time_base() const noexcept {
    return source_ != nullptr ? *source_ : real_clock();
}

void loop_clock::drop_foreign_timers() noexcept {
    std::vector<timer_node*> foreign;
    {
        std::lock_guard lk(mu_);
        heap_.take_if([](const timer_node* t) { return is_foreign_timer(t); }, foreign);
        size_.store(heap_.size(), std::memory_order_relaxed);
    }
    // Without our lock: dropping one takes its node's lock, which a cancel holds while it
    // unschedules from us.
    for (timer_node* t : foreign) {
        drop_foreign_timer(t);
    }
}

// ---- loop_impl ---------------------------------------------------------------------------

loop_impl::loop_impl(loop& owner, loop::options opts)
    : owner_(owner), clock_(*this, opts.clock), source_(opts.clock),
      files_(owner, opts.fixed_files) {
    setup_ring(opts);
    background_ = tether::background(clock_);
    // The wake is a pipe, not an eventfd. A completion woken from inside an eventfd write
    // makes the kernel defer the signal of the eventfd registered by fd(), and 6.18 never
    // clears the bit that marks a deferred signal pending: every later deferred signal was
    // dropped, and an embedded loop stopped seeing posts from other threads. The read end
    // blocks (the ring arms a poll on it; O_NONBLOCK would make the read fail with EAGAIN);
    // the write end doesn't, so that wake() never blocks.
    int wake_pipe[2];
    if (::pipe2(wake_pipe, O_CLOEXEC) != 0) {
        int e = errno;
        io_uring_queue_exit(&ring_);
        throw std::system_error(e, std::system_category(), "tether: pipe2");
    }
    wake_fd_ = wake_pipe[0];
    wake_write_fd_ = wake_pipe[1];
    ::fcntl(wake_write_fd_, F_SETFL, ::fcntl(wake_write_fd_, F_GETFL) | O_NONBLOCK);
    wake_op_.self = this;
    wake_op_.complete = [](completion* c, int, std::uint32_t) noexcept {
        auto* self = static_cast<wake_op*>(c)->self;
        self->arm_wake_read();
    };
    arm_wake_read();
    msg_ring_wanted_ = opts.msg_ring;
    spin_ = opts.spin;
    msg_recv_op_.self = this;
    msg_recv_op_.complete = [](completion* c, int, std::uint32_t) noexcept {
        // Nothing to do: the CQE woke the loop, which drains its remote queues next.
        static_cast<msg_op*>(c)->self->msg_ring_received.fetch_add(1, std::memory_order_relaxed);
    };
    msg_fail_op_.self = this;
    msg_fail_op_.complete = [](completion* c, int res, std::uint32_t) noexcept {
        // Runs on the sender's loop: a MSG_RING aimed at this loop failed (or succeeded on a
        // kernel without CQE_SKIP_SUCCESS). Wake through the pipe instead.
        if (res < 0) {
            static_cast<msg_op*>(c)->self->wake_by_pipe();
        }
    };
    if (io_uring_probe* probe = io_uring_get_probe_ring(&ring_)) {
        msg_ring_ok_ = io_uring_opcode_supported(probe, IORING_OP_MSG_RING) != 0;
        io_uring_free_probe(probe);
    }
    if (msg_ring_ok_ && msg_ring_wanted_ && enabled_) {
        msg_ring_ready_.store(true, std::memory_order_release);
    }
    if (auto* mc = dynamic_cast<manual_clock*>(opts.clock)) {
        // Time moved: wake the loop so that it fires what is due.
        observer_ = mc->observe([this] { post([] {}); });
    }
}

loop_impl::~loop_impl() {
    clock_.drop_foreign_timers(); // before the clock goes: cancels on other threads use it
    while (!services_.empty()) {
        services_.pop_back(); // newest first: a service may use an older one
    }
    if (observer_ != 0) {
        static_cast<manual_clock*>(source_)->unobserve(observer_);
    }
    // A registered ring fd is unregistered here (liburing). On another thread than the
    // loop's the kernel refuses that (EEXIST: a SINGLE_ISSUER ring's registrations come from
    // its thread only), so the slot of this thread's table that has the same number, maybe
    // another loop's, is never touched; the loop's thread, once it ends, drops its slot and
    // with it the last reference to the ring.
    io_uring_queue_exit(&ring_);
    ::close(wake_fd_);
    ::close(wake_write_fd_);
    if (notify_fd_ >= 0) {
        ::close(notify_fd_);
    }
}

void loop_impl::setup_ring(const loop::options& o) {
    struct attempt {
        std::uint32_t flags;
        bool single_issuer;
    };
    // TASKRUN_FLAG lets a spinning loop see completions the kernel queued for it, and only a
    // spinning loop looks: with DEFER_TASKRUN the flag costs an atomic OR on the rings' shared
    // cache line from whichever CPU queues a batch's first completion (for a socket, the
    // peer's: the line then moves between the cores once per batch) and an atomic AND-NOT
    // each time this thread runs the batch. A loop that sleeps at once asks for the ring the
    // hand-written io_uring server uses (benches/peers/c/raw_uring.c).
    const std::uint32_t spin_flag = o.spin > duration::zero() ? IORING_SETUP_TASKRUN_FLAG : 0;
    const attempt attempts[] = {
        {IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_R_DISABLED |
             spin_flag,
         true},
        {IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_R_DISABLED, true},
        {IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG, false},
        {0, false},
    };
    int last = 0;
    for (const attempt& a : attempts) {
        if (!o.defer_taskrun && a.single_issuer) {
            continue;
        }
        io_uring_params p{};
        p.flags = a.flags | IORING_SETUP_CQSIZE | IORING_SETUP_CLAMP;
        p.cq_entries = o.entries * 4;
        int r = io_uring_queue_init_params(o.entries, &ring_, &p);
        if (r == 0) {
            // get_sqe() relies on neither being set.
            assert((ring_.flags & (IORING_SETUP_SQPOLL | IORING_SETUP_SQE128)) == 0);
            if ((p.features & IORING_FEAT_CQE_SKIP) != 0) {
                skip_success_ = IOSQE_CQE_SKIP_SUCCESS;
            }
            ring_flags_ = a.flags;
            single_issuer_ = a.single_issuer;
            enabled_ = (a.flags & IORING_SETUP_R_DISABLED) == 0;
            return;
        }
        last = -r;
        if (r == -ENOSYS || r == -EPERM) {
            break; // io_uring itself is unavailable: no flag set will help
        }
    }
    std::string why =
        last == ENOSYS ? "the kernel has no io_uring (ENOSYS)"
        : last == EPERM
            ? "io_uring_setup is not permitted here (EPERM): a container seccomp profile or "
              "the io_uring_disabled sysctl blocks it"
        : last == ENOMEM ? "not enough locked memory for the ring (ENOMEM): raise RLIMIT_MEMLOCK"
                         : std::strerror(last);
    throw uring_unavailable(fmt::format("tether: cannot set up io_uring: {}", why));
}

void loop_impl::arm_wake_read() {
    io_uring_sqe* sqe = get_sqe();
    io_uring_prep_read(sqe, wake_fd_, &wake_buf_, sizeof wake_buf_, 0);
    io_uring_sqe_set_data(sqe, static_cast<completion*>(&wake_op_));
}

bool loop_impl::on_loop_thread() const noexcept {
    return tls_loop == &owner_;
}

void loop_impl::wake() noexcept {
    loop* from = tls_loop;
    if (from != nullptr && from != &owner_ && accepts_msg_ring()) {
        loop_impl& sender = from->impl();
        if (sender.msg_ring_ok_) {
            sender.send_msg_ring(*this);
            return;
        }
    }
    wake_by_pipe();
}

void loop_impl::wake_by_pipe() noexcept {
    // A full pipe already holds a wake.
    char one = 1;
    [[maybe_unused]] ssize_t r = ::write(wake_write_fd_, &one, sizeof one);
}

void loop_impl::send_msg_ring(loop_impl& target) noexcept {
    // One SQE on our own ring, submitted with the rest of this turn: the kernel posts a CQE
    // on the target's ring; the target makes no syscall to receive it. With the target's
    // SINGLE_ISSUER | DEFER_TASKRUN the kernel queues the CQE as task work for the target's
    // thread and wakes it if it waits in io_uring_enter (Linux 6.3+; older kernels fail the
    // SQE with EBADFD or EEXIST, and msg_fail_op_ falls back to the pipe). A registered
    // eventfd (loop::fd()) is signaled when that task work is queued.
    io_uring_sqe* sqe = get_sqe();
    io_uring_prep_msg_ring(
        sqe, target.ring_.ring_fd, 0,
        reinterpret_cast<std::uintptr_t>(static_cast<completion*>(&target.msg_recv_op_)), 0);
    io_uring_sqe_set_data(sqe, static_cast<completion*>(&target.msg_fail_op_));
    io_uring_sqe_set_flags(sqe, skip_success_);
    ++msg_ring_sent;
    wake_queued_ = true;
}

void loop_impl::post_resume(std::coroutine_handle<> h) {
    if (on_loop_thread()) {
        ready_.push_back(h);
        return;
    }
    bool need_wake;
    {
        std::lock_guard lk(remote_mu_);
        resumes_.push_back(h);
        need_wake = !std::exchange(wake_pending_, true);
        has_remote_.store(true, std::memory_order_seq_cst);
    }
    if (need_wake && sleeping()) {
        wake();
    }
}

void loop_impl::post_call(void (*fn)(void*) noexcept, void* arg) {
    bool need_wake;
    {
        std::lock_guard lk(remote_mu_);
        calls_.push_back({fn, arg});
        need_wake = !std::exchange(wake_pending_, true);
        has_remote_.store(true, std::memory_order_seq_cst);
    }
    if (need_wake && !on_loop_thread() && sleeping()) {
        wake();
    }
}

void loop_impl::post(std::function<void()> fn) {
    bool need_wake;
    {
        std::lock_guard lk(remote_mu_);
        posted_.push_back(std::move(fn));
        need_wake = !std::exchange(wake_pending_, true);
        has_remote_.store(true, std::memory_order_seq_cst);
    }
    if (need_wake && !on_loop_thread() && sleeping()) {
        wake();
    }
}

void loop_impl::remote_cancel(waiter* w) noexcept {
    bool need_wake;
    {
        std::lock_guard lk(remote_mu_);
        // Only a registration's callback queues a waiter: it has its ext.
        w->ext->remote_prev = nullptr;
        w->ext->remote_next = remote_head_;
        if (remote_head_) {
            remote_head_->ext->remote_prev = w;
        }
        remote_head_ = w;
        w->remote_queued = true;
        need_wake = !std::exchange(wake_pending_, true);
        has_remote_.store(true, std::memory_order_seq_cst);
    }
    if (need_wake && sleeping()) {
        wake();
    }
}

void loop_impl::unqueue_remote(waiter* w) noexcept {
    std::lock_guard lk(remote_mu_);
    if (!w->remote_queued) {
        return;
    }
    waiter_ext* x = w->ext;
    if (x->remote_prev) {
        x->remote_prev->ext->remote_next = x->remote_next;
    } else {
        remote_head_ = x->remote_next;
    }
    if (x->remote_next) {
        x->remote_next->ext->remote_prev = x->remote_prev;
    }
    w->remote_queued = false;
}

bool loop_impl::drain_remote_queues() {
    std::vector<std::function<void()>> fns;
    waiter* list;
    {
        std::lock_guard lk(remote_mu_);
        fns.swap(posted_);
        drained_calls_.swap(calls_);
        drained_resumes_.swap(resumes_);
        list = std::exchange(remote_head_, nullptr);
        for (waiter* w = list; w; w = w->ext->remote_next) {
            w->remote_queued = false;
        }
        wake_pending_ = false;
        has_remote_.store(false, std::memory_order_relaxed);
    }
    // on_cancel never resumes a coroutine inline (it queues it or submits a kernel cancel),
    // so no waiter in the list can be destroyed while we walk it.
    while (list) {
        waiter* w = list;
        list = w->ext->remote_next;
        if (!w->completed) {
            w->on_cancel(w);
        }
    }
    for (std::coroutine_handle<> h : drained_resumes_) {
        ready_.push_back(h);
    }
    drained_resumes_.clear();
    for (const call& c : drained_calls_) {
        c.fn(c.arg);
    }
    drained_calls_.clear();
    for (auto& fn : fns) {
        fn();
    }
    return true;
}

io_uring_sqe* loop_impl::get_sqe_slow() {
    for (;;) {
        if (io_uring_sqe* sqe = io_uring_get_sqe(&ring_)) {
            return sqe;
        }
        // The SQ is full: submit it, run what the kernel deferred to this thread, and move
        // the completions aside for the next reap, so that the CQ never overflows; nothing is
        // dropped. Running the deferred work matters for a burst of cancels: a canceled poll
        // leaves the kernel's cancel hash only in that work, and every later cancel walks its
        // bucket (IORING_OP_ASYNC_CANCEL of 100,000 reads cost 50 us each without it).
        if (!enabled_) {
            bind_thread();
        }
        io_uring_submit_and_get_events(&ring_);
        // With DEFER_TASKRUN one GETEVENTS enter runs at most ~20 deferred completions (Linux
        // 6.13+): enter again while each one adds CQEs. (Asking to wait for more with a zero
        // timeout runs them all in one enter, but arms a timer that costs ~25 us.)
        for (int round = 0; stash_completions() > 0 && single_issuer_ && round < 256; ++round) {
            io_uring_get_events(&ring_);
        }
    }
}

unsigned loop_impl::stash_completions() {
    io_uring_cqe* cqe;
    unsigned head;
    unsigned n = 0;
    io_uring_for_each_cqe(&ring_, head, cqe) {
        stash_.push_back({cqe->user_data, cqe->res, cqe->flags});
        ++n;
    }
    io_uring_cq_advance(&ring_, n);
    return n;
}

void loop_impl::enable_here() {
    // A SINGLE_ISSUER ring belongs to the thread that enables it: the one that runs
    // the loop, not necessarily the one that built it.
    // liburing 2.3 declares io_uring_enable_rings but doesn't export it: register
    // directly.
    long r =
        ::syscall(__NR_io_uring_register, ring_.ring_fd, IORING_REGISTER_ENABLE_RINGS, nullptr, 0);
    if (r < 0) {
        throw std::system_error(errno, std::system_category(), "tether: enable ring");
    }
    enabled_ = true;
    if (msg_ring_ok_ && msg_ring_wanted_) {
        // Only now: the kernel refuses a MSG_RING aimed at a disabled ring.
        msg_ring_ready_.store(true, std::memory_order_release);
    }
    // Register the ring's fd in this thread's table (Linux 5.18+): liburing's enters then
    // pass IORING_ENTER_REGISTERED_RING and the slot, and the kernel skips looking the fd
    // up (fdget/fdput) on every io_uring_enter. Only here, for a SINGLE_ISSUER ring: every
    // enter comes from this thread, the only one whose table has the slot. The fd itself
    // stays open and valid for everything else (registrations, MSG_RING from other
    // loops, loop::fd()'s eventfd). Old kernels (EINVAL) and a table already full (16
    // rings per thread: EBUSY) keep entering by the plain fd.
    ring_fd_registered_ = io_uring_register_ring_fd(&ring_) == 1;
}

bool loop_impl::run_ready_batch() {
    // What was ready when the batch started, and what it makes ready in turn (a channel
    // hand-off, a join, a mutex passed on), up to a budget: two tasks ping-ponging run
    // without a loop turn per hop, yet I/O and timers get their turn at least every
    // `ready_budget` resumes (tokio's scheduler polls its driver every 61 ticks).
    std::size_t n = std::max(ready_.size(), ready_budget);
    for (std::size_t i = 0; i < n && !ready_.empty(); ++i) {
        std::coroutine_handle<> h = ready_.pop_front();
        if (!ready_.empty()) {
            // Many ready frames (a fan-out) are each a cache miss: start loading the next
            // one's resume pointer while this one runs.
            __builtin_prefetch(ready_.front().address());
        }
        h.resume();
        if (wake_queued_ && i + 1 < n) {
            // A wake for another loop (a MSG_RING SQE) leaves now, not after the rest of the
            // batch: a task that moved or posted there would otherwise wait for every
            // coroutine queued here, however long they run.
            //
            // Even when nothing else is ready and the turn's own io_uring_enter, a few hundred
            // nanoseconds away, could submit it together with its wait (one syscall instead
            // of two). Measured on a 2-core VM, a cross-loop round trip was then 1.3x slower
            // and woke its loops twice per round trip instead of 1.1-1.3 times: a loop that
            // submits and sleeps in one enter is always asleep when the reply comes, while
            // one that submits alone is often still in its turn, takes the reply from its
            // remote queue and skips a sleep and a wakeup (~6 us of kernel time each here).
            submit_wake();
        }
    }
    return true;
}

void loop_impl::submit_wake() noexcept {
    wake_queued_ = false;
    io_uring_submit(&ring_);
}

bool loop_impl::fire_due_timers() {
    bool any = false;
    time_point n = now();
    while (timer_node* t = sleeps_.pop_due(n)) {
        t->fire(t);
        any = true;
    }
    if (clock_.fire_due(n) > 0) {
        any = true;
    }
    return any;
}

void loop_impl::dispatch(std::uint64_t user_data, int res, std::uint32_t flags) {
    // Never 0: an SQE whose CQE needs no handling carries &ignored_cqe.
    assert(user_data != 0);
    auto* c = reinterpret_cast<completion*>(static_cast<std::uintptr_t>(user_data));
    c->complete(c, res, flags);
}

int loop_impl::reap() {
    int total = 0;
    // CQE handlers may resume the coroutines they complete at once (resume_completed);
    // a coroutine that runs a nested turn leaves none for the rest of this one.
    direct_left_ = direct_budget;
    for (;;) {
        if (!stash_.empty()) {
            // Completions moved aside while the SQ was full go first: they are older than
            // what the CQ holds now (a multishot recv's bytes stay in order).
            batch_.clear();
            batch_.swap(stash_);
            // Their coroutines are queued, not resumed here: a nested turn would reuse batch_.
            unsigned left = std::exchange(direct_left_, 0);
            for (const stashed& s : batch_) {
                dispatch(s.user_data, s.res, s.flags);
            }
            direct_left_ = left;
            total += static_cast<int>(batch_.size());
            continue;
        }
        // Straight from the CQ, one CQE at a time: each leaves the ring before its handler
        // runs, so that a handler whose get_sqe() moves the rest to the stash (a full SQ)
        // moves only CQEs not handled yet; the stash then goes first.
        // In locals: a handler may touch anything reachable from `this`, so the compiler
        // would reload them from the ring after every call. The ring never uses 32-byte
        // CQEs (no IORING_SETUP_CQE32), so a CQE's index is its head under the mask.
        assert((ring_.flags & IORING_SETUP_CQE32) == 0);
        unsigned* khead = ring_.cq.khead;
        const unsigned* ktail = ring_.cq.ktail;
        const io_uring_cqe* cqes = ring_.cq.cqes;
        const unsigned mask = ring_.cq.ring_mask;
        unsigned head = *khead;
        unsigned tail = io_uring_smp_load_acquire(ktail);
        while (head != tail) {
            const io_uring_cqe& cqe = cqes[head & mask];
            std::uint64_t user_data = cqe.user_data;
            int res = cqe.res;
            std::uint32_t flags = cqe.flags;
            io_uring_smp_store_release(khead, ++head);
            dispatch(user_data, res, flags);
            ++total;
            if (unsigned now = *khead; now != head) [[unlikely]] {
                // The CQ's head moved under the handler: its get_sqe() found the SQ full
                // and moved the rest of the CQ to the stash (which goes first now), or it
                // resumed a coroutine (resume_completed) that ran a nested turn, which
                // reaped further (go on from there).
                if (!stash_.empty()) {
                    break;
                }
                head = now;
                tail = io_uring_smp_load_acquire(ktail);
            }
            if (head == tail) {
                tail = io_uring_smp_load_acquire(ktail); // what arrived meanwhile
            }
        }
        if (!stash_.empty()) {
            continue;
        }
        if (!io_uring_cq_has_overflow(&ring_)) {
            direct_left_ = 0;
            return total;
        }
        io_uring_get_events(&ring_); // flush the kernel's overflow list into the CQ
    }
}

namespace {

#if defined(__SANITIZE_THREAD__)
#define TETHER_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define TETHER_TSAN 1
#endif
#endif

// ThreadSanitizer holds back an asynchronous signal that lands on a thread blocked in a
// system call it does not intercept (io_uring_enter is one) until that thread next passes
// through one it does. A SIGTERM meant for notify_context's handler would wait for as long
// as the loop sleeps, forever on an idle loop. Under TSan, then, the loop wakes at least
// every 50 ms to let such signals through; other builds sleep as long as they like.
#ifdef TETHER_TSAN
constexpr duration max_sanitizer_wait = std::chrono::milliseconds(50);
#else
constexpr duration max_sanitizer_wait = duration::max();
#endif

} // namespace

void loop_impl::enter(bool wait, std::optional<duration> timeout) {
    wake_queued_ = false; // submitted here
    if (!wait) {
        io_uring_submit_and_get_events(&ring_);
        return;
    }
    time_point deadline = time_point::max();
    if (source_ == nullptr) {
        // The contexts' clock only when it holds a timer: next() takes its lock, an atomic
        // exchange per turn. A deadline that another thread schedules after this read posts
        // to the loop (loop_clock::schedule), which wakes the wait below: this turn already
        // counts as asleep (turn()).
        deadline = std::min(sleeps_.next(), clock_.empty() ? time_point::max() : clock_.next());
    }
    duration d = duration::max();
    if (deadline != time_point::max()) {
        d = std::max(deadline - now(), duration::zero());
    }
    if (timeout) {
        d = std::min(d, *timeout);
    }
    d = std::min(d, max_sanitizer_wait);
    io_uring_cqe* cqe = nullptr;
    if (d == duration::max()) {
        // One io_uring_enter that submits and waits for a CQE. Not
        // io_uring_submit_and_wait_timeout() without a timeout: its loop peeks at the CQ before
        // and after the enter (some 70 instructions a turn, 2% of an echo round trip's user
        // space) to skip the enter when a CQE is already there, which with DEFER_TASKRUN
        // never is (completions are posted inside our own enters), and otherwise costs an
        // enter that returns at once.
        io_uring_submit_and_wait(&ring_, 1);
    } else {
        auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(d).count();
        __kernel_timespec ts{};
        ts.tv_sec = ns / 1000000000;
        ts.tv_nsec = ns % 1000000000;
        io_uring_submit_and_wait_timeout(&ring_, &cqe, 1, &ts, nullptr);
    }
}

bool loop_impl::run_once(std::optional<duration> timeout) {
    return turn(timeout, false);
}

void loop_impl::run_until_stopped() {
    while (!stopping()) {
        turn(std::nullopt, true);
    }
    // Whoever drives the loop next may block between its turns: posters must wake it.
    sleeping_.store(true, std::memory_order_seq_cst);
}

bool loop_impl::turn(std::optional<duration> timeout, bool running) {
    loop* prev_loop = std::exchange(tls_loop, &owner_);
    executor* prev_ex = detail::exchange_current_executor(this);
    bind_thread();
    // Awake: until the turn ends (or waits), work posted from other threads is found by the
    // turn's own drain, and the posters need not wake us.
    sleeping_.store(false, std::memory_order_seq_cst);
    if (notify_fd_ >= 0) {
        std::uint64_t v;
        [[maybe_unused]] ssize_t r = ::read(notify_fd_, &v, sizeof v);
    }
    bool any = drain_remote();
    any |= fire_timers();
    any |= run_ready();
    bool idle = ready_.empty() && !has_remote_.load(std::memory_order_acquire) && stash_.empty() &&
                !stopping();
    // A turn that ran something returns without waiting (run_once's caller may have work of
    // its own: block_on's root may have finished). A running loop has nothing else to do:
    // it waits at once, and what this turn queued leaves with that wait, in one
    // io_uring_enter instead of a submit now and a wait in the next turn.
    bool wait = idle && (!any || running) && !(timeout && *timeout <= duration::zero());
    // While coroutines are ready and nothing waits to be submitted, enter the kernel only
    // every few turns (tokio polls its driver every 61 ticks): a turn that is all user space
    // costs a few nanoseconds, an io_uring_enter a microsecond. Completions wait at most that
    // many turns.
    bool entered = wait || idle || io_uring_sq_ready(&ring_) > 0 ||
                   ++turns_without_enter_ >= max_turns_without_enter;
    if (wait && spin_ > duration::zero()) {
        // What this turn queued goes to the kernel before the spin, not after it: a MSG_RING
        // that wakes another loop (the coroutine that just moved there) would otherwise wait
        // out the whole spin, and each hop of a ping-pong between two spinning loops cost
        // the spin time.
        if (io_uring_sq_ready(&ring_) > 0) {
            wake_queued_ = false;
            io_uring_submit(&ring_);
        }
        if (spin_for_remote(timeout)) {
            // Posted work (or a completion) showed up in user space. Posted work needs no
            // enter: take it at once, and let completions wait for the periodic enter as on
            // a busy turn, unless the spin saw some.
            wait = false;
            entered = io_uring_sq_ready(&ring_) > 0 || io_uring_cq_ready(&ring_) > 0 ||
                      completions_pending() || ++turns_without_enter_ >= max_turns_without_enter;
        }
    }
    if (wait) {
        // Going to sleep in the kernel: from now on posters must wake us. Dekker with the
        // posters (has_remote_ stored, then sleeping_ loaded, both seq_cst): either they see
        // us asleep and wake us, or we see their work here and don't wait.
        sleeping_.store(true, std::memory_order_seq_cst);
        if (has_remote_.load(std::memory_order_seq_cst)) {
            wait = false;
        }
    }
    if (entered) {
        enter(wait, timeout);
        turns_without_enter_ = 0;
    }
    sleeping_.store(false, std::memory_order_seq_cst);
    if (entered || !stash_.empty() || io_uring_cq_ready(&ring_) > 0) {
        any |= reap() > 0;
    }
    any |= drain_remote();
    any |= fire_timers();
    any |= run_ready();
    if (notify_fd_ >= 0) {
        flush_for_embedder();
    }
    // Between turns the loop may block anywhere (an embedder's epoll_wait): posters wake it.
    // A running loop goes straight into its next turn, whose drain finds what they post: a
    // wake (a MSG_RING, a syscall on their side and a CQE on ours) would be wasted.
    if (!running) {
        sleeping_.store(true, std::memory_order_seq_cst);
    }
    if (notify_fd_ >= 0 && (!ready_.empty() || has_remote_.load(std::memory_order_seq_cst))) {
        // Work is left for the next turn: keep the embedding loop's fd readable.
        std::uint64_t one = 1;
        [[maybe_unused]] ssize_t r = ::write(notify_fd_, &one, sizeof one);
    }
    detail::exchange_current_executor(prev_ex);
    tls_loop = prev_loop;
    return any;
}

bool loop_impl::spin_for_remote(std::optional<duration> timeout) {
    // Busy-poll for work from other loops before sleeping in the kernel: a poster that finds
    // us awake skips the wake, and we see its work within nanoseconds instead of a wakeup.
    // Never past the next timer, and never yielding: sched_yield hands the core to whoever
    // else is runnable for up to a whole time slice (milliseconds on a busy machine), far
    // longer than the spin.
    //
    // Spinning pays only while this thread has a core to itself. A spin that finds itself
    // preempted (a gap between two looks at the clock that 16 pauses can't explain) is on a
    // machine with more runnable threads than cores, where a spinning loop only takes CPU
    // from the thread it waits for: it stops, and the loop sleeps in the kernel for the next
    // spin_backoff of idle turns.
    //
    // And it adapts, as an adaptive mutex does: a spin that ends empty-handed halves the next
    // one (down to spin / 64), one that finds work doubles it (up to spin). Where replies
    // take longer than the spin (a loaded machine, a slow peer), the loop soon spins briefly
    // and sleeps, instead of burning the whole spin on every idle turn.
    constexpr auto preempted_gap = std::chrono::microseconds(50);
    constexpr auto spin_backoff = std::chrono::milliseconds(20);
    time_point last = std::chrono::steady_clock::now();
    if (last < no_spin_until_) {
        return false;
    }
    // Per thread: a thread runs one loop at a time (one that alternates between loops
    // shares what it learned between them).
    thread_local duration budget = duration::max();
    budget = std::clamp(budget, spin_ / 64, spin_);
    const time_point spent = last + budget;
    time_point until = spent;
    if (timeout && *timeout < budget) {
        until = last + *timeout; // run_once(timeout) waits no longer
    }
    if (source_ == nullptr) {
        until = std::min(until, std::min(sleeps_.next(), clock_.next()));
    }
    for (int i = 0;; ++i) {
        if (has_remote_.load(std::memory_order_acquire) || stopping()) {
            budget = std::min(budget * 2, spin_);
            return true;
        }
        if ((i & 15) == 15) {
            // A completion (I/O, a timeout) or a MSG_RING from a sender that saw us asleep
            // between turns: the kernel made a CQE, or queued work for this thread.
            if (io_uring_cq_ready(&ring_) > 0 || completions_pending()) {
                budget = std::min(budget * 2, spin_);
                return true;
            }
            time_point t = std::chrono::steady_clock::now();
            if (t - last >= preempted_gap) {
                ++spins_preempted;
                no_spin_until_ = t + spin_backoff;
                return false;
            }
            if (t >= until) {
                if (t >= spent) {
                    budget /= 2; // not when a timer cut it short
                }
                return false;
            }
            last = t;
        }
        __builtin_ia32_pause();
    }
}

bool loop_impl::completions_pending() const noexcept {
    // IORING_SQ_TASKRUN: with TASKRUN_FLAG the kernel sets it when it queues work (a
    // completion) for this thread to run at its next enter.
    return (IO_URING_READ_ONCE(*ring_.sq.kflags) & IORING_SQ_TASKRUN) != 0;
}

void loop_impl::run_until_idle() {
    while (run_once(duration::zero())) {
    }
}

void loop_impl::stop() noexcept {
    stop_.store(true, std::memory_order_release);
    if (!on_loop_thread()) {
        wake();
    }
}

loop_service* loop_impl::service(const void* key) const noexcept {
    for (const auto& [k, s] : services_) {
        if (k == key) {
            return s.get();
        }
    }
    return nullptr;
}

loop_service& loop_impl::add_service(const void* key, std::unique_ptr<loop_service> s) {
    services_.emplace_back(key, std::move(s));
    return *services_.back().second;
}

void loop_impl::flush_for_embedder() {
    // An embedding loop calls us only when fd() is readable, and never waits in our
    // io_uring_enter: what this turn queued must reach the kernel now (else a read started
    // in the turn's last batch would never make the fd readable), and the next timer needs a
    // kernel timeout whose CQE makes the fd readable when it is due. A manual clock wakes
    // the loop itself when it moves.
    if (source_ == nullptr) {
        time_point next = std::min(sleeps_.next(), clock_.next());
        if (next < notify_timer_at_) {
            auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(next.time_since_epoch())
                          .count();
            notify_timer_ts_.tv_sec = ns / 1000000000;
            notify_timer_ts_.tv_nsec = ns % 1000000000;
            io_uring_sqe* sqe = get_sqe();
            // steady_clock is CLOCK_MONOTONIC, the clock of IORING_TIMEOUT_ABS.
            if (notify_timer_at_ == time_point::max()) {
                io_uring_prep_timeout(sqe, &notify_timer_ts_, 0, IORING_TIMEOUT_ABS);
                io_uring_sqe_set_data(sqe, static_cast<completion*>(&notify_timer_op_));
            } else {
                // Bring the armed one forward. If it has just fired the update fails with
                // ENOENT, and its CQE makes the next turn arm again.
                io_uring_prep_timeout_update(
                    sqe, &notify_timer_ts_,
                    reinterpret_cast<std::uintptr_t>(static_cast<completion*>(&notify_timer_op_)),
                    IORING_TIMEOUT_ABS);
                io_uring_sqe_set_data(sqe, &ignored_cqe);
            }
            notify_timer_at_ = next;
        }
    }
    if (io_uring_sq_ready(&ring_) > 0) {
        io_uring_submit(&ring_);
    }
}

int loop_impl::notify_fd() {
    if (notify_fd_ < 0) {
        int fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (fd < 0) {
            throw std::system_error(errno, std::system_category(), "tether: eventfd");
        }
        int r = io_uring_register_eventfd(&ring_, fd);
        if (r < 0) {
            ::close(fd);
            throw std::system_error(-r, std::system_category(), "tether: register eventfd");
        }
        notify_fd_ = fd;
        notify_timer_op_.self = this;
        notify_timer_op_.complete = [](completion* c, int, std::uint32_t) noexcept {
            static_cast<notify_timer_op*>(c)->self->notify_timer_at_ = time_point::max();
        };
        // Readable at first, so that the embedding loop runs a first turn: it submits what
        // is queued, the loop's own wake read included (until then a post from another
        // thread could not make the fd readable).
        std::uint64_t one = 1;
        [[maybe_unused]] ssize_t w = ::write(fd, &one, sizeof one);
    }
    return notify_fd_;
}

} // namespace detail

// ---- loop --------------------------------------------------------------------------------

loop::loop() : loop(options{}) {
}
loop::loop(options opts) : impl_(std::make_unique<detail::loop_impl>(*this, opts)) {
}
loop::~loop() = default;

void loop::run() {
    impl_->clear_stop();
    impl_->run_until_stopped();
}

void loop::stop() noexcept {
    impl_->stop();
}
bool loop::run_once(std::optional<duration> timeout) {
    return impl_->run_once(timeout);
}
void loop::run_until_idle() {
    impl_->run_until_idle();
}
void loop::post(std::function<void()> fn) {
    impl_->post(std::move(fn));
}
int loop::fd() {
    int fd = impl_->notify_fd();
    return fd;
}
tether::clock& loop::clock() noexcept {
    return impl_->ctx_clock();
}
context loop::background() const noexcept {
    return impl_->background();
}
loop* loop::current() noexcept {
    return detail::tls_loop;
}
std::uint32_t loop::ring_flags() const noexcept {
    return impl_->flags();
}
unsigned loop::fixed_files_in_use() noexcept {
    return impl_->files().in_use();
}
void loop::schedule(std::coroutine_handle<> h) {
    impl_->schedule(h);
}
void loop::post_resume(std::coroutine_handle<> h) {
    impl_->post_resume(h);
}

} // namespace tether
