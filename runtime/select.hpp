#pragma once
// select: waits for the first of several channel operations and done signals (Go's select).

#include "context/context.hpp"
#include "runtime/channel.hpp"
#include "runtime/detail/waiter.hpp"
#include "runtime/result.hpp"
#include "runtime/task.hpp"

#include <array>
#include <atomic>
#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <system_error>
#include <tuple>
#include <type_traits>
#include <utility>
#include <variant>

namespace tether {

namespace detail {

struct select_core;

/// A `ctx.done()` case of a select: a registration on the signal's cancel state.
struct done_case {
    done_signal sig{context{}.done()};
    waiter w;
    select_core* core = nullptr;
    int index = 0;
};

/// The part of a suspended select that its cases, their channels and its context share.
///
/// Exactly one of them wins, through `try_win`: a channel that dequeues a case, a done
/// signal that fires, or the task's context (`canceled`). The winner finishes the select
/// with `complete`, which takes every other case off its channel queue and disarms every
/// registration before queueing the coroutine, so that a losing case consumes nothing.
struct select_core {
    static constexpr int none = -1;
    static constexpr int canceled = -2; ///< the awaiting task's context was done first
    /// Set by `park` alone: a case became ready between the poll and the park (a
    /// counterpart on another loop); the select backed out and polls again.
    static constexpr int retry = -3;

    std::atomic<int> winner{none};
    std::error_code case_error; // the winning channel case's error (closed), if any
    std::error_code pending;    // complete_any's error, carried to the select's loop
    waiter own;                 // on the awaiting task's context
    chan_node* const* chans = nullptr;
    std::size_t n_chans = 0;
    done_case* const* dones = nullptr;
    std::size_t n_dones = 0;

    /// Makes case `i` (or `canceled`) the winner; false if another won first.
    bool try_win(int i) noexcept {
        // A compare-and-swap: a channel case may be taken on another loop's thread.
        int expected = none;
        return winner.compare_exchange_strong(expected, i, std::memory_order_acq_rel);
    }
    /// Finishes the select after a successful `try_win`: `e` is the winning channel case's
    /// error, or the context's error for `canceled`. Queues the coroutine (select's loop).
    void complete(std::error_code e) noexcept;
    /// `complete` from any loop's thread: posted to the select's loop from another.
    void complete_any(std::error_code e) noexcept;
    /// Arms the context and the done cases and queues the channel cases; returns false (with
    /// `winner` set) if a done case or the context became done meanwhile, or (with `winner`
    /// == `retry`, everything undone) if a channel case became ready since the poll.
    bool park(const context& c, std::coroutine_handle<> h) noexcept;
    /// Returns the index of a done case whose signal is ready, or `none`.
    int ready_done() const noexcept;

private:
    void release() noexcept;
    static void own_canceled(waiter* w) noexcept;
    static void done_fired(waiter* w) noexcept;
};

/// Fills `order[0..n)` with a random permutation of 0..n-1: the order in which a select
/// polls its cases, so that among several ready ones each is as likely to win (Go's rule;
/// no case starves).
void random_order(std::uint8_t* order, std::size_t n) noexcept;

/// What a channel case's poll makes of the channel's answer: true if the case is taken
/// (done, or closed with `channel_errc::closed` recorded for it), false if it would block.
inline bool settled(chan_outcome o, select_core& core) noexcept {
    if (o == chan_outcome::closed) {
        core.case_error = make_error_code(channel_errc::closed);
    }
    return o != chan_outcome::would_block;
}

/// The state of one select case, by the kind of operation it was made from.
template <class Op>
struct select_case;

template <class T>
struct select_case<receive_op<T>> {
    using value_type = result<T>;
    static constexpr bool is_done = false;
    channel<T>* ch;
    std::optional<T> slot;
    chan_node node;

