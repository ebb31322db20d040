#pragma once
// Writing heads and log lines in place, for the .cpp files of net/http (not installed).
//   put_short   copies a short string without a call to memcpy (in headers.hpp: the inline
//               part of header_map uses it)
//   put_uint    writes a number in decimal

#include "net/http/headers.hpp"

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

namespace tether::http::detail {

/// "00" to "99": a number's digits two at a time, each pair by one load (no division by 10).
struct digit_pair_table {
    char d[200];
};
inline constexpr digit_pair_table digit_pairs = [] {
    digit_pair_table t{};
    for (int i = 0; i < 100; ++i) {
        t.d[2 * i] = static_cast<char>('0' + i / 10);
        t.d[2 * i + 1] = static_cast<char>('0' + i % 10);
    }
    return t;
}();

/// Writes `v` in decimal at `p` (at most 20 bytes) and returns the end. Up to three digits
/// (statuses, small lengths) take no loop; digits go two at a time from `digit_pairs`.
[[gnu::always_inline]] inline char* put_uint(char* p, std::uint64_t v) noexcept {
    if (v < 10) {
        *p = static_cast<char>('0' + v);
        return p + 1;
    }
    if (v < 100) {
        std::memcpy(p, digit_pairs.d + 2 * v, 2);
        return p + 2;
    }
    if (v < 1000) {
        const auto u = static_cast<unsigned>(v);
        const unsigned hi = u / 100;
        p[0] = static_cast<char>('0' + hi);
        std::memcpy(p + 1, digit_pairs.d + 2 * (u - hi * 100), 2);
        return p + 3;
    }
    std::size_t n = 4;
    for (std::uint64_t t = v / 10000; t != 0; t /= 10) {
        ++n;
    }
    char* d = p + n;
    while (v >= 100) {
        const std::uint64_t q = v / 100;
        d -= 2;
        std::memcpy(d, digit_pairs.d + 2 * (v - q * 100), 2);
        v = q;
    }
    if (v >= 10) {
        std::memcpy(d - 2, digit_pairs.d + 2 * v, 2);
    } else {
        d[-1] = static_cast<char>('0' + v);
    }
    return p + n;
}

} // namespace tether::http::detail
