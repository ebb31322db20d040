#include "net/http/parser.hpp"

#include <algorithm>
#include <bit>
#include <cstring>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace tether::http {

namespace {

constexpr bool tchar_slow(unsigned char c) noexcept {
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) {
        return true;
    }
    switch (c) {
    case '!':
    case '#':
    case '$':
    case '%':
    case '&':
    case '\'':
    case '*':
    case '+':
    case '-':
    case '.':
    case '^':
    case '_':
    case '`':
    case '|':
    case '~':
        return true;
    default:
        return false;
    }
}

// Character classes, one table lookup per byte in the scanning loops.
enum char_class : unsigned char {
    cls_tchar = 1,  // token characters (methods, field names)
    cls_field = 2,  // field-value characters: VCHAR, obs-text, SP, HTAB
    cls_target = 4, // request-target characters: visible ASCII and obs-text, no SP or controls
};

struct class_table {
    unsigned char v[256];
};

constexpr class_table make_classes() noexcept {
    class_table t{};
    for (unsigned c = 0; c < 256; ++c) {
        auto uc = static_cast<unsigned char>(c);
        unsigned char k = 0;
        if (tchar_slow(uc)) {
            k |= cls_tchar;
        }
        if (uc == '\t' || (uc >= 0x20 && uc != 0x7f)) {
            k |= cls_field;
        }
        if (uc > 0x20 && uc != 0x7f) {
            k |= cls_target;
        }
        t.v[c] = k;
    }
    return t;
}

constexpr class_table classes = make_classes();

constexpr bool is_tchar(unsigned char c) noexcept {
    return (classes.v[c] & cls_tchar) != 0;
}

constexpr bool is_field_char(unsigned char c) noexcept {
    return (classes.v[c] & cls_field) != 0;
}

constexpr bool is_target_char(unsigned char c) noexcept {
    return (classes.v[c] & cls_target) != 0;
}

constexpr unsigned char lower(unsigned char c) noexcept {
    return (c >= 'A' && c <= 'Z') ? static_cast<unsigned char>(c + 32) : c;
}

std::string_view trim_ows(std::string_view v) noexcept {
    while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) {
        v.remove_prefix(1);
    }
    while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) {
        v.remove_suffix(1);
    }
    return v;
}

// Calls fn(token) for each comma-separated element of a list field, trimmed; empty
// elements are skipped (RFC 9110 §5.6.1).
template <class F>
void for_each_element(std::string_view v, F fn) {
    while (!v.empty()) {
        std::size_t comma = v.find(',');
        std::string_view el = trim_ows(v.substr(0, comma));
        if (!el.empty()) {
            fn(el);
        }
        if (comma == std::string_view::npos) {
            break;
        }
        v.remove_prefix(comma + 1);
    }
}

bool parse_decimal(std::string_view s, std::uint64_t& out) noexcept {
    if (s.empty() || s.size() > 19) {
        return false;
    }
    std::uint64_t v = 0;
    for (char ch : s) {
        if (ch < '0' || ch > '9') {
            return false;
        }
        v = v * 10 + static_cast<std::uint64_t>(ch - '0');
    }
    out = v;
    return true;
}

} // namespace

bool has_token(std::string_view list, std::string_view token) noexcept {
    bool found = false;
    for_each_element(list, [&](std::string_view el) { found |= iequals(el, token); });
    return found;
}

namespace {

// Returns true if the eight bytes of `x` and `y` are equal ignoring ASCII case: they may
// differ only in the case bit (0x20), and only where `x` has a letter.
constexpr bool same_word(std::uint64_t x, std::uint64_t y) noexcept {
    constexpr std::uint64_t ones = 0x0101010101010101;
    constexpr std::uint64_t highs = 0x8080808080808080;
    const std::uint64_t d = x ^ y;
    if (d == 0) {
        return true;
    }
    if ((d & ~(0x20 * ones)) != 0) {
        return false;
    }
    const std::uint64_t lx = (x | 0x20 * ones) & ~highs;    // 7 bits, letters lower case
    const std::uint64_t ge_a = lx + (0x80 - 'a') * ones;    // high bit: lx >= 'a'
    const std::uint64_t gt_z = lx + (0x7f - 'z') * ones;    // high bit: lx > 'z'
    const std::uint64_t letter = ge_a & ~gt_z & ~x & highs; // high bit: x's byte is a letter
    return (d & ~(letter >> 2)) == 0;
}

} // namespace

bool detail::iequals_n(const char* a, const char* b, std::size_t n) noexcept {
    // Eight bytes at a time, folded to lower case (no per-byte branches): header names are
    // compared on every lookup. A tail shorter than a word is read as the last eight bytes
    // (overlapping the word before) or, in a name under eight bytes, as four-byte halves.
    auto word = [](const char* p) noexcept {
        std::uint64_t w;
        std::memcpy(&w, p, 8);
        return w;
    };
    if (n >= 8) {
        std::size_t i = 0;
        for (; i + 8 <= n; i += 8) {
            if (!same_word(word(a + i), word(b + i))) {
                return false;
            }
        }
        return i == n || same_word(word(a + n - 8), word(b + n - 8));
    }
    if (n >= 4) {
        auto half = [](const char* p) noexcept {
            std::uint32_t w;
            std::memcpy(&w, p, 4);
            return std::uint64_t{w};
        };
        return same_word(half(a) | half(a + n - 4) << 32, half(b) | half(b + n - 4) << 32);
    }
    for (std::size_t i = 0; i < n; ++i) {
        if (a[i] != b[i] &&
            lower(static_cast<unsigned char>(a[i])) != lower(static_cast<unsigned char>(b[i]))) {
            return false;
        }
    }
    return true;
}

