#include "net/http/middleware.hpp"

#include "context/with_deadline.hpp"
#include "context/with_value.hpp"
#include "net/http/detail/put.hpp"

#include <fmt/format.h>

#include <atomic>
#include <bit>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <exception>
#include <iterator>
#include <random>
#include <sys/socket.h>
#include <utility>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#if defined(__x86_64__)
#include <x86intrin.h>
#endif

namespace tether::http {

namespace {

// A request ID held in the context node itself: one allocation per request (the node's),
// none for the text.
struct request_id_value {
    static constexpr std::size_t max_size = 128;
    explicit request_id_value(std::string_view v) noexcept
        : size(static_cast<std::uint8_t>(v.size())) {
        detail::put_short(data, v); // no call to memcpy
    }
    std::string_view view() const noexcept { return {data, size}; }
    std::uint8_t size;
    char data[max_size];
};

} // namespace
} // namespace tether::http

// What a printed context shows for the request ID: the ID.
template <>
struct fmt::formatter<tether::http::request_id_value> : fmt::formatter<std::string_view> {
    auto format(const tether::http::request_id_value& v, fmt::format_context& ctx) const {
        return fmt::formatter<std::string_view>::format(v.view(), ctx);
    }
};

namespace tether::http {
namespace {

inline constexpr context_key<request_id_value> request_id_key{"request_id"};
inline constexpr context_key<identity> identity_key{"identity"};

void to_stderr(std::string_view line) {
    std::fprintf(stderr, "%.*s\n", static_cast<int>(line.size()), line.data());
}

// Writes `v` as 16 lower-case hex digits at `out`, the most significant first: the nibbles
// spread to one per byte, then made digits all at once (no table, no loop).
void put_hex64(char* out, std::uint64_t v) noexcept {
    if constexpr (std::endian::native == std::endian::little) {
        v = __builtin_bswap64(v); // the most significant byte first in memory
    }
#if defined(__SSE2__)
    const __m128i x = _mm_cvtsi64_si128(static_cast<long long>(v));
    const __m128i nibble = _mm_set1_epi8(0x0f);
    const __m128i lo = _mm_and_si128(x, nibble);
    const __m128i hi = _mm_and_si128(_mm_srli_epi16(x, 4), nibble);
    __m128i d = _mm_unpacklo_epi8(hi, lo); // byte by byte: its high nibble, then its low
    const __m128i letters =
        _mm_and_si128(_mm_cmpgt_epi8(d, _mm_set1_epi8(9)), _mm_set1_epi8('a' - '0' - 10));
    d = _mm_add_epi8(d, _mm_add_epi8(_mm_set1_epi8('0'), letters));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out), d);
#else
    unsigned char bytes[8];
    std::memcpy(bytes, &v, 8);
    for (std::size_t i = 0; i < 8; ++i) {
        out[2 * i] = "0123456789abcdef"[bytes[i] >> 4];
        out[2 * i + 1] = "0123456789abcdef"[bytes[i] & 0xf];
    }
#endif
}

// Writes a new request ID's 32 characters at `id`: a per-thread prefix of 64 random bits
// (16 hex digits, drawn once from the system's entropy), then the thread's count of IDs so
// far (16 hex digits). IDs must not collide, not resist prediction: within a thread the count
// never repeats, and two threads (or processes) share a prefix with a chance of 2^-64.
//
// The thread keeps its last ID as text and counts in it: the last digit goes up by one (one
// in 16 IDs carries into the digits before it), and the ID is copied out whole, where
// formatting the count as hex took ~15 instructions more per ID.
struct id_source {
    char text[32]; // the last ID; text[0] == 0: no prefix yet
};

// The thread's prefix, drawn once (random_device, a few KiB of stack: kept out of line), and
// a count of 0.
[[gnu::noinline]] void seed_ids(id_source& src) noexcept {
    const std::uint64_t r = (std::uint64_t{std::random_device{}()} << 32) ^ std::random_device{}();
    put_hex64(src.text, r);
    std::memset(src.text + 16, '0', 16);
}

// Counts the text's last hex digit up by one, and carries.
[[gnu::noinline]] void carry_id(id_source& src) noexcept {
    for (std::size_t i = 31; i >= 16; --i) {
        char& c = src.text[i];
        if (c != 'f') {
            c = c == '9' ? 'a' : static_cast<char>(c + 1);
            return;
        }
        c = '0'; // and on to the digit before (past the last, the count wraps to 0)
    }
}

inline void new_request_id(char* id) noexcept {
    // initial-exec and constant-initialized: read at a fixed offset from the thread pointer,
    // no __tls_get_addr or guard per ID (libtether is linked, not dlopen'ed).
    [[gnu::tls_model("initial-exec")]] constinit thread_local id_source src{};
    if (src.text[0] == 0) [[unlikely]] {
        seed_ids(src);
    }
    const char last = src.text[31];
    if (last != '9' && last != 'f') [[likely]] {
        src.text[31] = static_cast<char>(last + 1);
    } else {
        carry_id(src);
    }
    std::memcpy(id, src.text, sizeof src.text);
}

bool acceptable_id(std::string_view id) noexcept {
    if (id.empty() || id.size() > request_id_value::max_size) {
        return false;
    }
    for (char c : id) {
        if (c <= 0x20 || c >= 0x7f) {
            return false;
        }
    }
    return true;
}

// Makes the awaiting task run under `ctx` from now on; gives the context it ran under.
struct swap_context {
    const context* ctx;
    const context* old = nullptr;
    bool await_ready() const noexcept { return false; }
    template <class P>
    bool await_suspend(std::coroutine_handle<P> h) noexcept {
        old = h.promise().ctx_;
        h.promise().ctx_ = ctx;
        return false;
    }
    const context* await_resume() const noexcept { return old; }
};

// Appends the text of `a` to `out` (an IP address and port, or what to_string gives), then
// ` "`: what an access-log line starts with.
void append_lead(std::string& out, const net::address& a) {
    if (a.native_family() == AF_INET || a.native_family() == AF_INET6) {
        char text[64];
        out.append(text, net::detail::format_ip(a, text));
    } else {
        out += a.to_string();
    }
    out += " \"";
}

