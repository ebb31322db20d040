#pragma once
// The loop's insides: the ring, queues and timers. Included by runtime and net .cpp files
// only (it pulls in liburing).

#include "context/detail/spin_lock.hpp"
#include "context/detail/timer_heap.hpp"
#include "runtime/detail/file_table.hpp"
#include "runtime/detail/op.hpp"
#include "runtime/detail/waiter.hpp"
#include "runtime/loop.hpp"

#include <liburing.h>

#include <atomic>
#include <cassert>
#include <coroutine>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

namespace tether::detail {

/// The loop running on this thread, or null: what current_loop() returns, read inline by the
/// hot paths of runtime and net. Initial-exec, constinit: one %fs-relative load.
[[gnu::tls_model("initial-exec")]] extern constinit thread_local loop* tls_loop;

/// waiter::arm() on the running loop (arm_inline() in waiter.hpp, with `tls_loop`).
template <bool Fresh = false>
inline bool arm_inline(waiter& w, const context& c) noexcept {
    return arm_inline<Fresh>(w, c, tls_loop);
}

/// The on_cancel of a uring_op: queues an IORING_OP_ASYNC_CANCEL for it (loop.cpp).
void uring_op_cancel(waiter* w) noexcept;

/// The clock the loop gives its contexts: reads the loop's time source and keeps their
/// deadline timers in a locked heap (contexts may be created on any thread), fired on the
/// loop's thread.
class loop_clock final : public clock {
public:
    loop_clock(loop_impl& l, clock* source) noexcept : loop_(l), source_(source) {}
    time_point now() const noexcept override {
        return source_ ? source_->now() : std::chrono::steady_clock::now();
    }
    void schedule(timer_node& t) override;
    bool unschedule(timer_node& t) noexcept override;
    /// Fires due timers (loop thread); returns how many fired.
    int fire_due(time_point now);
    time_point next() const;
    /// Returns true if no timer is scheduled (read without the lock: a timer scheduled from
    /// another thread meanwhile also posts to the loop if it is the earliest).
    bool empty() const noexcept { return size_.load(std::memory_order_relaxed) == 0; }
    /// Returns the clock whose time this one tells: its source, or the real clock.
    const clock& time_base() const noexcept;
    /// Releases the foreign deadline timers still scheduled here (see arm_foreign_deadline):
    /// the loop is being destroyed.
    void drop_foreign_timers() noexcept;

private:
    loop_impl& loop_;
    clock* source_;
    // A spin lock: the sections are heap updates, and a context made on the loop's thread
    // schedules and unschedules its deadline without contention (a mutex cost twice as much).
    mutable spin_lock mu_;
    timer_heap heap_;
    std::atomic<std::size_t> size_{0};
};

/// The loop's ready queue: a ring of coroutine handles that doubles when full. A push and a
/// pop cost a few instructions (a deque's cost several times that), and a queue that has grown
/// never allocates again.
class handle_ring {
public:
    bool empty() const noexcept { return head_ == tail_; }
    std::size_t size() const noexcept { return tail_ - head_; }
    void push_back(std::coroutine_handle<> h) {
        if (tail_ - head_ == cap_) {
            grow_and_push(h); // a tail call: the common case needs no frame
            return;
        }
        buf_[tail_++ & (cap_ - 1)] = h;
    }
    /// Removes and returns the oldest handle; the queue must not be empty.
    std::coroutine_handle<> pop_front() noexcept { return buf_[head_++ & (cap_ - 1)]; }
    std::coroutine_handle<> front() const noexcept { return buf_[head_ & (cap_ - 1)]; }

private:
    [[gnu::noinline]] void grow_and_push(std::coroutine_handle<> h) {
        grow();
        buf_[tail_++ & (cap_ - 1)] = h;
    }
    void grow() {
        std::size_t cap = cap_ == 0 ? 64 : cap_ * 2;
        auto buf = std::make_unique<std::coroutine_handle<>[]>(cap);
        for (std::size_t i = head_; i != tail_; ++i) {
            buf[i - head_] = buf_[i & (cap_ - 1)];
        }
        tail_ -= head_;
        head_ = 0;
        cap_ = cap;
        buf_ = std::move(buf);
    }
    std::unique_ptr<std::coroutine_handle<>[]> buf_;
    std::size_t cap_ = 0; // a power of two
    std::size_t head_ = 0;
    std::size_t tail_ = 0;
};

/// State another part of tether keeps per loop (net's buffer ring, listeners waiting for
/// their last CQE): created on first use, destroyed with the loop, before its ring.
struct loop_service {
    virtual ~loop_service() = default;
};

class loop_impl final : public executor {
public:
    loop_impl(loop& owner, loop::options opts);
    ~loop_impl() override;