std::size_t request_head::count(std::string_view name) const noexcept {
    return static_cast<std::size_t>(
        std::count_if(headers.begin(), headers.end(),
                      [&](const header_field& f) { return iequals(f.name, name); }));
}

std::string_view request_head::long_path() const noexcept {
    return target.substr(0, target.find('?'));
}

std::string_view request_head::query() const noexcept {
    std::size_t q = target.find('?');
    return q == std::string_view::npos ? std::string_view{} : target.substr(q + 1);
}

request_parser::status request_parser::parse_general(std::string_view buf, request_head& out) {
    scanned_ = true;
    // Skip empty lines before the request line (RFC 9112 §2.2). They count towards the
    // header-size limit: a client can't grow the buffer with them forever.
    std::size_t start = 0;
    while (start + 1 < buf.size() && buf[start] == '\r' && buf[start + 1] == '\n') {
        start += 2;
    }
    // A final lone CR may start an empty line: it waits for the next byte.
    const bool pending_cr = start < buf.size() && buf[start] == '\r' && start + 1 == buf.size();

    // A head is refused as soon as the bytes prove it bad, before it is complete: a target
    // over the limit (414), a request line that can't be one or a bare LF (400), a head over
    // the size limit (431). So that the answer does not depend on how the bytes arrived,
    // each finding has the length of input at which it is first known, and the earliest
    // wins (ties in the order 414, 400, 431).
    std::size_t head_end = std::string_view::npos;
    if (!pending_cr) {
        head_end = scan_lines(buf, start);
    }
    const bool complete = head_end != std::string_view::npos;
    const std::size_t region = complete ? head_end : buf.size();
    const parse_error* found = nullptr;
    std::size_t found_at = std::string_view::npos;
    auto consider = [&](std::size_t at, const parse_error& e) {
        if (at < found_at) {
            found_at = at;
            found = &e;
        }
    };
    if (!pending_cr) {
        scan_line(buf.substr(0, region), start);
        consider(line_error_at_, line_error_);
        static constexpr parse_error bare_lf{400, "bare LF in the header section"};
        consider(bare_lf_at_, bare_lf);
    }
    const std::size_t too_large_at = limits_.max_header_bytes + 4;
    if (complete ? head_end > too_large_at : buf.size() >= too_large_at) {
        static constexpr parse_error too_large{431, "request header fields too large"};
        consider(too_large_at, too_large);
    }
    if (found != nullptr) {
        return fail(found->status, found->reason);
    }
    if (!complete) {
        return status::incomplete;
    }
    // The request line has been checked by scan_line up to its second SP: method, SP,
    // target (within max_target), SP.
    out.method = buf.substr(start, target_begin_ - 1 - start);
    out.target = buf.substr(target_begin_, line_pos_ - target_begin_);
    status s =
        parse_complete(buf.substr(line_pos_ + 1, head_end - 2 - (line_pos_ + 1)), buf.data(), out);
    if (s == status::complete) {
        reset(); // the next call may start the next request without reset()
        consumed_ = head_end;
    }
    return s;
}

void request_parser::scan_line(std::string_view buf, std::size_t start) noexcept {
    // method SP request-target SP: resumes at line_pos_, so a trickled request line is
    // scanned once. The rest of the line is left to parse_complete.
    line_pos_ = std::max(line_pos_, start);
    auto bad = [&](int code, const char* why) {
        line_state_ = line_scan::done;
        line_error_at_ = line_pos_ + 1;
        line_error_ = {code, why};
    };
    const char* d = buf.data();
    const std::size_t size = buf.size();
    if (line_state_ == line_scan::method) {
        while (line_pos_ < size && is_tchar(static_cast<unsigned char>(d[line_pos_]))) {
            ++line_pos_;
        }
        if (line_pos_ == size) {
            return;
        }
        if (d[line_pos_] == ' ' && line_pos_ > start) {
            line_state_ = line_scan::target;
            target_begin_ = ++line_pos_;
        } else {
            bad(400, "malformed request line");
            return;
        }
    }
    if (line_state_ == line_scan::target) {
        // The target may not grow past max_target: the scan stops there.
        const std::size_t limit = std::min(size, target_begin_ + limits_.max_target);
        while (line_pos_ < limit && is_target_char(static_cast<unsigned char>(d[line_pos_]))) {
            ++line_pos_;
        }
        if (line_pos_ == size) {
            return;
        }
        auto c = static_cast<unsigned char>(d[line_pos_]);
        if (c == ' ' && line_pos_ > target_begin_) {
            line_state_ = line_scan::done;
        } else if (!is_target_char(c)) {
            bad(400, "malformed request target");
        } else {
            bad(414, "URI too long"); // line_pos_ - target_begin_ == max_target
        }
    }
}