// Formats a connection's text for the access log (see conn_log).
[[gnu::noinline]] void set_lead(detail::conn_log& log, const net::address& a) {
    std::string text;
    append_lead(text, a);
    char* to = log.text;
    if (text.size() > detail::conn_log::inline_max) {
        log.more = std::make_unique_for_overwrite<char[]>(text.size());
        to = log.more.get();
    }
    std::memcpy(to, text.data(), text.size());
    log.size = static_cast<std::uint32_t>(text.size());
    log.data = to;
}

// Where batched lines go.
struct file_batch final : detail::log_batch {
    std::FILE* out;
    explicit file_batch(std::FILE* f) noexcept : out(f) {}
    void write(std::string_view lines) noexcept override {
        std::fwrite(lines.data(), 1, lines.size(), out);
    }
};

struct function_batch final : detail::log_batch {
    std::function<void(std::string_view)> fn;
    explicit function_batch(std::function<void(std::string_view)> f) noexcept : fn(std::move(f)) {}
    void write(std::string_view lines) noexcept override {
        try {
            fn(lines);
        } catch (...) { // NOLINT(bugprone-empty-catch): documented, a log must not end serving
        }
    }
};

// A thread's gathered lines are written once they reach this size, whatever the turn.
constexpr std::size_t log_flush_bytes = 32 * 1024;

// The most bytes write_line() writes for these fields (with room to spare: write_line
// stores some pieces whole, a few bytes past their end).
std::size_t line_bound(std::string_view lead, const request& req, std::string_view id) noexcept {
    return lead.size() + req.method().size() + req.target().size() + id.size() + 4 * 20 + 48;
}

// Copies the literal `s` (its size known at compile time) to `p`; returns the end.
template <std::size_t N>
char* put_lit(char* p, const char (&s)[N]) noexcept {
    std::memcpy(p, s, N - 1);
    return p + (N - 1);
}

// Writes `v` in decimal at `p`, '-' first if negative; returns the end.
char* put_int(char* p, int v) noexcept {
    if (v < 0) {
        *p++ = '-';
    }
    return detail::put_uint(p, v < 0 ? 0 - static_cast<std::uint64_t>(v)
                                     : static_cast<std::uint64_t>(v));
}

// Every number below 1000 as text followed by a space, as the access log writes its small
// numbers (status, body bytes, milliseconds and their fraction): by one load and one store
// each, with no division and no branch per digit.
struct small_numbers {
    std::uint32_t padded[1000]; // three digits, leading zeros kept, and a space: "007 "
    std::uint64_t plain[1000];  // bytes 0..3: the digits and a space ("7 ", zero bytes after);
                                // the last byte: how many of them there are
};

constexpr small_numbers make_small_numbers() noexcept {
    small_numbers t{};
    constexpr bool little = std::endian::native == std::endian::little;
    for (unsigned v = 0; v < 1000; ++v) {
        const unsigned char digits[3] = {static_cast<unsigned char>('0' + v / 100),
                                         static_cast<unsigned char>('0' + v / 10 % 10),
                                         static_cast<unsigned char>('0' + v % 10)};
        const unsigned skip = static_cast<unsigned>(v < 10) + static_cast<unsigned>(v < 100);
        std::uint32_t padded = 0;
        std::uint64_t plain = 0;
        for (unsigned i = 0; i < 4; ++i) {
            const unsigned char c = i < 3 ? digits[i] : ' ';
            padded |= std::uint32_t{c} << (little ? 8 * i : 8 * (3 - i));
            if (i >= skip) {
                plain |= std::uint64_t{c} << (little ? 8 * (i - skip) : 8 * (7 - (i - skip)));
            }
        }
        plain |= std::uint64_t{4 - skip} << (little ? 56 : 0);
        t.padded[v] = padded;
        t.plain[v] = plain;
    }
    return t;
}

constexpr small_numbers small_number_text = make_small_numbers();

// Writes `v` (below 1000) as three digits, leading zeros kept, and a space, at `p`.
inline void put_3_digits_sp(char* p, unsigned v) noexcept {
    std::memcpy(p, &small_number_text.padded[v], 4);
}

// Writes `v` (below 1000) in decimal followed by a space at `p`, and zero bytes up to p + 4;
// returns the end (past the space).
inline char* put_small_sp(char* p, unsigned v) noexcept {
    const std::uint64_t e = small_number_text.plain[v];
    if constexpr (std::endian::native == std::endian::little) {
        const auto text = static_cast<std::uint32_t>(e);
        std::memcpy(p, &text, 4);
        return p + (e >> 56);
    } else {
        const auto text = static_cast<std::uint32_t>(e >> 32);
        std::memcpy(p, &text, 4);
        return p + (e & 0xff);
    }
}

// Writes a line's start at `p`, up to its duration (exclusive), and returns where the
// duration goes: what the format string "{} \"{} {} HTTP/1.{}\" {} {} " gives, written piece
// by piece in place (no allocation, no format-string work). `lead` is the peer's text
// followed by ` "`.
[[gnu::always_inline]] inline char* write_line_head(char* p, std::string_view lead,
                                                    const request& req, int status,
                                                    std::uint64_t bytes) {
    p = detail::put_short(p, lead);
    const std::string_view method = req.method();
    const std::string_view target = req.target();
    if (target.data() == method.data() + method.size() + 1 && target.data()[-1] == ' ') {
        // As the request line has them (the views the parser made): one piece.
        p = detail::put_short(p,
                              std::string_view(method.data(), method.size() + 1 + target.size()));
    } else {
        p = detail::put_short(p, method);
        *p++ = ' ';
        p = detail::put_short(p, target);
    }
    const int minor = req.head.version_minor;
    if (static_cast<unsigned>(minor) <= 9 && status >= 100 && status <= 999) [[likely]] {
        // The version and status in one 16-byte store of a template, the digits put in.
        std::memcpy(p, " HTTP/1.1\" 200 ", 16);
        p[8] = static_cast<char>('0' + minor);
        put_3_digits_sp(p + 11, static_cast<unsigned>(status));
        p += 15;
    } else {
        p = put_lit(p, " HTTP/1.");
        p = put_int(p, minor);
        p = put_lit(p, "\" ");
        p = put_int(p, status);
        *p++ = ' ';
    }
    if (bytes < 1000) [[likely]] {
        p = put_small_sp(p, static_cast<unsigned>(bytes));
    } else {
        p = detail::put_uint(p, bytes);
        *p++ = ' ';
    }
    return p;
}