    // executor
    void post(std::function<void()> fn) override;

    bool run_once(std::optional<duration> timeout);
    /// Runs turns until stop() (loop::run(), a runtime's threads): each turn that finds
    /// nothing left to run waits in the kernel, and posters need not wake the loop between
    /// its turns.
    void run_until_stopped();
    void run_until_idle();
    void stop() noexcept;
    bool stopping() const noexcept { return stop_.load(std::memory_order_acquire); }
    void clear_stop() noexcept { stop_.store(false, std::memory_order_release); }

    /// Returns an SQE, submitting (and stashing completions) when the SQ is full.
    io_uring_sqe* get_sqe() {
        // io_uring_get_sqe() without its SQPOLL and SQE128 cases: this ring has neither
        // (setup_ring), so the kernel moves the SQ's head only inside our io_uring_enter.
        io_uring_sq& sq = ring_.sq;
        unsigned tail = sq.sqe_tail;
        if (tail - *sq.khead < sq.ring_entries) {
            sq.sqe_tail = tail + 1;
            return &sq.sqes[tail & sq.ring_mask];
        }
        return get_sqe_slow();
    }
    /// Returns an SQE, or null if the SQ is full (then get_sqe() makes room).
    io_uring_sqe* sqe_if_room() noexcept {
        io_uring_sq& sq = ring_.sq;
        unsigned tail = sq.sqe_tail;
        if (tail - *sq.khead < sq.ring_entries) {
            sq.sqe_tail = tail + 1;
            return &sq.sqes[tail & sq.ring_mask];
        }
        return nullptr;
    }
    /// IOSQE_CQE_SKIP_SUCCESS where the kernel has it (for SQEs whose success needs no CQE),
    /// else 0.
    std::uint8_t skip_success_flag() const noexcept { return skip_success_; }
    /// Queues an IORING_OP_ASYNC_CANCEL of the SQE whose user_data is `target`. The cancel's
    /// own CQE needs no handling (its user_data is &ignored_cqe; skipped when it succeeds,
    /// where the kernel can): the target's own CQE is what matters.
    void cancel_in_kernel(completion* target) {
        io_uring_sqe* sqe = get_sqe();
        io_uring_prep_cancel64(sqe, reinterpret_cast<std::uintptr_t>(target), 0);
        io_uring_sqe_set_data(sqe, &ignored_cqe);
        io_uring_sqe_set_flags(sqe, skip_success_);
    }
    void schedule(std::coroutine_handle<> h) { ready_.push_back(h); }
    /// Resumes `h` at once if a CQE handler called from reap() completed its await and
    /// nothing else is ready (and this reap has resumed fewer than `direct_budget` so far);
    /// else queues it as schedule() does. For CQE handlers whose last act is this call: the
    /// coroutine may end and free what the handler was given.
    ///
    /// A coroutine resumed here runs where run_ready() would have run it next (the queue is
    /// empty), on this loop's thread, without a push, a pop and a pass through run_ready().
    void resume_completed(std::coroutine_handle<> h) {
        if (direct_left_ != 0 && ready_.empty()) {
            --direct_left_;
            ++direct_resumes;
            h.resume();
            if (wake_queued_) {
                submit_wake(); // as run_ready() does after each resume
            }
            return;
        }
        ready_.push_back(h);
    }

    /// Sleep timers (loop thread only).
    void add_timer(timer_node& t) { sleeps_.push(&t); }
    bool remove_timer(timer_node& t) noexcept { return sleeps_.remove(&t); }

    /// Queues a waiter whose context was canceled on another thread.
    void remote_cancel(waiter* w) noexcept;
    /// Removes `w` from the remote queue if it is there (loop thread; after disarm).
    void unqueue_remote(waiter* w) noexcept;
    /// Wakes the loop from another thread: from another loop's thread with one
    /// IORING_OP_MSG_RING SQE on that loop's ring, else (a foreign thread, or a kernel
    /// without MSG_RING) by writing the wake pipe.
    void wake() noexcept;
    /// Wakes the loop through its pipe (any thread).
    void wake_by_pipe() noexcept;

    /// Queues `h` to resume on this loop. Thread safety: any thread.
    void post_resume(std::coroutine_handle<> h);
    /// Queues `fn(arg)` to run on this loop's thread. Thread safety: any thread.
    void post_call(void (*fn)(void*) noexcept, void* arg);