    explicit select_case(receive_op<T>&& op) noexcept : ch(op.ch) {}
    bool poll(select_core& core) noexcept { return settled(ch->receive_now(slot), core); }
    chan_node* prepare() noexcept {
        node.item = &slot;
        node.queue = &ch->receive_queue();
        node.lock = &ch->lock();
        node.chan = ch;
        node.ready_now = [](const chan_node& n) noexcept {
            return static_cast<channel<T>*>(n.chan)->can_receive_locked(n.sel);
        };
        return &node;
    }
    value_type take(select_core& core) noexcept {
        if (core.case_error) {
            return core.case_error;
        }
        return std::move(*slot);
    }
};

template <class T>
struct select_case<send_op<T>> {
    using value_type = result<void>;
    static constexpr bool is_done = false;
    channel<T>* ch;
    T value;
    chan_node node;

    explicit select_case(send_op<T>&& op) noexcept : ch(op.ch), value(std::move(op.value)) {}
    bool poll(select_core& core) noexcept { return settled(ch->send_now(value), core); }
    chan_node* prepare() noexcept {
        node.item = &value;
        node.queue = &ch->send_queue();
        node.lock = &ch->lock();
        node.chan = ch;
        node.ready_now = [](const chan_node& n) noexcept {
            return static_cast<channel<T>*>(n.chan)->can_send_locked(n.sel);
        };
        return &node;
    }
    value_type take(select_core& core) noexcept { return core.case_error; }
};

template <>
struct select_case<done_signal> {
    using value_type = std::monostate;
    static constexpr bool is_done = true;
    done_case dc;

    explicit select_case(done_signal s) noexcept { dc.sig = s; }
    bool poll(select_core&) const noexcept { return dc.sig.ready(); }
    value_type take(select_core&) const noexcept { return {}; }
};

template <class Op>
inline constexpr bool is_select_operation = false;
template <class T>
inline constexpr bool is_select_operation<receive_op<T>> = true;
template <class T>
inline constexpr bool is_select_operation<send_op<T>> = true;
template <>
inline constexpr bool is_select_operation<done_signal> = true;

/// Awaits a select: polls the cases in random order, else parks all of them.
template <class... Ops>
class select_awaiter {
    static constexpr std::size_t n = sizeof...(Ops);
    static_assert(n > 0 && n < 256, "select takes 1 to 255 cases");

public:
    using value_type = std::variant<typename select_case<Ops>::value_type...>;

    explicit select_awaiter(std::tuple<Ops...>&& ops) noexcept
        : select_awaiter(std::move(ops), std::index_sequence_for<Ops...>{}) {}
    select_awaiter(const select_awaiter&) = delete;
    select_awaiter& operator=(const select_awaiter&) = delete;

    bool await_ready() const noexcept { return false; }
    template <class P>
    bool await_suspend(std::coroutine_handle<P> h) noexcept {
        return suspend(context_of(h), h);
    }
    result<value_type> await_resume() noexcept {
        if (core_.winner == select_core::canceled) {
            return core_.own.error;
        }
        return take<0>();
    }

private:
    template <std::size_t... I>
    select_awaiter(std::tuple<Ops...>&& ops, std::index_sequence<I...>) noexcept
        : cases_(std::move(std::get<I>(ops))...) {}

    bool suspend(const context& c, std::coroutine_handle<> h) noexcept {
        // A poll and a park that finds a case ready since (a counterpart on another loop
        // came in between) start again: the park checks each channel under the lock it
        // queues the case with, so that no case waits on a channel that could serve it.
        for (bool prepared = false;;) {
            // Under a done context only done cases may win (a done case is success, as for
            // `co_await ctx.done()`); channel cases must not consume anything.
            bool own_done = c.is_done();
            std::array<std::uint8_t, n> order;
            random_order(order.data(), n);
            for (std::uint8_t i : order) {
                if (poll(i, own_done)) {
                    core_.winner = i;
                    return false;
                }
            }
            if (own_done) {
                core_.winner = select_core::canceled;
                core_.own.error = c.err();
                return false;
            }
            if (!std::exchange(prepared, true)) {
                prepare(std::index_sequence_for<Ops...>{});
            }
            if (core_.park(c, h)) {
                return true;
            }
            if (core_.winner.load(std::memory_order_acquire) != select_core::retry) {
                return false;
            }
            core_.winner.store(select_core::none, std::memory_order_relaxed);
        }
    }

    bool poll(std::size_t i, bool own_done) noexcept {
        return [&]<std::size_t... I>(std::index_sequence<I...>) {
            bool fired = false;
            (void)((I == i && ((fired = poll_one<I>(own_done)), true)) || ...);
            return fired;
        }(std::index_sequence_for<Ops...>{});
    }