// Writes `us` microseconds as milliseconds with three decimals ("{}.{:03}") at `p`, and one
// byte more (a space); returns the end of the digits.
[[gnu::always_inline]] inline char* put_duration(char* p, std::uint64_t us) noexcept {
    // One division for the milliseconds, then the fraction's three digits.
    const std::uint64_t ms = us / 1000;
    const auto frac = static_cast<unsigned>(us - ms * 1000);
    if (ms < 1000) [[likely]] {
        p = put_small_sp(p, static_cast<unsigned>(ms)) - 1; // the space becomes the '.'
    } else {
        p = detail::put_uint(p, ms);
    }
    *p = '.';
    put_3_digits_sp(p + 1, frac);
    return p + 4;
}

// Writes a line's end at `p`, the end of its duration: "ms id={}", then '\n' if `newline`;
// returns the end.
[[gnu::always_inline]] inline char* write_line_tail(char* p, std::string_view id,
                                                    bool newline) noexcept {
    std::memcpy(p, "ms id=", 6);
    p = detail::put_short(p + 6, id);
    if (newline) {
        *p++ = '\n';
    }
    return p;
}

// Writes one access-log line (and '\n' if `newline`) at `p`, which has room for
// line_bound() bytes, and returns its end: "{} \"{} {} HTTP/1.{}\" {} {} {}.{:03}ms id={}".
[[gnu::always_inline]] inline char* write_line(char* p, std::string_view lead, const request& req,
                                               int status, std::uint64_t bytes, std::uint64_t us,
                                               std::string_view id, bool newline) {
    p = write_line_head(p, lead, req, status, bytes);
    return write_line_tail(put_duration(p, us), id, newline);
}

// Appends one access-log line (and '\n' if `newline`) to `out`.
void append_line(std::string& out, std::string_view lead, const request& req, int status,
                 std::uint64_t bytes, std::uint64_t us, std::string_view id, bool newline) {
    const std::size_t old = out.size();
    out.resize(old + line_bound(lead, req, id));
    char* const begin = out.data() + old;
    char* const end = write_line(begin, lead, req, status, bytes, us, id, newline);
    out.resize(old + static_cast<std::size_t>(end - begin));
}