    /// Returns the service stored under `key`, or null (loop thread).
    loop_service* service(const void* key) const noexcept;
    /// Stores `s` under `key` and returns it (loop thread). Services are destroyed in the
    /// reverse order of their creation, before the ring is torn down; they must not submit.
    loop_service& add_service(const void* key, std::unique_ptr<loop_service> s);

    /// The ring, for registrations other parts make (net's provided buffer ring).
    io_uring& ring() noexcept { return ring_; }
    /// The table of registered files (streams' fixed files).
    file_table& files() noexcept { return files_; }

    int notify_fd();
    clock& ctx_clock() noexcept { return clock_; }
    loop_clock& ctx_clock_impl() noexcept { return clock_; }
    const context& background() const noexcept { return background_; }
    time_point now() const noexcept { return clock_.now(); }
    std::uint32_t flags() const noexcept { return ring_flags_; }
    bool on_loop_thread() const noexcept;
    loop& owner() noexcept { return owner_; }

    // Counters for tests and benchmarks.
    std::uint64_t submitted_cancels = 0;
    /// Coroutines resume_completed() resumed at once rather than queued.
    std::uint64_t direct_resumes = 0;
    /// Wakes this loop received through MSG_RING, and those it sent to other loops.
    std::atomic<std::uint64_t> msg_ring_received{0};
    std::uint64_t msg_ring_sent = 0;
    /// Spins cut short because the thread was preempted (spinning then pauses a while).
    std::uint64_t spins_preempted = 0;
    /// Returns true if other loops may wake this one through MSG_RING.
    bool accepts_msg_ring() const noexcept {
        return msg_ring_ready_.load(std::memory_order_acquire);
    }
    /// Returns true if this loop enters the kernel through a registered ring fd
    /// (IORING_ENTER_REGISTERED_RING; see bind_thread).
    bool ring_fd_registered() const noexcept { return ring_fd_registered_; }

private:
    /// get_sqe() when the SQ is full.
    [[gnu::noinline]] io_uring_sqe* get_sqe_slow();
    void setup_ring(const loop::options& o);
    void arm_wake_read();
    /// Queues a MSG_RING SQE on this ring that posts a wake CQE to `target`.
    void send_msg_ring(loop_impl& target) noexcept;
    // bind_thread(), drain_remote(), run_ready() and fire_timers() run two to four times a
    // turn and most often find nothing to do: that test is inline, the work is not.
    void bind_thread() {
        if (!enabled_) {
            enable_here();
        }
    }
    [[gnu::noinline]] void enable_here();
    bool drain_remote() {
        if (!has_remote_.load(std::memory_order_acquire)) {
            return false;
        }
        return drain_remote_queues();
    }
    [[gnu::noinline]] bool drain_remote_queues();
    bool run_ready() {
        if (ready_.empty()) {
            return false;
        }
        return run_ready_batch();
    }
    [[gnu::noinline]] bool run_ready_batch();
    /// Submits a queued MSG_RING wake now (see run_ready).
    [[gnu::noinline]] void submit_wake() noexcept;
    /// Fires the due timers; returns true if any fired.
    bool fire_timers() {
        if (sleeps_.empty() && clock_.empty()) {
            return false;
        }
        return fire_due_timers();
    }
    [[gnu::noinline]] bool fire_due_timers();
    int reap();
    void dispatch(std::uint64_t user_data, int res, std::uint32_t flags);
    void enter(bool wait, std::optional<duration> timeout);
    /// One turn. `running`: the loop runs turn after turn (run_until_stopped), and nothing
    /// else on its thread needs it to return after doing some work.
    bool turn(std::optional<duration> timeout, bool running);
    /// Moves the CQEs in the CQ to the stash (processed at the next reap); returns how many.
    unsigned stash_completions();
    void flush_for_embedder();
    /// Spins up to spin_ (and up to `timeout`) waiting for posted work; returns true if some
    /// arrived.
    bool spin_for_remote(std::optional<duration> timeout);
    /// Returns true if the kernel flagged completions for this thread (TASKRUN_FLAG).
    bool completions_pending() const noexcept;
    /// Returns true if a poster must wake the loop: it is asleep in the kernel or between
    /// turns, where it would not look at its remote queues before blocking.
    bool sleeping() const noexcept { return sleeping_.load(std::memory_order_seq_cst); }