namespace {

// Returns the first LF in [p, end), or null; `begin` <= p is where the buffer starts. Lines
// of a head are short: sixteen bytes at a time, inline, with no call to memchr. Past the
// last whole block, one block ending at `end` is read (backing into bytes before `p` that
// the buffer has, their matches masked off), so that no byte is looked at one at a time
// unless the whole buffer is under sixteen bytes.
inline const char* find_lf(const char* begin, const char* p, const char* end) noexcept {
#if defined(__SSE2__)
    const __m128i lf = _mm_set1_epi8('\n');
    auto mask_at = [&lf](const char* q) noexcept {
        const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(q));
        return static_cast<unsigned>(_mm_movemask_epi8(_mm_cmpeq_epi8(v, lf)));
    };
    for (; end - p >= 16; p += 16) {
        if (const unsigned m = mask_at(p); m != 0) {
            return p + __builtin_ctz(m);
        }
    }
    if (p == end) {
        return nullptr;
    }
    if (end - begin >= 16) {
        const char* q = end - 16;
        const unsigned m = mask_at(q) >> (p - q); // only the bytes from p on
        return m != 0 ? p + __builtin_ctz(m) : nullptr;
    }
#endif
    return static_cast<const char*>(std::memchr(p, '\n', static_cast<std::size_t>(end - p)));
}

} // namespace

std::size_t request_parser::scan_lines(std::string_view buf, std::size_t start) noexcept {
    // Looks at each LF once, resuming where the last call stopped: every LF in the head must
    // end a CRLF (strict: RFC 9112 §2.2 lets a server refuse a bare one, and a proxy that
    // reads it as a line end would see other fields), and the first CRLF CRLF ends the head.
    // Stops at the first bare LF: the head is refused whatever follows it.
    std::size_t i = std::max(lf_pos_, start);
    const char* d = buf.data();
    std::size_t head_end = std::string_view::npos;
    while (bare_lf_at_ == std::string_view::npos && i < buf.size()) {
        const char* p = find_lf(d, d + i, d + buf.size());
        if (p == nullptr) {
            i = buf.size();
            break;
        }
        std::size_t lf = static_cast<std::size_t>(p - d);
        i = lf + 1;
        if (lfs_ < known_lfs && lf <= UINT32_MAX) {
            lf_at_[lfs_++] = static_cast<std::uint32_t>(lf);
        }
        if (lf == start || d[lf - 1] != '\r') {
            bare_lf_at_ = lf + 1;
        } else if (lf >= start + 3 && d[lf - 2] == '\n' && d[lf - 3] == '\r') {
            head_end = lf + 1;
            break;
        }
    }
    lf_pos_ = i;
    return head_end;
}

namespace {

// Returns true if every byte of [p, p + n) is a field-value character. Eight bytes at a
// time: a word with no byte below 0x20 and none equal to 0x7f is all field characters
// (HTAB, the one control allowed, sends its word to the byte loop).
bool all_field_chars(const char* p, std::size_t n) noexcept {
    constexpr std::uint64_t ones = 0x0101010101010101;
    constexpr std::uint64_t highs = 0x8080808080808080;
    auto bytes_ok = [](const char* q, std::size_t m) noexcept {
        unsigned char all = cls_field;
        for (std::size_t k = 0; k < m; ++k) {
            all &= classes.v[static_cast<unsigned char>(q[k])];
        }
        return all != 0;
    };
    std::size_t k = 0;
    for (; k + 8 <= n; k += 8) {
        std::uint64_t w;
        std::memcpy(&w, p + k, 8);
        std::uint64_t below = (w - 0x20 * ones) & ~w & highs; // some byte < 0x20
        std::uint64_t del = w ^ (0x7f * ones);
        del = (del - ones) & ~del & highs; // some byte == 0x7f
        if ((below | del) != 0 && !bytes_ok(p + k, 8)) {
            return false;
        }
    }
    return bytes_ok(p + k, n - k);
}

// Returns true if `name` (token characters, at least as long as `lit`) is `lit` (lower case
// letters and '-') in any case. Setting the case bit (0x20) of every byte of the name is
// exact for such names: it maps only the letter's two cases to a lower case letter, and only
// '-' and CR to '-' (a token holds no CR). So a word at a time (overlapping at the end).
template <std::size_t N>
bool name_is(const char* name, const char (&lit)[N]) noexcept {
    constexpr std::size_t n = N - 1;
    static_assert(n >= 4);
    auto eq = [&]<class W>(std::size_t at, W) noexcept {
        W a;
        W b;
        std::memcpy(&a, name + at, sizeof a);
        std::memcpy(&b, lit + at, sizeof b);
        return static_cast<W>(a | static_cast<W>(0x2020202020202020)) == b;
    };
    if constexpr (n >= 8) {
        for (std::size_t i = 0; i + 8 <= n; i += 8) {
            if (!eq(i, std::uint64_t{})) {
                return false;
            }
        }
        return n % 8 == 0 || eq(n - 8, std::uint64_t{});
    } else {
        return eq(0, std::uint32_t{}) && eq(n - 4, std::uint32_t{});
    }
}

// The fields the parser acts on, by name.
enum class known_field : unsigned char {
    other,
    content_length,
    transfer_encoding,
    host,
    connection,
    expect
};

// Returns the field `name` is, if the parser acts on it. Exact for any bytes, not only
// tokens: name_is would also take a CR for the '-' of a name, which is checked itself.
[[gnu::always_inline]] inline known_field classify(std::string_view name) noexcept {
    const char* n = name.data();
    if (name.size() == 4) {
        // Host, in every HTTP/1.1 request: before the jump table.
        return name_is(n, "host") ? known_field::host : known_field::other;
    }
    switch (name.size()) {
    case 6:
        return name_is(n, "expect") ? known_field::expect : known_field::other;
    case 10:
        return name_is(n, "connection") ? known_field::connection : known_field::other;
    case 14:
        return name_is(n, "content-length") && n[7] == '-' ? known_field::content_length
                                                           : known_field::other;
    case 17:
        return name_is(n, "transfer-encoding") && n[8] == '-' ? known_field::transfer_encoding
                                                              : known_field::other;
    default:
        return known_field::other;
    }
}

} // namespace

