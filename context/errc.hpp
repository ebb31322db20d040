#pragma once
// errc: the two reasons a context ends, as std::error_code values in tether's category.

#include <system_error>

namespace tether {

/// Names why a context is done, as Go's `context.Canceled` and `context.DeadlineExceeded` do.
///
/// Values compare equal to `std::error_code`s of tether's category, so
/// `ctx.err() == errc::canceled` reads as it would in Go.
enum class errc : int {
    canceled = 1,          ///< the context (or an ancestor) was canceled
    deadline_exceeded = 2, ///< the context's deadline passed
};

/// Returns the error category of `errc` (its name is "tether").
///
/// Thread safety: returns the same immortal object from every thread.
const std::error_category& tether_category() noexcept;

/// Returns `e` as an error code of `tether_category()`.
inline std::error_code make_error_code(errc e) noexcept {
    return {static_cast<int>(e), tether_category()};
}

namespace detail {
/// Success, made once. `std::error_code{}` calls the out-of-line `std::system_category()`
/// every time; hot paths copy this instead. (Zero until static initialization has run, which
/// reads as success too.)
inline const std::error_code no_error{};
} // namespace detail

} // namespace tether

template <>
struct std::is_error_code_enum<tether::errc> : std::true_type {};