    loop& owner_;
    io_uring ring_{};
    std::uint32_t ring_flags_ = 0;
    bool enabled_ = false;
    bool single_issuer_ = false;
    bool ring_fd_registered_ = false; // liburing enters through a registered fd (bind_thread)
    handle_ring ready_;
    static constexpr int max_turns_without_enter = 61;
    // Resumes per run_ready() beyond the batch it started with (see run_ready).
    static constexpr std::size_t ready_budget = 32;
    int turns_without_enter_ = 0;
    // Direct resumes resume_completed() may still do in this reap(); 0 outside reap().
    static constexpr unsigned direct_budget = 256;
    unsigned direct_left_ = 0;
    std::uint8_t skip_success_ = 0;
    timer_heap sleeps_;
    loop_clock clock_;
    clock* source_;
    std::uint64_t observer_ = 0;
    context background_;

    // Cross-thread state.
    std::mutex remote_mu_;
    std::vector<std::function<void()>> posted_;
    struct call {
        void (*fn)(void*) noexcept;
        void* arg;
    };
    std::vector<call> calls_;
    std::vector<std::coroutine_handle<>> resumes_;
    // Swapped with the two above while draining, so that both keep their capacity.
    std::vector<call> drained_calls_;
    std::vector<std::coroutine_handle<>> drained_resumes_;
    waiter* remote_head_ = nullptr;
    bool wake_pending_ = false;
    std::atomic<bool> has_remote_{false};
    std::atomic<bool> stop_{false};
    std::atomic<bool> sleeping_{true};
    duration spin_{};
    time_point no_spin_until_{}; // a preempted spin stops the spinning until then

    int wake_fd_ = -1;       // the wake pipe's read end, read by the ring
    int wake_write_fd_ = -1; // its write end, written by wake()
    std::uint64_t wake_buf_ = 0;
    struct wake_op : completion {
        loop_impl* self = nullptr;
    } wake_op_{};
    // MSG_RING: this ring can send one (probed), and others may target it (enabled, with
    // the opcode, and not turned off in the options).
    bool msg_ring_ok_ = false;
    bool msg_ring_wanted_ = true;
    std::atomic<bool> msg_ring_ready_{false};
    bool wake_queued_ = false; // a MSG_RING SQE waits in our SQ
    struct msg_op : completion {
        loop_impl* self = nullptr;
    };
    msg_op msg_recv_op_{}; // the user_data of the CQE another loop posts here
    msg_op msg_fail_op_{}; // the user_data of a failed MSG_RING aimed here (on the sender)
    int notify_fd_ = -1;
    // With a notify fd, the next timer is also a kernel timeout (see flush_for_embedder).
    struct notify_timer_op : completion {
        loop_impl* self = nullptr;
    } notify_timer_op_{};
    __kernel_timespec notify_timer_ts_{};
    time_point notify_timer_at_ = time_point::max();

    std::vector<std::pair<const void*, std::unique_ptr<loop_service>>> services_;

    // CQEs reaped while the SQ was full, processed at the next reap.
    struct stashed {
        std::uint64_t user_data;
        int res;
        std::uint32_t flags;
    };
    std::vector<stashed> stash_;
    std::vector<stashed> batch_;
    file_table files_;
};

/// Everything waiter::finish() does but its common case (loop.cpp).
void finish_slow(waiter* w, std::error_code e) noexcept;
/// finish_slow(), then resume_completed() (loop.cpp).
void finish_slow_resume(waiter* w, std::error_code e) noexcept;

/// waiter::finish(), with its common case inline for the CQE handlers of runtime and net: no
/// registration of its own to disarm (no ext: none, or its task's chain), nothing queued from
/// another thread.
inline void finish_inline(waiter& w, std::error_code e) noexcept {
    if (w.ext != nullptr || w.completed_or_queued()) {
        finish_slow(&w, e);
        return;
    }
    w.completed = true;
    w.error = e;
    if (w.on_chain) {
        w.on_chain = false;
        w.owner->chain()->current = nullptr;
    }
    w.lp->impl().schedule(w.handle);
}

/// finish_inline(w, no_error) for a CQE handler, as its last act: the coroutine may resume
/// before this returns (loop_impl::resume_completed), so nothing the await owns may be
/// touched after.
///
/// For a waiter made for this await (a stream's read or write), whose `error` nothing has
/// set since it was made: it is still no_error, and is not written again.
inline void finish_completed(waiter& w) noexcept {
    if (w.ext != nullptr || w.completed_or_queued()) {
        finish_slow_resume(&w, no_error);
        return;
    }
    assert(!w.error);
    w.completed = true;
    if (w.on_chain) {
        w.on_chain = false;
        // On its chain: the owner's chain exists (what chain() would test).
        reinterpret_cast<await_chain*>(w.owner->state)->current = nullptr;
    }
    w.lp->impl().resume_completed(w.handle);
}

} // namespace tether::detail
