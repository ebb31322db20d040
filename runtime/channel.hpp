#pragma once
// channel<T>: Go's channels between tasks, on one loop or several.
//   channel<T>     a FIFO of values between tasks: unbuffered (a rendezvous) or buffered
//   channel_errc   why a send or receive did not happen: closed, full, empty
// `select` over several channel operations and done signals is in runtime/select.hpp.

#include "context/context.hpp"
#include "context/detail/spin_lock.hpp"
#include "runtime/detail/wait_list.hpp"
#include "runtime/detail/waiter.hpp"
#include "runtime/result.hpp"
#include "runtime/task.hpp"

#include <cassert>
#include <coroutine>
#include <cstddef>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <system_error>
#include <type_traits>
#include <utility>

namespace tether {

/// Why a channel operation did not happen, as error codes of `channel_category()`.
///
/// Where Go panics (send on a closed channel, close of a closed channel), tether returns
/// an error or false: bad input never hits an assert.
enum class channel_errc : int {
    closed = 1, ///< the channel is closed (for a receive: closed and drained)
    full = 2,   ///< `try_send`: no receiver is waiting and the buffer has no room
    empty = 3,  ///< `try_receive`: nothing is buffered and no sender is waiting
};

/// Returns the error category of `channel_errc` (its name is "tether.channel").
///
/// Thread safety: returns the same immortal object from every thread.
const std::error_category& channel_category() noexcept;

/// Returns `e` as an error code of `channel_category()`.
inline std::error_code make_error_code(channel_errc e) noexcept {
    return {static_cast<int>(e), channel_category()};
}

} // namespace tether

template <>
struct std::is_error_code_enum<tether::channel_errc> : std::true_type {};

namespace tether {

template <class T>
class channel;

namespace detail {

struct select_core;

/// A channel operation queued on a channel until a counterpart, `close()` or its context
/// ends it (Go's sudog): a lone `send`/`receive`, or one case of a `select`.
struct chan_node : list_hook {
    wait_list* queue = nullptr;         // the channel queue it waits in
    spin_lock* lock = nullptr;          // the channel's lock, which guards `queue`
    waiter* single = nullptr;           // a lone operation: finished directly
    select_core* sel = nullptr;         // or a select case: the select decides
    int index = 0;                      // the case's index in its select
    void* item = nullptr;               // a send's T, or a receive's std::optional<T>
    std::error_code outcome = no_error; // carried to the waiter's loop by a remote complete
    chan_node* done_next = nullptr;     // close(): the claimed nodes it completes
    void* chan = nullptr;               // a select case: its channel, for `ready_now`
    /// A select case: whether its operation could proceed now (the channel's lock held).
    bool (*ready_now)(const chan_node& self) noexcept = nullptr;

