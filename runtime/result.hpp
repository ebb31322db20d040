#pragma once
// result<T>: a value or a std::error_code, with std::expected's member names.

#include "context/errc.hpp"

#include <cassert>
#include <system_error>
#include <type_traits>
#include <utility>
#include <variant>

namespace tether {

/// Wraps an error code for constructing a failed `result` (as `std::unexpected` does).
struct failure {
    std::error_code code;
    failure(std::error_code c) noexcept : code(c) {}
    failure(errc e) noexcept : code(make_error_code(e)) {}
};

/// Holds a value of type `T` or an error code: how every I/O and context error in tether is
/// returned, so that a timeout under load costs no exception.
///
/// Member names follow `std::expected` so that it can become an alias later.
/// `value()` on an error throws `std::system_error` for callers who want exceptions.
template <class T>
class [[nodiscard]] result {
public:
    using value_type = T;

    result()
        requires std::is_default_constructible_v<T>
        : v_(std::in_place_index<0>) {}
    result(const T& v) : v_(std::in_place_index<0>, v) {}
    result(T&& v) : v_(std::in_place_index<0>, std::move(v)) {}
    result(failure f) : v_(std::in_place_index<1>, f.code) { assert(f.code); }
    result(std::error_code e) : v_(std::in_place_index<1>, e) { assert(e); }
    result(errc e) : v_(std::in_place_index<1>, make_error_code(e)) {}

    /// Returns true if the result holds a value.
    bool has_value() const noexcept { return v_.index() == 0; }
    explicit operator bool() const noexcept { return has_value(); }

    /// Returns the value; throws `std::system_error` if the result holds an error.
    T& value() & {
        check();
        return *std::get_if<0>(&v_);
    }
    const T& value() const& {
        check();
        return *std::get_if<0>(&v_);
    }
    T&& value() && {
        check();
        return std::move(*std::get_if<0>(&v_));
    }
    T& operator*() & noexcept { return *std::get_if<0>(&v_); }
    const T& operator*() const& noexcept { return *std::get_if<0>(&v_); }
    T&& operator*() && noexcept { return std::move(*std::get_if<0>(&v_)); }
    T* operator->() noexcept { return std::get_if<0>(&v_); }
    const T* operator->() const noexcept { return std::get_if<0>(&v_); }

    /// Returns the error, or an empty code if the result holds a value.
    std::error_code error() const noexcept {
        const std::error_code* e = std::get_if<1>(&v_);
        return e ? *e : detail::no_error;
    }

    /// Returns the value, or `alt` if the result holds an error.
    template <class U>
    T value_or(U&& alt) const& {
        return has_value() ? **this : static_cast<T>(std::forward<U>(alt));
    }

private:
    void check() const {
        if (!has_value()) {
            throw std::system_error(error());
        }
    }
    std::variant<T, std::error_code> v_;
};

/// A result with no value: success, or an error code.
template <>
class [[nodiscard]] result<void> {
public:
    using value_type = void;
    result() noexcept = default;
    result(failure f) noexcept : e_(f.code) {}
    result(std::error_code e) noexcept : e_(e) {}
    result(errc e) noexcept : e_(make_error_code(e)) {}

    bool has_value() const noexcept { return !e_; }
    explicit operator bool() const noexcept { return has_value(); }
    /// Throws `std::system_error` if the result holds an error.
    void value() const {
        if (e_) {
            throw std::system_error(e_);
        }
    }
    std::error_code error() const noexcept { return e_; }

private:
    std::error_code e_ = detail::no_error;
};

/// Returns a result holding the error of `errno`-style value `err` (positive) in the system
/// category.
inline std::error_code system_error_code(int err) noexcept {
    return {err, std::system_category()};
}

} // namespace tether