// The monotonic clock in nanoseconds, read straight from clock_gettime (vDSO), without
// steady_clock::now()'s call into libstdc++.
std::int64_t mono_ns() noexcept {
    timespec ts{};
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

// Nanoseconds as whole microseconds, rounded (0 if negative).
inline std::uint64_t ns_to_us(std::int64_t ns) noexcept {
    return (static_cast<std::uint64_t>(ns < 0 ? 0 : ns) + 500) / 1000;
}

#if defined(__x86_64__)
// The access log's clock: a request's duration takes two readings, and clock_gettime (an
// ordered rdtsc, a seqlock and a scaling) costs ~3x a bare rdtsc (59 vs 21 ns on this
// project's KVM guest, ~8% of a pipelined request's CPU with the log on). Where the kernel
// itself keeps time with the TSC (clocksource "tsc": constant rate, in step across CPUs),
// the log reads the TSC and scales it by a rate measured per thread against CLOCK_MONOTONIC:
// first over 10 ms (clock_gettime meanwhile), then again every ~second from the last
// anchor, so the scaled time never strays far from the monotonic clock. A request's start is
// the bare TSC reading, its span scaled once at the end (~10 instructions less than scaling
// both readings). Elsewhere, or when the clocksource can't be read, clock_gettime.
__extension__ typedef unsigned __int128 u128; // products of 64-bit counts
__extension__ typedef __int128 i128;

struct tsc_scale {
    std::uint64_t tsc0 = 0;     // the anchor: a TSC reading ...
    std::int64_t ns0 = 0;       // ... and the monotonic time read right after it
    std::uint64_t mult = 0;     // nanoseconds per tick, 32.32 fixed point; 0: not measured yet
    std::uint64_t next = 0;     // the TSC reading past which the rate is measured again
    std::uint64_t ticks_1s = 0; // about a second of ticks, once measured
    std::uint64_t us_mult = 0;  // microseconds per tick, 0.64 fixed point (below 2^63)
    std::int64_t half_us = 0;   // ticks in half a microsecond (for rounding)
};

// 1: the clocksource is the TSC; 2: it is not (or unknown); 0: not looked at yet.
std::atomic<int> tsc_clocksource{0};

// The first rate any thread measured: for a request that started on a thread with a rate
// and ended on one that has none yet.
std::atomic<std::uint64_t> first_mult{0};

[[gnu::noinline]] bool look_at_clocksource() noexcept {
    bool tsc = false;
    if (std::FILE* f =
            std::fopen("/sys/devices/system/clocksource/clocksource0/current_clocksource", "re")) {
        char name[32] = {};
        tsc = std::fgets(name, sizeof name, f) != nullptr && std::strcmp(name, "tsc\n") == 0;
        std::fclose(f);
    }
    tsc_clocksource.store(tsc ? 1 : 2, std::memory_order_relaxed);
    return tsc;
}

[[gnu::noinline]] void measure_tsc(tsc_scale& s, std::uint64_t t) noexcept {
    const std::int64_t ns = mono_ns();
    if (s.ns0 == 0) {
        s.tsc0 = t; // the first anchor
        s.ns0 = ns;
        s.next = t;
        return;
    }
    const std::uint64_t dt = t - s.tsc0;
    const std::int64_t dns = ns - s.ns0;
    if (dns < 10'000'000 || dt == 0) {
        return; // too short a span for a rate yet
    }
    s.mult =
        static_cast<std::uint64_t>((static_cast<u128>(static_cast<std::uint64_t>(dns)) << 32) / dt);
    s.ticks_1s = static_cast<std::uint64_t>(static_cast<u128>(dt) * 1'000'000'000 /
                                            static_cast<std::uint64_t>(dns));
    // Below 2^63 (a signed factor) for any rate above 2 MHz; the product can't overflow
    // 128 bits. (A slower counter's ticks go through nanoseconds: us_mult stays 0.)
    const u128 us_mult =
        (static_cast<u128>(static_cast<std::uint64_t>(dns)) << 64) / (static_cast<u128>(dt) * 1000);
    s.us_mult = us_mult < (u128{1} << 63) ? static_cast<std::uint64_t>(us_mult) : 0;
    s.half_us = static_cast<std::int64_t>(s.ticks_1s / 2'000'000);
    s.tsc0 = t;
    s.ns0 = ns;
    s.next = t + s.ticks_1s;
    if (first_mult.load(std::memory_order_relaxed) == 0) {
        first_mult.store(s.mult, std::memory_order_relaxed);
    }
}

[[gnu::tls_model("initial-exec")]] constinit thread_local tsc_scale scale;

// A mark with this bit set holds CLOCK_MONOTONIC nanoseconds (with the bit clear, TSC ticks:
// 2^63 of them take a century at GHz rates).
constexpr std::uint64_t mono_mark = std::uint64_t{1} << 63;

// clock_mark() until the thread has measured the TSC's rate, if it ever does.
[[gnu::noinline]] std::uint64_t clock_mark_mono() noexcept {
    if (tsc_clocksource.load(std::memory_order_relaxed) == 0) {
        look_at_clocksource();
    }
    return static_cast<std::uint64_t>(mono_ns()) | mono_mark;
}

// Reads the clock for a span that clock_elapsed_ns() ends: the bare TSC once this thread has
// measured its rate (which it does only where the TSC is the clocksource), else the
// monotonic clock (marked). Converted once, at the end.
[[gnu::always_inline]] inline std::uint64_t clock_mark() noexcept {
    if (scale.mult != 0) [[likely]] {
        return __rdtsc();
    }
    return clock_mark_mono();
}

// The span from TSC reading `mark` to `t` in nanoseconds at `mult`: negative if `t` is
// before `mark` (a request that ended on a CPU whose TSC reads a little behind the one it
// started on; record() counts it as 0), where an unsigned difference would be some 2^64
// ticks. A signed product (`mult`, nanoseconds per tick in 32.32, is far below 2^63): one
// imul, as many instructions as the unsigned one.
inline std::int64_t ticks_to_ns(std::uint64_t mark, std::uint64_t t, std::uint64_t mult) noexcept {
    const auto dt = static_cast<std::int64_t>(t - mark);
    return static_cast<std::int64_t>(
        (static_cast<i128>(dt) * static_cast<i128>(static_cast<std::int64_t>(mult))) >> 32);
}

// clock_elapsed_ns() when the thread's rate is to be measured (again) first.
[[gnu::noinline]] std::int64_t elapsed_measuring(std::uint64_t mark, std::uint64_t t) noexcept {
    measure_tsc(scale, t);
    const std::uint64_t mult =
        scale.mult != 0 ? scale.mult : first_mult.load(std::memory_order_relaxed);
    return ticks_to_ns(mark, t, mult);
}

// Nanoseconds since clock_mark() gave `mark`.
[[gnu::always_inline]] inline std::int64_t clock_elapsed_ns(std::uint64_t mark) noexcept {
    if ((mark & mono_mark) != 0) [[unlikely]] {
        // Measures the rate along the way, while the TSC is the clocksource (the first 10 ms).
        if (tsc_clocksource.load(std::memory_order_relaxed) == 1) {
            const std::uint64_t t = __rdtsc();
            if (scale.mult == 0 || t - scale.tsc0 >= scale.next - scale.tsc0) {
                measure_tsc(scale, t);
            }
        }
        return mono_ns() - static_cast<std::int64_t>(mark & ~mono_mark);
    }
    const std::uint64_t t = __rdtsc();
    if (scale.mult != 0 && t - scale.tsc0 < scale.next - scale.tsc0) [[likely]] {
        return ticks_to_ns(mark, t, scale.mult);
    }
    return elapsed_measuring(mark, t);
}

// clock_elapsed_us() off its fast path.
[[gnu::noinline]] std::uint64_t elapsed_us_slow(std::uint64_t mark) noexcept {
    return ns_to_us(clock_elapsed_ns(mark));
}

// The end of spans that share it (a batch's lines): a later clock_mark(), and the rate read
// once for them all.
struct span_end {
    std::uint64_t end;
    bool fast; // `end` is a TSC reading, within the span the rate holds for
    std::int64_t half_us;
    std::uint64_t us_mult;

    explicit span_end(std::uint64_t e) noexcept
        : end(e), fast((e & mono_mark) == 0 && scale.us_mult != 0 &&
                       e - scale.tsc0 < scale.next - scale.tsc0),
          half_us(scale.half_us), us_mult(scale.us_mult) {}

    // Whole microseconds (rounded; 0 if the span is negative) from clock_mark()'s `mark` to
    // the end: the ticks scaled to microseconds at once (half a microsecond's ticks added,
    // then the high half of one signed product), ~6 instructions less than through
    // nanoseconds. Off the fast path (a monotonic mark, the rate to be measured), the span
    // ends now instead, at a reading of its own.
    [[gnu::always_inline]] std::uint64_t us_since(std::uint64_t mark) const noexcept {
        if (fast && (mark & mono_mark) == 0) [[likely]] {
            const std::int64_t dt = static_cast<std::int64_t>(end - mark) + half_us;
            const auto us = static_cast<std::int64_t>(
                (static_cast<i128>(dt) * static_cast<i128>(static_cast<std::int64_t>(us_mult))) >>
                64);
            return static_cast<std::uint64_t>(us < 0 ? 0 : us);
        }
        return elapsed_us_slow(mark);
    }
};

// Whole microseconds (rounded; 0 if the span is negative) since clock_mark() gave `mark`.
[[gnu::always_inline]] inline std::uint64_t clock_elapsed_us(std::uint64_t mark) noexcept {
    if ((mark & mono_mark) == 0) [[likely]] {
        return span_end(__rdtsc()).us_since(mark);
    }
    return elapsed_us_slow(mark);
}

// The span from clock_mark()'s `mark` to TSC reading `end`, in whole microseconds (`us`,
// rounded), as span_end's fast path scales it but with none of its state kept for a batch:
// true when the thread's rate holds for `end` and the span is below 10 ms; false otherwise
// (the rate to be measured again, a longer or negative span).
[[gnu::always_inline]] inline bool short_span_us(std::uint64_t mark, std::uint64_t end,
                                                 std::uint64_t& us) noexcept {
    if (end - scale.tsc0 >= scale.next - scale.tsc0) [[unlikely]] {
        return false;
    }
    const std::int64_t dt = static_cast<std::int64_t>(end - mark) + scale.half_us;
    us = static_cast<std::uint64_t>(static_cast<std::int64_t>(
        (static_cast<i128>(dt) * static_cast<i128>(static_cast<std::int64_t>(scale.us_mult))) >>
        64));
    return us < 10'000; // (a negative span, as unsigned, is not)
}

// Whether a span from `mark` can end at a bare TSC reading scaled to microseconds at once:
// `mark` is one (not a monotonic reading) and the thread has its rate.
[[gnu::always_inline]] inline bool tsc_span(std::uint64_t mark) noexcept {
    return (mark & mono_mark) == 0 && scale.us_mult != 0;
}
#else
std::uint64_t clock_mark() noexcept {
    return static_cast<std::uint64_t>(mono_ns());
}
struct span_end {
    std::uint64_t end;
    explicit span_end(std::uint64_t e) noexcept : end(e) {}
    std::uint64_t us_since(std::uint64_t mark) const noexcept {
        return ns_to_us(static_cast<std::int64_t>(end - mark));
    }
};
std::uint64_t clock_elapsed_us(std::uint64_t mark) noexcept {
    return span_end(clock_mark()).us_since(mark);
}
#endif

} // namespace