    /// Takes the operation for whoever dequeued it (with the channel's lock held): always
    /// true for a lone operation; for a select case, true only if no other case (or the
    /// select's context) won first.
    bool claim() noexcept { return sel == nullptr || claim_case(); }
    /// claim() for a select case.
    bool claim_case() noexcept;
    /// Finishes a claimed operation: success (the value moved), or `e` (closed). Called
    /// without the channel's lock; from another loop's thread the waiter is finished on its
    /// own loop.
    void complete(std::error_code e) noexcept;
    /// `complete({})`. Inline for a lone operation of this loop, the common case: it
    /// finishes the waiter at once.
    void complete_ok() noexcept {
        if (sel == nullptr && single->lp == current_loop()) {
            single->finish(no_error);
        } else {
            complete(no_error);
        }
    }
};

/// Returns true if `q` holds an operation that a counterpart could take now (the channel's
/// lock held): a lone one, or a case of a select other than `self` that nothing won yet.
bool has_claimable(const wait_list& q, const select_core* self) noexcept;

/// A fixed-capacity FIFO of `T`s, allocated once.
template <class T>
class ring_buffer {
public:
    explicit ring_buffer(std::size_t capacity)
        : cap_(capacity), data_(capacity ? std::allocator<T>().allocate(capacity) : nullptr) {}
    ring_buffer(const ring_buffer&) = delete;
    ring_buffer& operator=(const ring_buffer&) = delete;
    ~ring_buffer() {
        while (size_ > 0) {
            (void)pop();
        }
        if (data_) {
            std::allocator<T>().deallocate(data_, cap_);
        }
    }
    std::size_t size() const noexcept { return size_; }
    std::size_t capacity() const noexcept { return cap_; }
    bool empty() const noexcept { return size_ == 0; }
    bool full() const noexcept { return size_ == cap_; }
    void push(T&& v) noexcept {
        std::size_t i = head_ + size_;
        if (i >= cap_) {
            i -= cap_;
        }
        std::construct_at(data_ + i, std::move(v));
        ++size_;
    }
    T pop() noexcept {
        T* p = data_ + head_;
        T v(std::move(*p));
        std::destroy_at(p);
        if (++head_ == cap_) {
            head_ = 0;
        }
        --size_;
        return v;
    }

private:
    std::size_t cap_;
    T* data_;
    std::size_t head_ = 0;
    std::size_t size_ = 0;
};

/// What an operation attempted without waiting did.
enum class chan_outcome { done, closed, would_block };

/// The on_cancel of a parked lone operation (on its loop): leaves the queue and fails if
/// still queued; else a counterpart took it, and its completion is on the way.
void unpark(waiter* w) noexcept;

/// Parks a lone send or receive (the channel's `lock` held): arms `w` on `c` and queues `n`
/// in `q`; returns false, queuing nothing, if `c` is already done. Inline: it runs at every
/// wait of a channel operation.
inline bool park(chan_node& n, waiter& w, wait_list& q, spin_lock& lock, const context& c,
                 std::coroutine_handle<> h) noexcept {
    w.lp = current_loop();
    assert(w.lp != nullptr && "channel operations must be awaited on a running loop");
    w.handle = h;
    w.on_cancel = &unpark;
    w.data = &n;
    n.single = &w;
    n.queue = &q;
    n.lock = &lock;
    if (!w.arm(c)) {
        return false; // done since the check, on another thread
    }
    q.push_back(&n);
    return true;
}

/// What a lone send or receive did: completed without waiting, found the channel closed or
/// its context done, or made its `parked_op` (whose waiter then holds the outcome).
enum class lone_state : unsigned char { done, closed, ctx_done, parked };

/// The queue entry and waiter of a lone send or receive that waits.
struct parked_op {
    chan_node node;
    waiter w;
};

/// Room for a `parked_op`, constructed only when the operation waits: one that completes
/// at once (half the operations of a ping-pong) skips initializing its ~200 bytes.
class lazy_parked_op {
public:
    lazy_parked_op() noexcept {} // buf_ stays uninitialized until make()
    lazy_parked_op(const lazy_parked_op&) = delete;
    lazy_parked_op& operator=(const lazy_parked_op&) = delete;
    ~lazy_parked_op() {
        if (made_) {
            std::destroy_at(get());
        }
    }
    parked_op& make() noexcept {
        made_ = true;
        // Default-initialized, not value-initialized (`parked_op()`): the member initializers
        // set every field, and value-initialization would first zero all 256 bytes with
        // `rep stos`, slower than the stores it saves.
        return *::new (static_cast<void*>(buf_)) parked_op;
    }
    /// The op made by make().
    parked_op* get() noexcept { return std::launder(reinterpret_cast<parked_op*>(buf_)); }

private:
    alignas(parked_op) unsigned char buf_[sizeof(parked_op)];
    bool made_ = false;
};

/// The body of a lone send or receive: fails at once (`ctx_done`) under a done context;
/// else tries `attempt(served)` and, if it would block, makes `p` and parks its node
/// (carrying `item`) in `q`, both under `lock`, so a peer arriving in between can't wait
/// too. Completes the peer it served outside the lock. Sets `st`; returns true if parked.
template <class Attempt>
bool try_or_park(Attempt attempt, void* item, lazy_parked_op& p, lone_state& st, chain_owner* owner,
                 wait_list& q, spin_lock& lock, const context& c,
                 std::coroutine_handle<> h) noexcept {
    if (c.is_done()) {
        st = lone_state::ctx_done;
        return false;
    }
    chan_node* served = nullptr;
    chan_outcome o;
    bool parked = false;
    {
        std::lock_guard lk(lock);
        o = attempt(served);
        if (o == chan_outcome::would_block) {
            parked_op& op = p.make();
            op.node.item = item;
            op.w.owner = owner;
            // Not parked only if the context was canceled since the check (on another
            // thread): the waiter holds why.
            parked = park(op.node, op.w, q, lock, c, h);
        }
    }
    if (served != nullptr) {
        served->complete_ok();
    }
    st = o == chan_outcome::done     ? lone_state::done
         : o == chan_outcome::closed ? lone_state::closed
                                     : lone_state::parked;
    return parked;
}

/// The error of a lone send or receive that ended in `st` (not `done`) under `c`.
inline std::error_code lone_error(lone_state st, const context* c, lazy_parked_op& p) noexcept {
    switch (st) {
    case lone_state::closed:
        return make_error_code(channel_errc::closed);
    case lone_state::ctx_done:
        return c->err(); // done is final: the same error as when the await began
    case lone_state::parked:
        return p.get()->w.error;
    case lone_state::done:
        break;
    }
    return no_error;
}

template <class T>
class send_awaiter;
template <class T>
class receive_awaiter;

/// `ch.send(v)`: a send not yet started. `co_await` it, or give it to `select`.
template <class T>
struct [[nodiscard]] send_op {
    channel<T>* ch;
    T value;
    send_awaiter<T> operator co_await() && noexcept { return {ch, std::move(value)}; }
};

/// `ch.receive()`: a receive not yet started. `co_await` it, or give it to `select`.
template <class T>
struct [[nodiscard]] receive_op {
    channel<T>* ch;
    receive_awaiter<T> operator co_await() && noexcept { return receive_awaiter<T>{ch}; }
};

} // namespace detail

/// A channel of `T`s between tasks, with Go's semantics.
///
/// With capacity 0 (the default) it is unbuffered: a send waits until a receiver takes the
/// value, and a receive until a sender gives one (a rendezvous). With capacity n, sends wait
/// only while n values are buffered, and receives only while none are. Values come out in
/// the order they went in; waiting senders and receivers are served first come, first
/// served.
///
/// `close()` ends the channel: receives drain what is buffered, then fail with
/// `channel_errc::closed` (Go's `v, ok := <-ch` with ok false); sends fail with
/// `channel_errc::closed` (where Go panics).
///
/// `T` must be nothrow move constructible: a value is moved while it is handed over, and a
/// throw there would lose it.
///
/// Cancellation: every await fails at once with the task's context error when that context
/// is already done, even if it could complete without waiting (cancellation is sticky). A
/// canceled wait leaves the channel's queue and consumes nothing: a canceled receive took
/// no value, a canceled send gave none (its value is destroyed with the await). A wait that
/// was handed its value before the cancel took effect returns that value: nothing is lost.
///
/// Lifetime: the channel must outlive every operation on it; destroying it while a task
/// waits on it is a bug.
///
/// Thread safety: tasks on different loops may share a channel (many producers, many
/// consumers): the buffer and the queues are guarded by a spin lock held for a hand-off,
/// and a waiter served by a task on another loop resumes on its own loop. Nothing is lost
/// or duplicated, and the values of one producer arrive in the order it sent them. `close`,
/// `try_send`, `try_receive` and the queries may be called from any loop's thread. A
/// `select` must be on the loop of every task that uses its channels (see select.hpp). The
/// contexts of waiting tasks may be canceled from any thread.
///
/// Example (a worker draining a queue until it is closed):
///
///     while (result<job> j = co_await jobs.receive()) {
///         co_await run(*j);
///     }
///     // j.error() == channel_errc::closed once drained, or the context's error
template <class T>
class channel {
    static_assert(std::is_nothrow_move_constructible_v<T>,
                  "channel<T>: T must be nothrow move constructible");
    static_assert(std::is_nothrow_destructible_v<T>, "channel<T>: T must be nothrow destructible");

public:
    using value_type = T;

