#pragma once
// fmt formatters for errc and context.

#include "context/context.hpp"
#include "context/errc.hpp"

#include <fmt/format.h>

#include <string>
#include <string_view>

namespace tether {
/// Returns the chain of `ctx` as Go's String() does, root first:
/// "context.Background.WithCancel.WithValue(user, ada)".
std::string to_string(const context& ctx);
/// Returns Go's error string for `e`: "context canceled" or "context deadline exceeded".
std::string_view to_string(errc e) noexcept;
} // namespace tether

/// Formats an errc as its message: "context canceled", "context deadline exceeded".
template <>
struct fmt::formatter<tether::errc> : fmt::formatter<std::string_view> {
    template <class FormatContext>
    auto format(tether::errc e, FormatContext& ctx) const {
        return fmt::formatter<std::string_view>::format(tether::to_string(e), ctx);
    }
};

/// Formats a context as its chain, like Go's String().
template <>
struct fmt::formatter<tether::context> : fmt::formatter<std::string_view> {
    template <class FormatContext>
    auto format(const tether::context& c, FormatContext& ctx) const {
        return fmt::formatter<std::string_view>::format(tether::to_string(c), ctx);
    }
};