// What the fields of one head add up to, as they are read in order.
struct request_parser::field_state {
    std::size_t hosts = 0;
    bool te_seen = false;
    bool te_last_chunked = false;
    bool te_misordered = false;
    bool te_unknown = false;
    bool conn_close = false;
    bool conn_keep_alive = false;
};

// Acts on field `f` (the last one added to `out`): Content-Length, Transfer-Encoding, Host,
// Connection, Expect. Returns false with error_ set when the field makes the head bad.
bool request_parser::take_field(const header_field& f, field_state& fs,
                                request_head& out) noexcept {
    const known_field k = classify(f.name);
    return k == known_field::other || take_known(static_cast<unsigned char>(k), f, fs, out);
}

// take_field for a field whose name is known to be `kind` (a known_field, not `other`).
bool request_parser::take_known(unsigned char kind, const header_field& f, field_state& fs,
                                request_head& out) noexcept {
    switch (static_cast<known_field>(kind)) {
    case known_field::other:
        break;
    case known_field::content_length: {
        // A list of identical values is allowed (RFC 9112 §6.3), anything else is not.
        bool ok = true;
        for_each_element(f.value, [&](std::string_view el) {
            std::uint64_t v;
            if (!parse_decimal(el, v) || (out.content_length && *out.content_length != v)) {
                ok = false;
            } else {
                out.content_length = v;
            }
        });
        if (!ok || !out.content_length) {
            fail(400, "invalid or conflicting Content-Length");
            return false;
        }
        break;
    }
    case known_field::transfer_encoding:
        // The codings of every Transfer-Encoding field, in order: chunked must come last
        // and once (else the length can't be known: 400, RFC 9112 §6.3); a coding we do
        // not implement before it is a 501 (§6.1).
        fs.te_seen = true;
        for_each_element(f.value, [&](std::string_view el) {
            fs.te_misordered |= fs.te_last_chunked;
            fs.te_last_chunked = iequals(el, "chunked");
            fs.te_unknown |= !fs.te_last_chunked;
        });
        break;
    case known_field::host:
        ++fs.hosts;
        break;
    case known_field::connection:
        for_each_element(f.value, [&](std::string_view el) {
            fs.conn_close |= iequals(el, "close");
            fs.conn_keep_alive |= iequals(el, "keep-alive");
        });
        break;
    case known_field::expect:
        if (iequals(f.value, "100-continue")) {
            out.expect_continue = true;
        } else {
            fail(417, "unsupported expectation");
            return false;
        }
        break;
    }
    return true;
}

// Checks what the fields add up to once all are read, and sets the framing of `out`.
request_parser::status request_parser::finish_fields(const field_state& fs,
                                                     request_head& out) noexcept {
    if (fs.te_seen) {
        if (out.version_minor == 0) {
            return fail(400, "Transfer-Encoding in an HTTP/1.0 request");
        }
        if (out.content_length) {
            return fail(400, "both Content-Length and Transfer-Encoding");
        }
        if (!fs.te_last_chunked || fs.te_misordered) {
            return fail(400, "chunked is not the final transfer coding");
        }
        if (fs.te_unknown) {
            return fail(501, "unsupported transfer coding");
        }
        out.chunked = true;
    }
    if (out.version_minor == 1 && fs.hosts != 1) {
        return fail(400, fs.hosts == 0 ? "missing Host header" : "repeated Host header");
    }
    out.keep_alive =
        out.version_minor == 1 ? !fs.conn_close : (fs.conn_keep_alive && !fs.conn_close);
    if (out.expect_continue && out.version_minor == 0) {
        out.expect_continue = false; // a 1.0 client can't take a 100 response (RFC 9110 §10.1.1)
    }
    return status::complete;
}

