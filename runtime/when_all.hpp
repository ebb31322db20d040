#pragma once
// when_all: run tasks concurrently under one child context; the first error cancels the rest.

#include "runtime/detail/fanout.hpp"
#include "runtime/result.hpp"
#include "runtime/task.hpp"

#include <array>
#include <coroutine>
#include <cstddef>
#include <optional>
#include <tuple>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

namespace tether {

namespace detail {

/// Stores a child's value in its slot, or records its `result` error as the child's error.
template <class U>
struct all_sink {
    fanout* fan;
    std::optional<U>* slot;
    template <class V>
    void operator()(V&& v) {
        using T = std::remove_cvref_t<V>;
        if constexpr (is_result<T>::value) {
            if (!v.has_value()) {
                fan->fail(v.error());
            } else if constexpr (std::is_void_v<typename T::value_type>) {
                slot->emplace();
            } else {
                slot->emplace(*std::forward<V>(v));
            }
        } else {
            slot->emplace(std::forward<V>(v));
        }
    }
};

template <class... T>
class all_awaiter : public fan_awaiter<all_awaiter<T...>> {
public:
    using value_type = std::tuple<unwrapped_t<T>...>;

    explicit all_awaiter(task<T>... t)
        : fan_awaiter<all_awaiter>(fanout::mode::all), tasks_(std::move(t)...) {}

    result<value_type> await_resume() {
        if (std::error_code e = this->finish()) {
            return e;
        }
        return collect(std::index_sequence_for<T...>{});
    }

private:
    friend fan_awaiter<all_awaiter>;
    std::array<child_driver, sizeof...(T)> make_children() {
        return make_children(std::index_sequence_for<T...>{});
    }
    template <std::size_t... I>
    std::array<child_driver, sizeof...(T)> make_children(std::index_sequence<I...>) {
        return {drive(std::move(std::get<I>(tasks_)),
                      all_sink<unwrapped_t<T>>{&this->fan_, &std::get<I>(slots_)})...};
    }
    template <std::size_t... I>
    value_type collect(std::index_sequence<I...>) {
        return value_type{std::move(*std::get<I>(slots_))...};
    }

    std::tuple<task<T>...> tasks_;
    std::tuple<std::optional<unwrapped_t<T>>...> slots_;
};

template <class T>
class all_range_awaiter : public fan_awaiter<all_range_awaiter<T>> {
public:
    using element_type = unwrapped_t<T>;
    /// `result<void>` when the children return nothing, else a vector of their values.
    using value_type = std::conditional_t<std::is_same_v<element_type, std::monostate>, void,
                                          std::vector<element_type>>;

    explicit all_range_awaiter(std::vector<task<T>> t)
        : fan_awaiter<all_range_awaiter>(fanout::mode::all), tasks_(std::move(t)) {}

    result<value_type> await_resume() {
        if (std::error_code e = this->finish()) {
            return e;
        }
        if constexpr (std::is_void_v<value_type>) {
            return {};
        } else {
            value_type out;
            out.reserve(slots_.size());
            for (std::optional<element_type>& s : slots_) {
                out.push_back(std::move(*s));
            }
            return out;
        }
    }

private:
    friend fan_awaiter<all_range_awaiter>;
    std::vector<child_driver> make_children() {
        slots_.resize(tasks_.size());
        std::vector<child_driver> d;
        d.reserve(tasks_.size());
        for (std::size_t i = 0; i < tasks_.size(); ++i) {
            d.push_back(
                drive(std::move(tasks_[i]), all_sink<element_type>{&this->fan_, &slots_[i]}));
        }
        return d;
    }

    std::vector<task<T>> tasks_;
    std::vector<std::optional<element_type>> slots_;
};

} // namespace detail

/// Returns a task that runs every awaitable concurrently on the current loop and returns
/// all their values, or the first error.
///
/// Each argument is a `task<T>` or a movable awaitable (a `join_handle`, another
/// `when_all`...). The children run under one child of the awaiting task's context, started
/// in order: each runs until it first suspends before the next starts. A child returning
/// `result<V>` contributes `V` to the tuple, one returning `void` or `result<void>`
/// contributes `std::monostate`, any other `T` contributes itself. With no arguments,
/// returns an empty tuple.
///
/// Errors: the first child to fail decides the outcome, and the context of the others is
/// canceled with that error as its cause (Go's errgroup). A child fails by throwing, or by
/// returning a `result` that holds an error. A first exception is rethrown at the
/// `co_await`; a first error is returned. Later errors and exceptions are dropped. Children
/// not started yet when a child fails synchronously never start. Whatever happens, every
/// started child has finished before the task returns: none is left running.
///
/// Cancellation: under an already-done context, returns its error and starts nothing.
/// When the awaiting task's context is done later, the children's context is canceled with
/// it (it is a child of it) and `when_all` still waits for them all; it then returns the
/// first error they report, or their values if they all succeeded anyway.
///
/// Example:
///
///     auto r = co_await when_all(fetch(a), fetch(b)); // result<std::tuple<page, page>>
///     if (!r) { co_return r.error(); }
///     auto& [pa, pb] = *r;
template <class... A>
    requires(detail::awaitable<A> && ...)
task<result<std::tuple<detail::unwrapped_t<await_result_t<A>>...>>> when_all(A... a) {
    co_return co_await detail::all_awaiter<await_result_t<A>...>{detail::as_task(std::move(a))...};
}

/// Returns a task that runs every task in `tasks` concurrently on the current loop and
/// returns their values in order, or the first error; as the variadic `when_all`.
///
/// The value is a vector of the unwrapped values, or `result<void>` when the tasks return
/// `void` or `result<void>`. An empty range gives an empty vector (or success) at once.
///
/// Cancellation: as the variadic `when_all`; under an already-done context, returns its
/// error even for an empty range.
template <class T>
task<result<typename detail::all_range_awaiter<T>::value_type>>
when_all(std::vector<task<T>> tasks) {
    co_return co_await detail::all_range_awaiter<T>{std::move(tasks)};
}

} // namespace tether
