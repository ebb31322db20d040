#pragma once
// when_any: run tasks concurrently; the first to finish wins and the others are canceled.

#include "runtime/detail/fanout.hpp"
#include "runtime/result.hpp"
#include "runtime/task.hpp"

#include <array>
#include <coroutine>
#include <cstddef>
#include <optional>
#include <system_error>
#include <tuple>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

namespace tether {

namespace detail {

/// Makes its child the winner if none has won yet, and stores its value.
template <class Out, std::size_t I>
struct any_sink {
    fanout* fan;
    std::optional<Out>* out;
    template <class V>
    void operator()(V&& v) {
        if (fan->claim(I)) {
            out->emplace(std::in_place_index<I>, std::forward<V>(v));
        }
    }
};

template <class Out>
struct any_range_sink {
    fanout* fan;
    std::optional<Out>* out;
    std::size_t i;
    template <class V>
    void operator()(V&& v) {
        if (fan->claim(i)) {
            out->emplace(std::forward<V>(v));
        }
    }
};

template <class... T>
class any_awaiter : public fan_awaiter<any_awaiter<T...>> {
public:
    using variant_type = std::variant<value_or_monostate_t<T>...>;
    using value_type = std::pair<std::size_t, variant_type>;

    explicit any_awaiter(task<T>... t)
        : fan_awaiter<any_awaiter>(fanout::mode::any), tasks_(std::move(t)...) {}

    result<value_type> await_resume() {
        if (std::error_code e = this->finish()) {
            return e;
        }
        return value_type{this->fan_.winner(), std::move(*out_)};
    }

private:
    friend fan_awaiter<any_awaiter>;
    std::array<child_driver, sizeof...(T)> make_children() {
        return make_children(std::index_sequence_for<T...>{});
    }
    template <std::size_t... I>
    std::array<child_driver, sizeof...(T)> make_children(std::index_sequence<I...>) {
        return {drive(std::move(std::get<I>(tasks_)),
                      any_sink<variant_type, I>{&this->fan_, &out_})...};
    }

    std::tuple<task<T>...> tasks_;
    std::optional<variant_type> out_;
};

template <class T>
class any_range_awaiter : public fan_awaiter<any_range_awaiter<T>> {
public:
    using element_type = value_or_monostate_t<T>;
    using value_type = std::pair<std::size_t, element_type>;

    explicit any_range_awaiter(std::vector<task<T>> t)
        : fan_awaiter<any_range_awaiter>(fanout::mode::any), tasks_(std::move(t)) {}

    result<value_type> await_resume() {
        if (std::error_code e = this->finish()) {
            return e;
        }
        if (!out_) {
            return std::make_error_code(std::errc::invalid_argument); // an empty range
        }
        return value_type{this->fan_.winner(), std::move(*out_)};
    }

private:
    friend fan_awaiter<any_range_awaiter>;
    std::vector<child_driver> make_children() {
        std::vector<child_driver> d;
        d.reserve(tasks_.size());
        for (std::size_t i = 0; i < tasks_.size(); ++i) {
            d.push_back(
                drive(std::move(tasks_[i]), any_range_sink<element_type>{&this->fan_, &out_, i}));
        }
        return d;
    }

    std::vector<task<T>> tasks_;
    std::optional<element_type> out_;
};

} // namespace detail

/// Returns a task that runs every awaitable concurrently on the current loop and returns
/// the index and value of the first to finish, once the others have been canceled and have
/// finished.
///
/// Each argument is a `task<T>` or a movable awaitable. The children run under one child of
/// the awaiting task's context, started in order: each runs until it first suspends before
/// the next starts, and once one has finished the rest never start. The value is the
/// winner's as it returned it (a `result` holding an error wins like any other value), in
/// the variant alternative of the same index; `void` gives `std::monostate`.
///
/// Errors: if the winner threw, its exception is rethrown at the `co_await` (after the
/// losers have finished). What the losers return or throw is dropped.
///
/// Cancellation: under an already-done context, returns its error and starts nothing. When
/// the awaiting task's context is done later, the children are canceled with it; the first
/// to finish still wins (usually with its own cancellation error).
///
/// Example:
///
///     // Hedged request: ask two replicas, keep the first answer.
///     auto r = co_await when_any(get(replica_a, key), get(replica_b, key));
///     if (!r) { co_return r.error(); }
///     auto [index, answer] = std::move(*r); // answer: std::variant<result<value>, ...>
template <class... A>
    requires(sizeof...(A) > 0 && (detail::awaitable<A> && ...))
task<result<
    std::pair<std::size_t, std::variant<detail::value_or_monostate_t<await_result_t<A>>...>>>>
when_any(A... a) {
    co_return co_await detail::any_awaiter<await_result_t<A>...>{detail::as_task(std::move(a))...};
}

/// Returns a task that runs every task in `tasks` concurrently on the current loop and
/// returns the index and value of the first to finish; as the variadic `when_any`.
///
/// Errors: an empty range has no winner: returns `std::errc::invalid_argument` at once.
/// Cancellation: as the variadic `when_any`.
template <class T>
task<result<std::pair<std::size_t, detail::value_or_monostate_t<T>>>>
when_any(std::vector<task<T>> tasks) {
    co_return co_await detail::any_range_awaiter<T>{std::move(tasks)};
}

} // namespace tether