void request_parser::clear_head(request_head& out) noexcept {
    out.version_minor = 1;
    out.headers.clear();
    out.content_length.reset();
    out.chunked = false;
    out.keep_alive = true;
    out.expect_continue = false;
}

namespace {

#if defined(__SSE2__)
inline __m128i load16(const char* p) noexcept {
    return _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
}

// Returns the mask of the sixteen bytes at `q` that are at most `max` or equal to DEL.
inline unsigned low_or_del_mask(const char* q, char max) noexcept {
    const __m128i v = load16(q);
    const __m128i low = _mm_cmpeq_epi8(_mm_min_epu8(v, _mm_set1_epi8(max)), v);
    const __m128i del = _mm_cmpeq_epi8(v, _mm_set1_epi8(0x7f));
    return static_cast<unsigned>(_mm_movemask_epi8(_mm_or_si128(low, del)));
}

// Scans [p, end) sixteen bytes at a time for a byte at most `max` or equal to DEL (SP and
// below can't be in a request-target; a control, HTAB included, ends a run of plain
// field-value characters). Returns that byte, or null with `p` at the first byte not
// scanned (fewer than sixteen are left).
inline const char* find_low_or_del16(const char*& p, const char* end, char max) noexcept {
    for (; end - p >= 16; p += 16) {
        if (const unsigned m = low_or_del_mask(p, max); m != 0) {
            return p + std::countr_zero(m);
        }
    }
    return nullptr;
}
#endif

// Returns the first byte of [p, end) that can't be in a request-target, or end.
inline const char* skip_target_chars(const char* p, const char* end) noexcept {
#if defined(__SSE2__)
    if (const char* hit = find_low_or_del16(p, end, 0x20)) {
        return hit;
    }
#endif
    while (p < end && is_target_char(static_cast<unsigned char>(*p))) {
        ++p;
    }
    return p;
}

// skip_plain_field_chars for the last bytes of a buffer (or all of them, without SSE2): eight
// bytes at a time, a word with no byte below 0x20 and none equal to 0x7f passing whole. (In
// each mask the lowest flagged byte is exact; a borrow may flag bytes above it.) Out of
// line: its constants cost the common case nothing.
[[gnu::noinline]] const char* skip_plain_field_chars_tail(const char* p, const char* end) noexcept {
    constexpr std::uint64_t ones = 0x0101010101010101;
    constexpr std::uint64_t highs = 0x8080808080808080;
    for (; end - p >= 8; p += 8) {
        std::uint64_t w;
        std::memcpy(&w, p, 8);
        const std::uint64_t below = (w - 0x20 * ones) & ~w & highs; // a byte < 0x20
        std::uint64_t del = w ^ (0x7f * ones);
        del = (del - ones) & ~del & highs; // a byte == 0x7f
        if (const std::uint64_t m = below | del; m != 0) {
            return p + (std::countr_zero(m) >> 3);
        }
    }
    while (p < end && is_field_char(static_cast<unsigned char>(*p)) && *p != '\t') {
        ++p;
    }
    return p;
}

// Returns the first byte of [p, end) that is not a field-value character or is HTAB (the
// one control a value may hold), or end: sixteen bytes at a time (SSE2), the last ones as the
// sixteen ending at `end` (bytes before p masked off) when the buffer from `begin` has them.
// No call unless it is under sixteen bytes: a call in the loop over the fields would move
// its values to callee-saved registers (and the stack) on every head.
inline const char* skip_plain_field_chars(const char* begin, const char* p,
                                          const char* end) noexcept {
#if defined(__SSE2__)
    if (const char* hit = find_low_or_del16(p, end, 0x1f)) {
        return hit;
    }
    if (p == end) {
        return end;
    }
    if (end - begin >= 16) [[likely]] {
        const char* const q = end - 16;
        const unsigned m = low_or_del_mask(q, 0x1f) >> (p - q);
        return m != 0 ? p + std::countr_zero(m) : end;
    }
#endif
    return skip_plain_field_chars_tail(p, end);
}

// Returns true if the `n` bytes at `p` are all token characters: one table lookup per byte,
// no branch, four bytes per turn of the loop.
inline bool all_tchars(const char* p, std::size_t n) noexcept {
    auto cls = [p](std::size_t i) noexcept { return classes.v[static_cast<unsigned char>(p[i])]; };
    unsigned char a = cls_tchar;
    unsigned char b = cls_tchar;
    std::size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        a &= cls(i) & cls(i + 1);
        b &= cls(i + 2) & cls(i + 3);
    }
    for (; i < n; ++i) {
        a &= cls(i);
    }
    return (a & b & cls_tchar) != 0;
}

// The `N - 1` characters of `s` as they lie in memory, read as one word.
template <class W, std::size_t N>
constexpr W word_of(const char (&s)[N]) noexcept {
    static_assert(N - 1 == sizeof(W));
    W w = 0;
    for (std::size_t i = 0; i < sizeof(W); ++i) {
        const auto b = static_cast<W>(static_cast<unsigned char>(s[i]));
        w |= std::endian::native == std::endian::little ? b << (8 * i)
                                                        : b << (8 * (sizeof(W) - 1 - i));
    }
    return w;
}