std::atomic<std::size_t> detail::access_logs{0};

std::uint64_t detail::access_log_mark() noexcept {
    return clock_mark();
}

namespace {

// Writes the durations of `lines`' timed lines, which end at `end`, of which one or more is
// 10 ms or longer: the lines after a wider field move along (within the room record() kept
// for it), the last first.
[[gnu::noinline]] void widen_durations(detail::log_lines& lines, std::uint64_t end_mark) noexcept {
    using detail::log_lines;
    const span_end end(end_mark);
    char* const b = lines.buf.data();
    std::size_t growth = 0;
    for (log_lines::timed_line& t : lines.timed) {
        t.start = end.us_since(t.start); // from here on, the duration
        char text[32];
        growth += static_cast<std::size_t>(put_duration(text, t.start) - text) -
                  log_lines::duration_width;
    }
    std::size_t from_end = lines.used;
    std::size_t shift = growth;
    for (std::size_t i = lines.timed.size(); i-- != 0;) {
        const log_lines::timed_line& t = lines.timed[i];
        const std::size_t rest = t.at + log_lines::duration_width;
        std::memmove(b + rest + shift, b + rest, from_end - rest);
        char text[32];
        const auto width = static_cast<std::size_t>(put_duration(text, t.start) - text);
        shift -= width - log_lines::duration_width;
        std::memcpy(b + t.at + shift, text, width);
        from_end = t.at;
    }
    lines.used += growth;
}

// "1.234" for `us` microseconds below 10 ms, in the low five bytes in memory order.
//
// The milliseconds by a multiplication and a shift: us * 67109 / 2^26 is us / 1000, rounded
// down, for every us below 10 ms (checked below), where the division took one more
// multiplication and two shifts.
constexpr std::uint64_t ms_of_short(std::uint64_t us) noexcept {
    return (us * 67109) >> 26;
}
consteval bool ms_of_short_is_exact() {
    for (std::uint64_t us = 0; us < 10'000; ++us) {
        if (ms_of_short(us) != us / 1000) {
            return false;
        }
    }
    return true;
}
static_assert(ms_of_short_is_exact());

[[gnu::always_inline]] inline std::uint64_t short_duration_text(std::uint64_t us) noexcept {
    const auto ms = static_cast<unsigned>(ms_of_short(us));
    const auto frac = static_cast<unsigned>(us - std::uint64_t{ms} * 1000);
    const std::uint64_t digits = small_number_text.padded[frac] & 0xffffffU; // "234" (no space)
    if constexpr (std::endian::native == std::endian::little) {
        return ('0' + std::uint64_t{ms}) | (std::uint64_t{'.'} << 8) | (digits << 16);
    } else {
        return (('0' + std::uint64_t{ms}) << 56) | (std::uint64_t{'.'} << 48) | (digits << 16);
    }
}

// Writes the five bytes of short_duration_text() at `p` (from registers: one 4-byte store and
// one 1-byte store).
[[gnu::always_inline]] inline void put_short_duration(char* p, std::uint64_t text) noexcept {
    if constexpr (std::endian::native == std::endian::little) {
        const auto head = static_cast<std::uint32_t>(text);
        std::memcpy(p, &head, 4);
        p[4] = static_cast<char>(text >> 32);
    } else {
        const auto head = static_cast<std::uint32_t>(text >> 32);
        std::memcpy(p, &head, 4);
        p[4] = static_cast<char>(text >> 24);
    }
}

// end_durations() for two lines or more (with the batch's end read).
[[gnu::noinline]] void end_durations_of_batch(detail::log_lines& lines,
                                              std::uint64_t end_mark) noexcept {
    const span_end end(end_mark);
    char* const b = lines.buf.data();
    bool wide = false;
    // The lines of one read's requests share their start, so their duration: its text is
    // made once per run of lines with one start, and each of them takes two stores.
    const detail::log_lines::timed_line* t = lines.timed.data();
    const detail::log_lines::timed_line* const last = t + lines.timed.size();
    while (t != last) {
        const std::uint64_t start = t->start;
        const std::uint64_t us = end.us_since(start);
        if (us >= 10'000) [[unlikely]] {
            wide = true; // widen_durations writes every field
            break;
        }
        const std::uint64_t text = short_duration_text(us);
        do {
            put_short_duration(b + t->at, text);
            ++t;
        } while (t != last && t->start == start);
    }
    if (wide) [[unlikely]] {
        widen_durations(lines, end_mark);
    }
    lines.timed.clear();
}

// end_durations() for one line, whose span ends at `end`: off its fast path.
[[gnu::noinline]] void end_one_duration_at(detail::log_lines& lines, std::uint64_t end) noexcept {
    const detail::log_lines::timed_line& t = lines.timed[0];
    const std::uint64_t us = span_end(end).us_since(t.start);
    if (us < 10'000) {
        put_short_duration(lines.buf.data() + t.at, short_duration_text(us));
    } else {
        widen_durations(lines, end);
    }
    lines.timed.clear();
}

// end_durations() for one line, whose span ends now: off its fast path.
[[gnu::noinline]] void end_one_duration_now(detail::log_lines& lines) noexcept {
    end_one_duration_at(lines, clock_mark());
}

} // namespace