    /// Makes a channel that buffers up to `capacity` values (0: unbuffered).
    explicit channel(std::size_t capacity = 0) : buf_(capacity) {}
    channel(const channel&) = delete;
    channel& operator=(const channel&) = delete;
    /// Destroys the buffered values. No task may be waiting on the channel.
    ~channel() { assert(recvq_.empty() && sendq_.empty() && "channel destroyed with waiters"); }

    /// Returns an awaitable that sends `v`: `co_await ch.send(v)` gives `result<void>`.
    ///
    /// Completes without waiting when a receiver is waiting (the value goes straight to
    /// it) or the buffer has room; otherwise waits for a receiver, `close()` or the context.
    ///
    /// Errors: `channel_errc::closed` if the channel is closed before the value is taken;
    /// `errc::canceled` or `errc::deadline_exceeded` if the task's context is done first.
    /// On any error the value was not sent and is destroyed.
    ///
    /// Cancellation: cancel-safe; see the class.
    detail::send_op<T> send(T v) { return {this, std::move(v)}; }

    /// Returns an awaitable that receives a value: `co_await ch.receive()` gives
    /// `result<T>`.
    ///
    /// Takes the oldest buffered value (a waiting sender then refills the buffer), or the
    /// value of the oldest waiting sender; otherwise waits for a sender, `close()` or the
    /// context.
    ///
    /// Errors: `channel_errc::closed` once the channel is closed and drained;
    /// `errc::canceled` or `errc::deadline_exceeded` if the task's context is done first.
    ///
    /// Cancellation: cancel-safe: a receive that fails took no value.
    detail::receive_op<T> receive() noexcept { return {this}; }

