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

/// Writes `v` in decimal at `p` (at most 20 bytes) and returns the end. Up to four digits
/// (statuses, small lengths) take no loop.
[[gnu::always_inline]] inline char* put_uint(char* p, std::uint64_t v) noexcept {
    if (v < 10) {
        *p = static_cast<char>('0' + v);
        return p + 1;
    }
    if (v < 100) {
        p[0] = static_cast<char>('0' + v / 10);
        p[1] = static_cast<char>('0' + v % 10);
        return p + 2;
    }
    if (v < 1000) {
        const auto u = static_cast<unsigned>(v);
        p[0] = static_cast<char>('0' + u / 100);
        p[1] = static_cast<char>('0' + u / 10 % 10);
        p[2] = static_cast<char>('0' + u % 10);
        return p + 3;
    }
    std::size_t n = 4;
    for (std::uint64_t t = v / 10000; t != 0; t /= 10) {
        ++n;
    }
    char* d = p + n;
    do {
        *--d = static_cast<char>('0' + v % 10);
        v /= 10;
    } while (v != 0);
    return p + n;
}

} // namespace tether::http::detail
