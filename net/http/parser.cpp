#include "net/http/parser.hpp"

#include <algorithm>
#include <cstring>

namespace tether::http {

namespace {

constexpr bool is_tchar(unsigned char c) noexcept {
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

// field-value characters: VCHAR, obs-text, SP, HTAB.
constexpr bool is_field_char(unsigned char c) noexcept {
    return c == '\t' || (c >= 0x20 && c != 0x7f);
}

// request-target characters: visible ASCII and obs-text, no space or controls.
constexpr bool is_target_char(unsigned char c) noexcept {
    return c > 0x20 && c != 0x7f;
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

bool iequals(std::string_view a, std::string_view b) noexcept {
    if (a.size() != b.size()) {
        return false;
    }
    for (std::size_t i = 0; i < a.size(); ++i) {
        if (lower(static_cast<unsigned char>(a[i])) != lower(static_cast<unsigned char>(b[i]))) {
            return false;
        }
    }
    return true;
}

std::optional<std::string_view> request_head::header(std::string_view name) const noexcept {
    for (const header_field& f : headers) {
        if (iequals(f.name, name)) {
            return f.value;
        }
    }
    return std::nullopt;
}

std::size_t request_head::count(std::string_view name) const noexcept {
    return static_cast<std::size_t>(
        std::count_if(headers.begin(), headers.end(),
                      [&](const header_field& f) { return iequals(f.name, name); }));
}

std::string_view request_head::path() const noexcept {
    return target.substr(0, target.find('?'));
}

std::string_view request_head::query() const noexcept {
    std::size_t q = target.find('?');
    return q == std::string_view::npos ? std::string_view{} : target.substr(q + 1);
}

request_parser::status request_parser::parse(std::string_view buf, request_head& out) {
    // Skip empty lines before the request line (RFC 9112 §2.2). They count towards the
    // header-size limit: a client can't grow the buffer with them forever.
    std::size_t start = 0;
    while (start + 1 < buf.size() && buf[start] == '\r' && buf[start + 1] == '\n') {
        start += 2;
    }
    // Find the end of the head, resuming where the last call stopped.
    std::size_t head_end = std::string_view::npos;
    if (!(start < buf.size() && buf[start] == '\r' && start + 1 == buf.size())) {
        std::size_t from = std::max(scanned_, start);
        from = from >= start + 3 ? from - 3 : start;
        std::size_t end = buf.substr(from).find("\r\n\r\n");
        if (end != std::string_view::npos) {
            head_end = from + end + 4;
        }
    }
    scanned_ = buf.size();

    // A head is refused as soon as the bytes prove it bad, before it is complete: a target
    // over the limit (414), a request line that can't be one or a bare LF (400), a head over
    // the size limit (431). So that the answer does not depend on how the bytes arrived,
    // each finding has the length of input at which it is first known, and the earliest
    // wins (ties in the order 414, 400, 431). A final lone CR may start an empty line: it
    // waits for the next byte.
    const bool complete = head_end != std::string_view::npos;
    const std::size_t region = complete ? head_end : buf.size();
    const bool pending_cr = start < buf.size() && buf[start] == '\r' && start + 1 == buf.size();
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
        scan_bare_lf(buf.substr(0, region), start);
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
    status s = parse_complete(buf.substr(start, head_end - start - 2), out);
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
    while (line_state_ != line_scan::done && line_pos_ < buf.size()) {
        auto c = static_cast<unsigned char>(buf[line_pos_]);
        if (line_state_ == line_scan::method) {
            if (is_tchar(c)) {
                ++line_pos_;
            } else if (c == ' ' && line_pos_ > start) {
                line_state_ = line_scan::target;
                target_begin_ = ++line_pos_;
            } else {
                bad(400, "malformed request line");
            }
        } else if (c == ' ' && line_pos_ > target_begin_) {
            line_state_ = line_scan::done;
        } else if (!is_target_char(c)) {
            bad(400, "malformed request target");
        } else if (++line_pos_ - target_begin_ > limits_.max_target) {
            --line_pos_;
            bad(414, "URI too long");
        }
    }
}

void request_parser::scan_bare_lf(std::string_view buf, std::size_t start) noexcept {
    // Every LF in the head must end a CRLF (strict: RFC 9112 §2.2 lets a server refuse a
    // bare one, and a proxy that reads it as a line end would see other fields).
    lf_pos_ = std::max(lf_pos_, start);
    while (bare_lf_at_ == std::string_view::npos && lf_pos_ < buf.size()) {
        const void* p = std::memchr(buf.data() + lf_pos_, '\n', buf.size() - lf_pos_);
        if (p == nullptr) {
            lf_pos_ = buf.size();
            break;
        }
        std::size_t i = static_cast<std::size_t>(static_cast<const char*>(p) - buf.data());
        if (i == start || buf[i - 1] != '\r') {
            bare_lf_at_ = i + 1;
        }
        lf_pos_ = i + 1;
    }
}

request_parser::status request_parser::parse_complete(std::string_view head, request_head& out) {
    // head: request-line CRLF *( field-line CRLF ), without the final empty line's CRLF.
    // The fields' vector keeps its capacity from the last request: no allocation per head.
    out.method = {};
    out.target = {};
    out.version_minor = 1;
    out.headers.clear();
    out.content_length.reset();
    out.chunked = false;
    out.keep_alive = true;
    out.expect_continue = false;
    std::size_t eol = head.find("\r\n");
    std::string_view line = head.substr(0, eol);
    head.remove_prefix(eol + 2);

    // request-line = method SP request-target SP HTTP-version
    std::size_t i = 0;
    while (i < line.size() && is_tchar(static_cast<unsigned char>(line[i]))) {
        ++i;
    }
    if (i == 0 || i >= line.size() || line[i] != ' ') {
        return fail(400, "malformed request line");
    }
    out.method = line.substr(0, i);
    std::size_t t0 = ++i;
    while (i < line.size() && is_target_char(static_cast<unsigned char>(line[i]))) {
        ++i;
    }
    if (i == t0 || i >= line.size() || line[i] != ' ') {
        return fail(400, "malformed request target");
    }
    if (i - t0 > limits_.max_target) {
        return fail(414, "URI too long");
    }
    out.target = line.substr(t0, i - t0);
    std::string_view version = line.substr(i + 1);
    if (version.size() != 8 || version.substr(0, 5) != "HTTP/" || version[6] != '.' ||
        version[5] < '0' || version[5] > '9' || version[7] < '0' || version[7] > '9') {
        return fail(400, "malformed HTTP version");
    }
    if (version[5] != '1' || (version[7] != '0' && version[7] != '1')) {
        return fail(505, "HTTP version not supported");
    }
    out.version_minor = version[7] - '0';

    // field-line = field-name ":" OWS field-value OWS
    std::size_t hosts = 0;
    bool te_seen = false;
    bool te_last_chunked = false;
    bool te_misordered = false;
    bool te_unknown = false;
    bool conn_close = false;
    bool conn_keep_alive = false;
    while (!head.empty()) {
        eol = head.find("\r\n");
        line = head.substr(0, eol);
        head.remove_prefix(eol == std::string_view::npos ? head.size() : eol + 2);
        if (line.empty()) {
            return fail(400, "malformed header section");
        }
        if (line[0] == ' ' || line[0] == '\t') {
            return fail(400, "obsolete line folding");
        }
        std::size_t n = 0;
        while (n < line.size() && is_tchar(static_cast<unsigned char>(line[n]))) {
            ++n;
        }
        if (n == 0 || n >= line.size() || line[n] != ':') {
            return fail(400, "malformed header field name");
        }
        std::string_view value = line.substr(n + 1);
        for (char ch : value) {
            if (!is_field_char(static_cast<unsigned char>(ch))) {
                return fail(400, "control character in header field");
            }
        }
        if (out.headers.size() == limits_.max_headers) {
            return fail(431, "too many header fields");
        }
        header_field f{line.substr(0, n), trim_ows(value)};
        out.headers.push_back(f);

        if (iequals(f.name, "content-length")) {
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
                return fail(400, "invalid or conflicting Content-Length");
            }
        } else if (iequals(f.name, "transfer-encoding")) {
            // The codings of every Transfer-Encoding field, in order: chunked must come last
            // and once (else the length can't be known: 400, RFC 9112 §6.3); a coding we do
            // not implement before it is a 501 (§6.1).
            te_seen = true;
            for_each_element(f.value, [&](std::string_view el) {
                te_misordered |= te_last_chunked;
                te_last_chunked = iequals(el, "chunked");
                te_unknown |= !te_last_chunked;
            });
        } else if (iequals(f.name, "host")) {
            ++hosts;
        } else if (iequals(f.name, "connection")) {
            for_each_element(f.value, [&](std::string_view el) {
                conn_close |= iequals(el, "close");
                conn_keep_alive |= iequals(el, "keep-alive");
            });
        } else if (iequals(f.name, "expect")) {
            if (iequals(f.value, "100-continue")) {
                out.expect_continue = true;
            } else {
                return fail(417, "unsupported expectation");
            }
        }
    }
    if (te_seen) {
        if (out.version_minor == 0) {
            return fail(400, "Transfer-Encoding in an HTTP/1.0 request");
        }
        if (out.content_length) {
            return fail(400, "both Content-Length and Transfer-Encoding");
        }
        if (!te_last_chunked || te_misordered) {
            return fail(400, "chunked is not the final transfer coding");
        }
        if (te_unknown) {
            return fail(501, "unsupported transfer coding");
        }
        out.chunked = true;
    }
    if (out.version_minor == 1 && hosts != 1) {
        return fail(400, hosts == 0 ? "missing Host header" : "repeated Host header");
    }
    out.keep_alive = out.version_minor == 1 ? !conn_close : (conn_keep_alive && !conn_close);
    if (out.expect_continue && out.version_minor == 0) {
        out.expect_continue = false; // a 1.0 client can't take a 100 response (RFC 9110 §10.1.1)
    }
    return status::complete;
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