    /// Sends `v` if that needs no wait: a receiver is waiting or the buffer has room.
    ///
    /// Errors: `channel_errc::full` if it would wait, `channel_errc::closed` if the channel
    /// is closed. On error `v` is left as it was (not moved from).
    result<void> try_send(T&& v) noexcept { return to_result(send_now(v)); }
    /// Sends a copy of `v` if that needs no wait; as above.
    result<void> try_send(const T& v) {
        T copy(v);
        return to_result(send_now(copy));
    }

    /// Receives a value if one is buffered or a sender is waiting.
    ///
    /// Errors: `channel_errc::empty` if it would wait, `channel_errc::closed` if the channel
    /// is closed and drained.
    result<T> try_receive() noexcept {
        std::optional<T> v;
        switch (receive_now(v)) {
        case detail::chan_outcome::done:
            return std::move(*v);
        case detail::chan_outcome::closed:
            return make_error_code(channel_errc::closed);
        case detail::chan_outcome::would_block:
            break;
        }
        return make_error_code(channel_errc::empty);
    }

    /// Closes the channel and returns true; returns false if it was already closed.
    ///
    /// Waiting receivers resume with `channel_errc::closed` (the buffer is then empty);
    /// waiting senders resume with `channel_errc::closed` and their values are destroyed.
    /// Buffered values stay for receivers to drain.
    bool close() noexcept {
        detail::chan_node* done = nullptr;
        {
            std::lock_guard lk(lock_);
            if (closed_) {
                return false;
            }
            closed_ = true;
            for (detail::wait_list* q : {&recvq_, &sendq_}) {
                while (detail::chan_node* n = pop_claimed(*q)) {
                    n->done_next = done;
                    done = n;
                }
            }
        }
        // Completed without the lock: a select case's completion takes other channels'.
        std::error_code e = make_error_code(channel_errc::closed);
        while (done != nullptr) {
            detail::chan_node* n = std::exchange(done, done->done_next);
            n->complete(e);
        }
        return true;
    }

    /// Returns true once `close()` has been called.
    bool is_closed() const noexcept {
        std::lock_guard lk(lock_);
        return closed_;
    }
    /// Returns how many values are buffered.
    std::size_t size() const noexcept {
        std::lock_guard lk(lock_);
        return buf_.size();
    }
    /// Returns how many values the buffer holds at most (0: unbuffered).
    std::size_t capacity() const noexcept { return buf_.capacity(); }

    // ---- for the awaiters and select (detail) ---------------------------------------------

    /// Sends `v` if that needs no wait; moves from `v` only when it returns done.
    detail::chan_outcome send_now(T& v) noexcept {
        detail::chan_node* served = nullptr;
        detail::chan_outcome o;
        {
            std::lock_guard lk(lock_);
            o = send_locked(v, served);
        }
        if (served != nullptr) {
            served->complete_ok();
        }
        return o;
    }

    /// Receives into `out` if that needs no wait.
    detail::chan_outcome receive_now(std::optional<T>& out) noexcept {
        detail::chan_node* served = nullptr;
        detail::chan_outcome o;
        {
            std::lock_guard lk(lock_);
            o = receive_locked(out, served);
        }
        if (served != nullptr) {
            served->complete_ok();
        }
        return o;
    }

    /// `send_now` with the lock held: a receiver it hands the value to is left in `served`,
    /// for the caller to complete once it has unlocked.
    detail::chan_outcome send_locked(T& v, detail::chan_node*& served) noexcept {
        if (closed_) {
            return detail::chan_outcome::closed;
        }
        if (detail::chan_node* r = pop_claimed(recvq_)) {
            static_cast<std::optional<T>*>(r->item)->emplace(std::move(v));
            served = r;
            return detail::chan_outcome::done;
        }
        if (!buf_.full()) {
            buf_.push(std::move(v));
            return detail::chan_outcome::done;
        }
        return detail::chan_outcome::would_block;
    }

