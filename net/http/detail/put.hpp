#pragma once
// Writing heads and log lines in place, for the .cpp files of net/http (not installed).
//   put_short   copies a short string without a call to memcpy
//   put_uint    writes a number in decimal

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

namespace tether::http::detail {

/// Copies n bytes, W <= n <= 2W, as two possibly overlapping W-byte moves: the first and
/// the last W bytes, each loaded before it is stored.
template <std::size_t W>
inline void copy_ends(char* p, const char* q, std::size_t n) noexcept {
    char a[W];
    char b[W];
    std::memcpy(a, q, W);
    std::memcpy(b, q + n - W, W);
    std::memcpy(p, a, W);
    std::memcpy(p + n - W, b, W);
}

/// Copies `s` to `p` and returns the end. Up to 32 bytes (names, values, IDs, addresses)
/// take two overlapping loads and stores instead of a call to memcpy.
inline char* put_short(char* p, std::string_view s) noexcept {
    const char* q = s.data();
    const std::size_t n = s.size();
    if (n >= 16 && n <= 32) {
        copy_ends<16>(p, q, n);
    } else if (n >= 8 && n < 16) {
        copy_ends<8>(p, q, n);
    } else if (n >= 4 && n < 8) {
        copy_ends<4>(p, q, n);
    } else if (n > 0 && n < 4) {
        p[0] = q[0];
        p[n / 2] = q[n / 2];
        p[n - 1] = q[n - 1];
    } else if (n > 32) {
        std::memcpy(p, q, n);
    }
    return p + n;
}

/// Writes `v` in decimal at `p` (at most 20 bytes) and returns the end. Up to four digits
/// (statuses, small lengths) take no loop.
inline char* put_uint(char* p, std::uint64_t v) noexcept {
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