void detail::log_lines::end_durations() noexcept {
    // Every line ends here, as its batch is written, just before its response: one reading.
    if (timed.size() != 1) {
        end_durations_of_batch(*this, clock_mark());
        return;
    }
#if defined(__x86_64__)
    // One line (a turn that answered one request) below 10 ms: read, scaled and written at
    // once, ~25 instructions less than through span_end (every other way out a tail call).
    const timed_line& t = timed[0];
    if (tsc_span(t.start)) [[likely]] {
        const std::uint64_t end = __rdtsc();
        std::uint64_t us = 0;
        if (short_span_us(t.start, end, us)) [[likely]] {
            put_short_duration(buf.data() + t.at, short_duration_text(us));
            timed.pop_back();
            return;
        }
        end_one_duration_at(*this, end);
        return;
    }
#endif
    end_one_duration_now(*this);
}

namespace {

// When a request started for the access log: when the server read its first bytes (the
// mark it took then), else now.
inline std::uint64_t start_of(const request& req) noexcept {
    const std::uint64_t arrived = req.arrived_;
    return arrived != 0 ? arrived : clock_mark();
}

// One more access log in detail::access_logs while it exists (copies too).
struct access_log_count {
    access_log_count() noexcept { detail::access_logs.fetch_add(1, std::memory_order_relaxed); }
    access_log_count(const access_log_count&) noexcept : access_log_count() {}
    access_log_count& operator=(const access_log_count&) noexcept { return *this; }
    ~access_log_count() { detail::access_logs.fetch_sub(1, std::memory_order_relaxed); }
};

// Where access_log() writes its lines, and how.
struct log_sink {
    std::function<void(std::string_view)> sink; // a line at a time, or:
    std::shared_ptr<detail::log_batch> batch;   // lines gathered per connection turn
    access_log_count counted;

    // Writes the line of `req`, which started at `start` (start_of()) and whose handler has
    // returned, or failed if `failed`; `id` is its request ID (empty: none).
    [[gnu::always_inline]] void record(const request& req, response_writer& w, std::uint64_t start,
                                       bool failed, std::string_view id) const {
        // Milliseconds with three decimals, from whole microseconds (rounded): integers
        // format at a fraction of the cost of a double.
        if (id.empty()) {
            id = "-";
        }
        const int status = failed ? 500 : w.status();
        if (detail::conn* c = req.conn_; c != nullptr) {
            // The peer's text is formatted once per connection.
            detail::conn_log& log = detail::log_of(c);
            if (!log.known()) [[unlikely]] {
                set_lead(log, req.remote);
            }
            // (log.lead() at each use: read again after a call rather than kept in a register
            // across it, which spilled it.)
            if (batch) {
                // Gathered on this thread until a connection writes its responses (this
                // one will, or will end): see server.cpp.
                detail::log_lines& lines = detail::thread_log();
                if (lines.to != batch) {
                    lines.flush(); // another log's lines
                    lines.to = batch;
                }
                // Its duration is written with the batch, which reads the clock once for all
                // its lines (log_lines::end_durations): room for that to widen them all.
                using detail::log_lines;
                char* at = lines.room(line_bound(log.lead(), req, id) +
                                      log_lines::duration_growth * (lines.timed.size() + 1));
                char* field = write_line_head(at, log.lead(), req, status, w.bytes_written());
                // (Should this throw, the line is not committed.)
                lines.timed.push_back({static_cast<std::size_t>(field - lines.buf.data()), start});
                lines.commit(write_line_tail(field + log_lines::duration_width, id, true));
                if (lines.used >= log_flush_bytes) {
                    lines.flush();
                }
            } else {
                std::string line;
                append_line(line, log.lead(), req, status, w.bytes_written(),
                            clock_elapsed_us(start), id, false);
                sink(line);
            }
        } else {
            std::string lead;
            append_lead(lead, req.remote);
            std::string line;
            append_line(line, lead, req, status, w.bytes_written(), clock_elapsed_us(start), id,
                        batch != nullptr);
            if (batch) {
                batch->write(line);
            } else {
                sink(line);
            }
        }
    }
};

// access_log() alone: the request's start taken before the handler, the line written after
// it.
struct access_log_steps final : detail::around_steps {
    log_sink log;
    explicit access_log_steps(log_sink l) noexcept : log(std::move(l)) {}
    void before(request& req, response_writer&, detail::around_state& st) const override {
        st.start = start_of(req);
    }
    void after(request& req, response_writer& w, detail::around_state& st,
               bool failed) const override {
        // What request_id() put in the context, when it runs outside this one; else what it
        // set in the response, when it runs inside.
        std::string_view id = request_id_of(req.ctx());
        if (id.empty()) {
            id = w.headers().get("X-Request-ID").value_or(std::string_view{});
        }
        log.record(req, w, st.start, failed, id);
    }
};

// A request-ID context node kept for the thread's next request (see request_id_steps):
// detached from any parent, held by nobody else. Destroyed with the thread (the node cache
// takes blocks at any point of a thread's exit).
struct spare_id_holder {
    context ctx;
};
thread_local spare_id_holder spare_id;
// `spare_id`, reached with one %fs-relative load (initial-exec, constant-initialized: no
// guard and no __tls_get_addr, which `spare_id` itself takes for its destructor's
// registration); null until the thread's first request ID.
[[gnu::tls_model("initial-exec")]] constinit thread_local context* spare_id_ptr = nullptr;

[[gnu::noinline]] context& first_spare_id() noexcept {
    spare_id_ptr = &spare_id.ctx;
    return *spare_id_ptr;
}

inline context& spare_id_ctx() noexcept {
    context* c = spare_id_ptr;
    return c != nullptr ? *c : first_spare_id();
}

// The thread's spare holds no node yet (its first request ID, or one that suspended took
// it): a new one, detached.
[[gnu::noinline]] void make_spare_id(context& spare) {
    spare = with_value(context{}, request_id_key, std::string_view{});
}

// request_id(), and when the handler it wraps is access_log()'s, that too (`log` set).
//
// The request's value node is the thread's spare: linked under the request's context for
// the request, and back to the spare, detached, when nobody but us holds it once the
// handler has returned (it is relinked and refilled at the thread's next request). A
// request then costs no node allocated, built and freed, and the node stays in cache,
// however many connections there are.
//
// Its link on the request's context is borrowed (link_child_borrowed): no atomic increment
// of the request context's count going in, nor a decrement coming out, ~10 ns a request.
// The borrow is safe because the around state holds a reference on the node of its own
// (the node's count is set to 2, ours and req.ctx_'s: nobody else can see it yet) and
// st.saved holds the parent, until `after` ends the borrow: by detaching the node, when
// its count shows nobody else holds it, or else by giving the link its reference before
// ours goes (a handler that kept its context, as Go allows, keeps the whole chain).
struct request_id_steps final : detail::around_steps {
    using node_type = tether::detail::value_node<request_id_value>;
    std::optional<log_sink> log; // access_log()'s, taken from the handler it wrapped
    explicit request_id_steps(std::optional<log_sink> l) noexcept : log(std::move(l)) {}