template <class W>
inline W load_word(const char* p) noexcept {
    W w;
    std::memcpy(&w, p, sizeof w);
    return w;
}

} // namespace

// parse_fast's request line when it is not the most common one: the method, the target and
// the version, CRLF. Returns null for anything parse_fast leaves to the general path; else
// returns the end of the line (out.version_minor set for HTTP/1.0).
const char* request_parser::parse_line_fast(const char* p, const char* end,
                                            request_head& out) const noexcept {
    const char* const begin = p;
    // The method: GET (most requests) by one comparison, any other token by the table.
    if (end - p >= 4 && load_word<std::uint32_t>(p) == word_of<std::uint32_t>("GET ")) {
        p += 3;
    } else {
        while (p < end && is_tchar(static_cast<unsigned char>(*p))) {
            ++p;
        }
        if (p == begin || p == end || *p != ' ') {
            return nullptr;
        }
    }
    out.method = std::string_view(begin, static_cast<std::size_t>(p - begin));
    const char* const t = ++p;
    if (end - p >= 2 && load_word<std::uint16_t>(p) == word_of<std::uint16_t>("/ ") &&
        limits_.max_target != 0) {
        // The root, by one comparison and with nothing more to check (~25 instructions less
        // than the scan and its checks).
        out.target = std::string_view(t, 1);
        p += 2;
    } else {
        p = skip_target_chars(p, end);
        if (p == t || static_cast<std::size_t>(p - t) > limits_.max_target || p == end ||
            *p != ' ') {
            return nullptr;
        }
        out.target = std::string_view(t, static_cast<std::size_t>(p - t));
        ++p;
    }
    // "HTTP/1.1" or "HTTP/1.0", CRLF: two word comparisons.
    if (end - p < 10 || load_word<std::uint16_t>(p + 8) != word_of<std::uint16_t>("\r\n")) {
        return nullptr;
    }
    if (const auto v = load_word<std::uint64_t>(p); v != word_of<std::uint64_t>("HTTP/1.1")) {
        if (v != word_of<std::uint64_t>("HTTP/1.0")) {
            return nullptr;
        }
        out.version_minor = 0;
    }
    return p + 10;
}