    /// `receive_now` with the lock held; as `send_locked`.
    detail::chan_outcome receive_locked(std::optional<T>& out,
                                        detail::chan_node*& served) noexcept {
        if (!buf_.empty()) {
            out.emplace(buf_.pop());
            // A sender waiting for room takes the slot just freed, keeping the FIFO order.
            if (detail::chan_node* s = pop_claimed(sendq_)) {
                buf_.push(std::move(*static_cast<T*>(s->item)));
                served = s;
            }
            return detail::chan_outcome::done;
        }
        if (detail::chan_node* s = pop_claimed(sendq_)) {
            out.emplace(std::move(*static_cast<T*>(s->item)));
            served = s;
            return detail::chan_outcome::done;
        }
        return closed_ ? detail::chan_outcome::closed : detail::chan_outcome::would_block;
    }

    /// With the lock held: whether a send by select `self` would proceed at once (a waiting
    /// receiver other than `self`'s own case, room in the buffer, or closed).
    bool can_send_locked(const detail::select_core* self) const noexcept {
        return closed_ || !buf_.full() || detail::has_claimable(recvq_, self);
    }
    /// With the lock held: whether a receive by select `self` would proceed at once.
    bool can_receive_locked(const detail::select_core* self) const noexcept {
        return closed_ || !buf_.empty() || detail::has_claimable(sendq_, self);
    }

    detail::wait_list& send_queue() noexcept { return sendq_; }
    detail::wait_list& receive_queue() noexcept { return recvq_; }
    detail::spin_lock& lock() const noexcept { return lock_; }

private:
    // Pops the oldest queued operation that can still be taken. With one loop, a select's
    // losing cases leave their queues as soon as another case wins, so the first claim
    // succeeds; the loop is for queues shared across loops, where they leave lazily.
    static detail::chan_node* pop_claimed(detail::wait_list& q) noexcept {
        while (detail::list_hook* h = q.pop_front()) {
            auto* n = static_cast<detail::chan_node*>(h);
            if (n->claim()) {
                return n;
            }
        }
        return nullptr;
    }

    static result<void> to_result(detail::chan_outcome o) noexcept {
        switch (o) {
        case detail::chan_outcome::done:
            return {};
        case detail::chan_outcome::closed:
            return make_error_code(channel_errc::closed);
        case detail::chan_outcome::would_block:
            break;
        }
        return make_error_code(channel_errc::full);
    }

    mutable detail::spin_lock lock_; // guards everything below
    detail::ring_buffer<T> buf_;
    detail::wait_list recvq_;
    detail::wait_list sendq_;
    bool closed_ = false;
};

namespace detail {

/// Awaits a send: completes at once when it can, else parks in the channel's send queue.
template <class T>
class send_awaiter {
public:
    send_awaiter(channel<T>* ch, T&& v) noexcept : ch_(ch), v_(std::move(v)) {}
    send_awaiter(const send_awaiter&) = delete;
    send_awaiter& operator=(const send_awaiter&) = delete;

    bool await_ready() const noexcept { return false; }
    template <class P>
    bool await_suspend(std::coroutine_handle<P> h) noexcept {
        const context& c = context_of(h);
        ctx_ = &c;
        return try_or_park([this](chan_node*& served) { return ch_->send_locked(v_, served); }, &v_,
                           parked_, st_, owner_of(h), ch_->send_queue(), ch_->lock(), c, h);
    }
    result<void> await_resume() noexcept {
        if (st_ == lone_state::done) {
            return {};
        }
        return lone_error(st_, ctx_, parked_);
    }

private:
    channel<T>* ch_;
    T v_;
    const context* ctx_ = nullptr;
    lone_state st_ = lone_state::done;
    lazy_parked_op parked_;
};

/// Awaits a receive: completes at once when it can, else parks in the channel's receive
/// queue until a sender fills the slot.
template <class T>
class receive_awaiter {
public:
    explicit receive_awaiter(channel<T>* ch) noexcept : ch_(ch) {}
    receive_awaiter(const receive_awaiter&) = delete;
    receive_awaiter& operator=(const receive_awaiter&) = delete;

    bool await_ready() const noexcept { return false; }
    template <class P>
    bool await_suspend(std::coroutine_handle<P> h) noexcept {
        const context& c = context_of(h);
        ctx_ = &c;
        return try_or_park(
            [this](chan_node*& served) { return ch_->receive_locked(slot_, served); }, &slot_,
            parked_, st_, owner_of(h), ch_->receive_queue(), ch_->lock(), c, h);
    }
    result<T> await_resume() noexcept {
        if (st_ != lone_state::done) {
            if (std::error_code e = lone_error(st_, ctx_, parked_)) {
                return e;
            }
        }
        return std::move(*slot_);
    }

private:
    channel<T>* ch_;
    std::optional<T> slot_;
    const context* ctx_ = nullptr;
    lone_state st_ = lone_state::done;
    lazy_parked_op parked_;
};

} // namespace detail

} // namespace tether