    template <std::size_t I>
    bool poll_one(bool own_done) noexcept {
        auto& c = std::get<I>(cases_);
        if (own_done && !c.is_done) {
            return false;
        }
        return c.poll(core_);
    }

    template <std::size_t... I>
    void prepare(std::index_sequence<I...>) noexcept {
        (prepare_one<I>(), ...);
        core_.chans = chans_.data();
        core_.dones = dones_.data();
    }

    template <std::size_t I>
    void prepare_one() noexcept {
        auto& c = std::get<I>(cases_);
        if constexpr (std::remove_reference_t<decltype(c)>::is_done) {
            c.dc.index = static_cast<int>(I);
            dones_[core_.n_dones++] = &c.dc;
        } else {
            chan_node* node = c.prepare();
            node->sel = &core_;
            node->index = static_cast<int>(I);
            chans_[core_.n_chans++] = node;
        }
    }

    template <std::size_t I>
    result<value_type> take() noexcept {
        if constexpr (I + 1 < n) {
            if (core_.winner != static_cast<int>(I)) {
                return take<I + 1>();
            }
        }
        return value_type(std::in_place_index<I>, std::get<I>(cases_).take(core_));
    }

    std::tuple<select_case<Ops>...> cases_;
    select_core core_;
    std::array<chan_node*, n> chans_{};
    std::array<done_case*, n> dones_{};
};

/// `select(...)`: the cases, not yet started. `co_await` it.
template <class... Ops>
struct [[nodiscard]] select_op {
    std::tuple<Ops...> ops;
    select_awaiter<Ops...> operator co_await() && noexcept {
        return select_awaiter<Ops...>(std::move(ops));
    }
};

} // namespace detail

/// Returns an awaitable that waits until one of `cases` can proceed, performs that one only,
/// and gives its index and outcome (Go's `select`).
///
/// Each case is `ch.receive()`, `ch.send(v)` or `ctx.done()`, written as for a lone
/// `co_await`. `co_await select(c0, c1, ...)` gives `result<std::variant<R0, R1, ...>>`:
/// the variant's index is the case that fired, and `Ri` is `result<T>` for a receive (the
/// value, or `channel_errc::closed` once the channel is closed and drained), `result<void>`
/// for a send (`channel_errc::closed` if the channel is closed) and `std::monostate` for a
/// done signal. A closed channel makes its cases ready at once, as in Go.
///
/// If several cases are ready, one of them is chosen at random, so that none starves. The
/// others are not performed: a receive that did not win took no value, a send that did not
/// win gave none (its value is destroyed with the select).
///
/// Errors: `errc::canceled` or `errc::deadline_exceeded` when the awaiting task's context is
/// done before any case fires. A done case that is ready wins over that error (as `co_await
/// ctx.done()` returns success once `ctx` is done, even when it is the task's own context).
///
/// Cancellation: cancel-safe. Under a context that is already done, no channel case is
/// attempted: the select returns a ready done case or fails at once.
///
/// Lifetime: the channels must outlive the await.
///
/// Thread safety: the channels may be used by tasks on any loop, selects included. (A
/// select polls its channels and then queues its cases on them one at a time, each under
/// its channel's lock after checking that the channel can't serve it by now; one that can
/// makes the select take its cases back and poll again.)
///
/// Example:
///
///     auto r = co_await select(jobs.receive(), results.send(last), shutdown.done());
///     if (!r) {
///         co_return r.error(); // our own context is done
///     }
///     switch (r->index()) {
///     case 0: if (auto& j = std::get<0>(*r)) { handle(*j); } break; // else: jobs closed
///     case 1: break;                                                 // `last` was sent
///     case 2: co_return drain();                                     // shutting down
///     }
template <class... Ops>
    requires(sizeof...(Ops) > 0 && (detail::is_select_operation<std::remove_cvref_t<Ops>> && ...))
[[nodiscard]] detail::select_op<std::remove_cvref_t<Ops>...> select(Ops&&... cases) {
    return {std::tuple<std::remove_cvref_t<Ops>...>(std::forward<Ops>(cases)...)};
}

} // namespace tether