bool request_parser::parse_fast(std::string_view buf, request_head& out) {
    // One pass over a head that arrived whole and holds nothing unusual: the request line,
    // then each field line up to the empty one. Whatever is not plainly valid (a partial
    // head, leading empty lines, a control character, a limit reached, a field the rules
    // refuse) returns false, and the general path, which finds the precise answer, takes
    // the same bytes from the start. So this one never has to get an error right: it must
    // only accept exactly what the general path accepts, with the same result (the fuzz
    // target compares the two: whole inputs come here, inputs in pieces go there).
    const char* const begin = buf.data();
    const char* const end = begin + buf.size();
    const char* p = begin;
    clear_head(out);
    // The request line of most requests, "GET / HTTP/1.1" CRLF, by two word comparisons.
    if (end - p >= 16 && load_word<std::uint64_t>(p) == word_of<std::uint64_t>("GET / HT") &&
        load_word<std::uint64_t>(p + 8) == word_of<std::uint64_t>("TP/1.1\r\n") &&
        limits_.max_target != 0) {
        out.method = std::string_view(begin, 3);
        out.target = std::string_view(begin + 4, 1);
        p += 16;
    } else {
        p = parse_line_fast(p, end, out);
        if (p == nullptr) {
            return false;
        }
    }
    const int minor = out.version_minor;
    field_state fs;
    std::size_t hosts = 0; // fs.hosts, kept in a register
    // The rest of a field line, from its value (`p`) on, for the field whose name is the
    // `name_len` bytes at `n`, known to the parser as `k`: the value up to the line's CR,
    // then trimmed of its OWS (the CR ends the leading run without a bound check); the field
    // goes into `out`, `p` past the line. Returns false for what the general path must see.
    auto field_value = [&](const char* n, std::size_t name_len,
                           known_field k) __attribute__((always_inline)) {
        const char* v = p;
        for (;;) {
            p = skip_plain_field_chars(begin, p, end);
            if (end - p >= 2 && load_word<std::uint16_t>(p) == word_of<std::uint16_t>("\r\n")) {
                break;
            }
            if (p == end || *p != '\t') {
                return false;
            }
            ++p;
        }
        // (A byte above SP ends either run with one comparison.)
        while (static_cast<unsigned char>(*v) <= ' ' && (*v == ' ' || *v == '\t')) {
            ++v;
        }
        const char* ve = p;
        while (ve > v && static_cast<unsigned char>(ve[-1]) <= ' ' &&
               (ve[-1] == ' ' || ve[-1] == '\t')) {
            --ve;
        }
        p += 2;
        if (out.headers.size() == out.headers.capacity() &&
            out.headers.size() >= limits_.max_headers) [[unlikely]] {
            return false; // (the count is checked at the end: this only bounds the vector)
        }
        out.headers.push_back(header_field{std::string_view(n, name_len),
                                           std::string_view(v, static_cast<std::size_t>(ve - v))});
        if (k == known_field::host) {
            ++hosts;
        } else if (k != known_field::other &&
                   !take_known(static_cast<unsigned char>(k), out.headers.back(), fs, out)) {
            return false;
        }
        return true;
    };
    // "Host: " as the first field (most requests: RFC 9110 §7.2 asks clients to send it
    // first) by two word comparisons, the name, its colon and the usual SP. (Any other field
    // line, and Host in another case or place, by the loop.)
    if (end - p >= 8 && load_word<std::uint32_t>(p) == word_of<std::uint32_t>("Host") &&
        load_word<std::uint16_t>(p + 4) == word_of<std::uint16_t>(": ")) {
        p += 6;
        if (!field_value(p - 6, 4, known_field::host)) {
            return false;
        }
    }
    for (;;) {
        // The empty line ends the head. (A CR that starts anything else starts no name.)
        if (end - p < 2) {
            return false;
        }
        if (load_word<std::uint16_t>(p) == word_of<std::uint16_t>("\r\n")) {
            p += 2;
            break;
        }
        // The name: up to the first ':' of the next sixteen bytes (SSE2) when they are
        // there, then checked (a field the parser knows by name, matched exactly, is
        // tokens); else token by token.
        const char* const n = p;
        std::size_t name_len = 0;
        known_field k = known_field::other;
#if defined(__SSE2__)
        unsigned colons = 0;
        if (end - p >= 16) {
            colons = static_cast<unsigned>(
                _mm_movemask_epi8(_mm_cmpeq_epi8(load16(p), _mm_set1_epi8(':'))));
        }
        if (colons != 0) {
            name_len = static_cast<std::size_t>(std::countr_zero(colons));
            if (name_len == 0) {
                return false;
            }
            k = classify(std::string_view(n, name_len));
            if (k == known_field::other && !all_tchars(n, name_len)) {
                return false;
            }
            p += name_len;
        } else
#endif
        {
            while (p < end && is_tchar(static_cast<unsigned char>(*p))) {
                ++p;
            }
            if (p == n || p == end || *p != ':') {
                return false;
            }
            name_len = static_cast<std::size_t>(p - n);
            k = classify(std::string_view(n, name_len));
        }
        // The usual single SP after the colon is stepped over, so that the value's scan
        // starts at the value.
        if (++p != end && *p == ' ') {
            ++p;
        }
        if (!field_value(n, name_len, k)) {
            return false;
        }
    }
    const auto head_end = static_cast<std::size_t>(p - begin);
    // The limits, once for the whole head (clear_head emptied out.headers): over either, the
    // general path answers.
    if (head_end > limits_.max_header_bytes + 4 || out.headers.size() > limits_.max_headers) {
        return false;
    }
    // What finish_fields checks, for a request with no Transfer-Encoding and one Host.
    if (!fs.te_seen && hosts == 1 && minor == 1) {
        out.keep_alive = !fs.conn_close;
    } else {
        fs.hosts = hosts;
        if (finish_fields(fs, out) != status::complete) {
            return false;
        }
    }
    consumed_ = head_end;
    return true;
}

request_parser::status request_parser::parse_complete(std::string_view rest, const char* buf,
                                                      request_head& out) {
    // rest: HTTP-version CRLF *( field-line CRLF ), the method and target already in `out`.
    // Every LF in it ends a CRLF (scan_lines checked). The fields' vector keeps its capacity
    // from the last request: no allocation per head.
    clear_head(out);
    const char* p = rest.data();
    const char* const end = p + rest.size();
    // The line from p, without its CRLF; p moves past it. Its LF is the next one scan_lines
    // found (they are every LF from the request line's on, in order), while it kept them.
    std::size_t next_lf = 0;
    auto next_line = [&]() noexcept {
        const void* lf = nullptr;
        if (next_lf < lfs_ && buf + lf_at_[next_lf] >= p) {
            lf = buf + lf_at_[next_lf] < end ? buf + lf_at_[next_lf] : nullptr;
            ++next_lf;
        } else {
            next_lf = known_lfs; // out of step (it can't be): look from here on
            lf = std::memchr(p, '\n', static_cast<std::size_t>(end - p));
        }
        std::string_view line;
        if (lf == nullptr) {
            line = std::string_view(p, static_cast<std::size_t>(end - p));
            p = end;
        } else {
            const char* e = static_cast<const char*>(lf);
            line = std::string_view(p, static_cast<std::size_t>(e - 1 - p));
            p = e + 1;
        }
        return line;
    };

    // HTTP-version
    std::string_view version = next_line();
    if (version.size() != 8 || version.substr(0, 5) != "HTTP/" || version[6] != '.' ||
        version[5] < '0' || version[5] > '9' || version[7] < '0' || version[7] > '9') {
        return fail(400, "malformed HTTP version");
    }
    if (version[5] != '1' || (version[7] != '0' && version[7] != '1')) {
        return fail(505, "HTTP version not supported");
    }
    out.version_minor = version[7] - '0';

    // field-line = field-name ":" OWS field-value OWS
    field_state fs;
    while (p < end) {
        std::string_view line = next_line();
        if (line.empty()) {
            return fail(400, "malformed header section");
        }
        if (line[0] == ' ' || line[0] == '\t') {
            return fail(400, "obsolete line folding");
        }
        const char* l = line.data();
        const std::size_t len = line.size();
        std::size_t n = 0;
        while (n < len && is_tchar(static_cast<unsigned char>(l[n]))) {
            ++n;
        }
        if (n == 0 || n >= len || l[n] != ':') {
            return fail(400, "malformed header field name");
        }
        // The value: every byte a field character; OWS trimmed on both sides.
        if (!all_field_chars(l + n + 1, len - n - 1)) {
            return fail(400, "control character in header field");
        }
        if (out.headers.size() == limits_.max_headers) {
            return fail(431, "too many header fields");
        }
        std::size_t v0 = n + 1;
        std::size_t v1 = len;
        while (v0 < v1 && (l[v0] == ' ' || l[v0] == '\t')) {
            ++v0;
        }
        while (v1 > v0 && (l[v1 - 1] == ' ' || l[v1 - 1] == '\t')) {
            --v1;
        }
        out.headers.push_back(
            header_field{std::string_view(l, n), std::string_view(l + v0, v1 - v0)});
        if (!take_field(out.headers.back(), fs, out)) {
            return status::error;
        }
    }
    return finish_fields(fs, out);
}

