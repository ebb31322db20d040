#pragma once
// fmt formatters for errc and context.

#include "context/context.hpp"
#include "context/errc.hpp"

#include <fmt/format.h>

#include <chrono>
#include <string>
#include <string_view>

namespace tether {
/// Returns the chain of `ctx` as Go's String() does, root first:
/// "context.Background.WithCancel.WithValue(user, ada)".
std::string to_string(const context& ctx);
/// Returns Go's error string for `e`: "context canceled" or "context deadline exceeded".
std::string_view to_string(errc e) noexcept;

namespace detail {
/// Appends `d` as Go's time.Duration.String() does: "0s", "1.5µs", "2.25ms", "1m0.5s".
void append_go_duration(std::chrono::nanoseconds d, std::string& out);
/// Appends `t` as Go's Time.String() does for a time with a monotonic reading, in UTC:
/// "2006-01-02 15:04:05.5 +0000 UTC m=+3.000000001". Clocks other than the real clock have
/// no wall time: their reading alone is printed ("m=+86401.000000000").
void append_go_time(time_point t, const clock& clk, std::string& out);
} // namespace detail
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