    void before(request& req, response_writer& w, detail::around_state& st) const override {
        const std::string_view given = req.header("x-request-id");
        context& spare = spare_id_ctx();
        if (spare.node() == nullptr) [[unlikely]] {
            make_spare_id(spare);
        }
        auto* n = static_cast<node_type*>(spare.node());
        request_id_value* v = &n->value;
        // The ID is written once, in the node; the response's copy is made from it. (The node
        // is still the detached spare: should the header's copy throw, nothing is linked.)
        if (acceptable_id(given)) {
            v->size = static_cast<std::uint8_t>(given.size());
            detail::put_short(v->data, given);
            w.headers().set("X-Request-ID", v->view());
        } else {
            v->size = 32;
            new_request_id(v->data);
            // Its length known here: copied without put_short's tests of the length.
            w.headers().set("X-Request-ID", std::string_view(v->data, 32));
        }
        tether::detail::link_child_borrowed(*n, req.ctx_);
        n->refs.store(2, std::memory_order_relaxed); // req.ctx_'s (the spare's) and ours
        st.borrowed = n;
        // Moved, not copied: the handler runs under req.ctx_ itself.
        st.saved = std::exchange(req.ctx_, std::move(spare));
        if (log) {
            st.start = start_of(req);
        }
    }

    void after(request& req, response_writer& w, detail::around_state& st,
               bool failed) const override {
        // Back to the context we came with.
        context mine = std::exchange(req.ctx_, std::move(st.saved));
        auto* n = static_cast<node_type*>(std::exchange(st.borrowed, nullptr));
        std::string_view id;
        // Nobody else holds the node (nor can any more, after this acquire load): req.ctx_'s
        // reference, now `mine`, and ours are all there are. Unless the handler left another
        // context in req.ctx_.
        const bool alone = mine.node() == n && n->refs.load(std::memory_order_acquire) == 2;
        if (alone) [[likely]] {
            tether::detail::unlink_borrowed(*n);
            n->refs.store(1, std::memory_order_relaxed); // ours goes: `mine` holds the node
            id = n->value.view();
        } else {
            // Kept (a handler's copy, a child of it): the link takes its reference on the
            // request's context (req.ctx_ holds it) before ours goes, which is not the last
            // if `mine` holds the node.
            tether::detail::own_parent_link(*n);
            id = mine.node() == n ? n->value.view() : request_id_of(mine);
            n->release();
        }
        if (log) {
            log->record(req, w, st.start, failed, id);
        }
        if (alone) {
            // The thread's spare, unless the thread has one (a request that suspended took
            // none); else `mine` frees it.
            if (context& spare = spare_id_ctx(); spare.node() == nullptr) {
                spare = std::move(mine);
            }
        }
    }
};

// recover(): synchronous steps (nothing before the handler; its exception answered), so
// that the server runs them in its frame, with no coroutine frame per request.
struct recover_steps final : detail::around_steps {
    std::function<void(std::string_view)> sink;
    explicit recover_steps(std::function<void(std::string_view)> s) : sink(std::move(s)) {}
    void before(request&, response_writer&, detail::around_state&) const override {}
    bool recover(request& req, response_writer& w, const std::exception_ptr& e) const override {
        std::string what;
        try {
            std::rethrow_exception(e);
        } catch (const std::exception& x) {
            what = x.what();
        } catch (...) {
            what = "unknown exception";
        }
        sink(fmt::format("http: panic serving {}: {} {}: {}", req.remote, req.method(),
                         req.target(), what));
        if (!w.head_sent_) {
            w.headers().clear();
            w.body_.clear();
            w.status_ = 0;
            w.body_bytes_ = 0;
            w.headers().set("Content-Type", "text/plain; charset=utf-8");
            w.write_header(500);
            w.write("500 internal server error\n");
        }
        return true;
    }
    void after(request&, response_writer&, detail::around_state&, bool) const override {}
};

// timeout(): synchronous steps around the handler, which runs under the request's context
// with a deadline (in req.ctx_ from `before` to `after`).
struct timeout_steps final : detail::around_steps {
    std::chrono::nanoseconds d;
    explicit timeout_steps(std::chrono::nanoseconds t) : d(t) {}
    void before(request& req, response_writer&, detail::around_state& st) const override {
        auto [ctx, cancel] = tether::with_timeout(req.ctx_, d);
        st.saved = std::exchange(req.ctx_, std::move(ctx));
        st.cancel = std::move(cancel);
    }
    void after(request& req, response_writer& w, detail::around_state& st,
               bool failed) const override {
        const bool expired = req.ctx_.err() == errc::deadline_exceeded;
        req.ctx_ = std::move(st.saved);
        st.cancel.reset(); // the deadline's timer goes
        if (expired && !failed && !w.head_sent_) {
            // Whatever the handler wrote after its deadline is dropped, as Go's
            // TimeoutHandler does.
            w.headers().clear();
            w.body_.clear();
            w.status_ = 0;
            w.body_bytes_ = 0;
            w.headers().set("Content-Type", "text/plain; charset=utf-8");
            w.write_header(503);
            w.write("503 handler timeout\n");
        }
    }
};

// bearer_auth(): synchronous steps (the verifier is a plain function): `before` answers 401
// itself (st.answered: the handler is not called) or puts the identity in req.ctx_, under
// which the handler runs; `after` restores the context.
struct bearer_steps final : detail::around_steps {
    std::function<std::optional<identity>(std::string_view)> verify;
    explicit bearer_steps(std::function<std::optional<identity>(std::string_view)> v)
        : verify(std::move(v)) {}
    void before(request& req, response_writer& w, detail::around_state& st) const override {
        std::string_view auth = req.header("authorization");
        std::optional<identity> who;
        if (auth.size() > 7 && iequals(auth.substr(0, 7), "bearer ")) {
            who = verify(auth.substr(7));
        }
        if (!who) {
            w.headers().set("WWW-Authenticate", "Bearer");
            w.headers().set("Content-Type", "text/plain; charset=utf-8");
            w.write_header(401);
            w.write("401 unauthorized\n");
            st.answered = true;
            return;
        }
        context ctx = with_value(req.ctx_, identity_key, std::move(*who));
        st.saved = std::exchange(req.ctx_, std::move(ctx));
    }
    void after(request& req, response_writer&, detail::around_state& st, bool) const override {
        if (!st.answered) {
            req.ctx_ = std::move(st.saved);
        }
    }
};

} // namespace