// ---- chunked_decoder ---------------------------------------------------------------------

chunked_decoder::status chunked_decoder::decode(char* data, std::size_t len, std::size_t& consumed,
                                                std::size_t& out_len) {
    std::size_t i = 0;
    std::size_t out = 0;
    auto fail = [&](const char* why) {
        error_ = why;
        consumed = i;
        out_len = out;
        return status::error;
    };
    while (i < len) {
        char c = data[i];
        switch (st_) {
        case state::size: {
            int d = (c >= '0' && c <= '9')   ? c - '0'
                    : (c >= 'a' && c <= 'f') ? c - 'a' + 10
                    : (c >= 'A' && c <= 'F') ? c - 'A' + 10
                                             : -1;
            if (d >= 0) {
                if (++digits_ > 15) {
                    return fail("chunk size too large");
                }
                remaining_ = remaining_ * 16 + static_cast<std::uint64_t>(d);
                ++i;
            } else if (digits_ == 0) {
                return fail("malformed chunk size");
            } else if (c == ';' || c == ' ' || c == '\t') {
                st_ = state::ext;
                ++i;
            } else if (c == '\r') {
                st_ = state::size_lf;
                ++i;
            } else {
                return fail("malformed chunk size");
            }
            break;
        }
        case state::ext:
            // chunk-ext is ignored, but must hold no control characters.
            if (c == '\r') {
                st_ = state::size_lf;
            } else if (!is_field_char(static_cast<unsigned char>(c))) {
                return fail("control character in chunk extension");
            }
            ++i;
            break;
        case state::size_lf:
            if (c != '\n') {
                return fail("malformed chunk size line");
            }
            ++i;
            digits_ = 0;
            if (remaining_ == 0) {
                st_ = state::trailer;
                trailer_line_empty_ = true;
            } else {
                st_ = state::data;
            }
            break;
        case state::data: {
            std::size_t n = static_cast<std::size_t>(
                std::min<std::uint64_t>(remaining_, static_cast<std::uint64_t>(len - i)));
            if (out != i) {
                std::memmove(data + out, data + i, n);
            }
            out += n;
            i += n;
            remaining_ -= n;
            total_ += n;
            if (remaining_ == 0) {
                st_ = state::data_cr;
            }
            break;
        }
        case state::data_cr:
            if (c != '\r') {
                return fail("missing CRLF after chunk data");
            }
            st_ = state::data_lf;
            ++i;
            break;
        case state::data_lf:
            if (c != '\n') {
                return fail("missing CRLF after chunk data");
            }
            st_ = state::size;
            ++i;
            break;
        case state::trailer:
            if (++trailer_bytes_ > 16 * 1024) {
                return fail("trailer section too large");
            }
            if (c == '\r') {
                st_ = state::trailer_lf;
            } else if (!is_field_char(static_cast<unsigned char>(c))) {
                return fail("control character in trailer");
            } else {
                trailer_line_empty_ = false;
            }
            ++i;
            break;
        case state::trailer_lf:
            if (c != '\n') {
                return fail("malformed trailer line");
            }
            ++i;
            if (trailer_line_empty_) {
                st_ = state::done;
                consumed = i;
                out_len = out;
                return status::done;
            }
            st_ = state::trailer;
            trailer_line_empty_ = true;
            break;
        case state::done:
            consumed = i;
            out_len = out;
            return status::done;
        }
    }
    consumed = i;
    out_len = out;
    return st_ == state::done ? status::done : status::more;
}

} // namespace tether::http