namespace detail {

bool around_steps::recover(request&, response_writer&, const std::exception_ptr&) const {
    return false;
}

namespace {
// The end of one around_steps once the handler (or `before`) is done: `failed` offered to
// its recover(), then its after(), then what was not recovered rethrown.
void end_steps(const around_steps& steps, request& req, response_writer& w, around_state& st,
               std::exception_ptr failed) {
    if (failed && steps.recover(req, w, failed)) {
        failed = nullptr;
    }
    steps.after(req, w, st, failed != nullptr);
    if (failed) {
        std::rethrow_exception(failed);
    }
}
} // namespace

// The steps in a frame of their own, for a caller that awaits the handler (a middleware
// that is a coroutine). The server runs them in its frame instead.
task<void> around_handler::operator()(request& req, response_writer& w) const {
    around_state st;
    steps->before(req, w, st);
    std::exception_ptr failed;
    if (!st.answered) {
        // The handler runs under req.ctx_ as `before` left it, whatever context we were given.
        swap_context enter{&req.ctx_};
        const context* outer = co_await enter;
        try {
            task<void> t = next(req, w);
            co_await std::move(t);
        } catch (...) {
            failed = std::current_exception();
        }
        swap_context leave{outer};
        (void)co_await leave;
    }
    end_steps(*steps, req, w, st, std::move(failed));
}

void around_sync::operator()(request& req, response_writer& w) const {
    around_state st;
    steps->before(req, w, st);
    std::exception_ptr failed;
    if (!st.answered) {
        try {
            next(req, w);
        } catch (...) {
            failed = std::current_exception();
        }
    }
    end_steps(*steps, req, w, st, std::move(failed));
}

} // namespace detail

std::string_view request_id_of(const context& ctx) noexcept {
    const request_id_value* id = ctx.value(request_id_key);
    return id ? id->view() : std::string_view{};
}

const identity* identity_of(const context& ctx) noexcept {
    return ctx.value(identity_key);
}

middleware request_id() {
    return [](handler next) -> handler {
        if (auto* a = next.target<detail::around_handler>(); a != nullptr && a->steps) {
            if (const auto* log = dynamic_cast<const access_log_steps*>(a->steps.get())) {
                // access_log() right inside: its work is done in request_id()'s steps.
                return detail::around_handler{a->next,
                                              std::make_shared<request_id_steps>(log->log)};
            }
        }
        return detail::around_handler{std::move(next),
                                      std::make_shared<request_id_steps>(std::nullopt)};
    };
}

namespace {
// The middleware that puts `steps` around the handler it wraps.
middleware steps_middleware(std::shared_ptr<const detail::around_steps> steps) {
    return
        [steps](handler next) -> handler { return detail::around_handler{std::move(next), steps}; };
}

middleware access_log_with(log_sink log) {
    return steps_middleware(std::make_shared<access_log_steps>(std::move(log)));
}
} // namespace

middleware access_log(std::function<void(std::string_view)> sink) {
    if (!sink) {
        return access_log(stderr);
    }
    return access_log_with({std::move(sink), {}, {}});
}

middleware access_log(std::FILE* out) {
    return access_log_with({{}, std::make_shared<file_batch>(out), {}});
}

middleware access_log_batched(std::function<void(std::string_view)> sink) {
    return access_log_with({{}, std::make_shared<function_batch>(std::move(sink)), {}});
}

middleware recover(std::function<void(std::string_view)> sink) {
    if (!sink) {
        sink = to_stderr;
    }
    return steps_middleware(std::make_shared<recover_steps>(std::move(sink)));
}

middleware timeout(std::chrono::nanoseconds d) {
    return steps_middleware(std::make_shared<timeout_steps>(d));
}

middleware bearer_auth(std::function<std::optional<identity>(std::string_view)> verify) {
    return steps_middleware(std::make_shared<bearer_steps>(std::move(verify)));
}

} // namespace tether::http
