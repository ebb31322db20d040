#pragma once
// HTTP/1.1 request parsing: strict where RFC 9112 requires it, zero-copy, incremental.
//   request_head     the request line and header fields, as views into the read buffer
//   request_parser   finds and parses one request head at a time (pipelining-safe)
//   chunked_decoder  decodes a chunked body incrementally, in place
//   parse_error      the status to answer with (400, 413, 414, 431, 501, 505) and why

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

namespace tether::http {

/// One header field as received: the name keeps its case, the value has no surrounding
/// whitespace.
struct header_field {
    std::string_view name;
    std::string_view value;
};

namespace detail {
/// The `n` bytes at `a` and `b` are equal ignoring ASCII case.
bool iequals_n(const char* a, const char* b, std::size_t n) noexcept;
} // namespace detail

/// Returns true if `a` and `b` are equal ignoring ASCII case (header names, tokens).
inline bool iequals(std::string_view a, std::string_view b) noexcept {
    return a.size() == b.size() && detail::iequals_n(a.data(), b.data(), a.size());
}

/// Returns true if the comma-separated list `list` (a Connection or Transfer-Encoding
/// field's value) has the element `token`, ignoring ASCII case and optional whitespace.
bool has_token(std::string_view list, std::string_view token) noexcept;

/// The request line and header section of one request. Every view points into the buffer
/// given to `request_parser::parse`.
///
/// Lifetime: valid while that buffer is unchanged.
struct request_head {
    std::string_view method;
    std::string_view target; ///< the request-target as sent ("/a?b=c", "*", absolute form)
    int version_minor = 1;   ///< 1 for HTTP/1.1, 0 for HTTP/1.0
    std::vector<header_field> headers; ///< in order, repeated fields kept

    /// Set by the parser from the fields:
    std::optional<std::uint64_t> content_length;
    bool chunked = false;         ///< Transfer-Encoding: chunked
    bool keep_alive = true;       ///< the connection may carry another request after this one
    bool expect_continue = false; ///< Expect: 100-continue

    /// Returns the value of the first field named `name` (any case), or nullopt.
    std::optional<std::string_view> header(std::string_view name) const noexcept {
        // Inline: most fields differ from `name` in length, and cost one comparison.
        for (const header_field& f : headers) {
            if (f.name.size() == name.size() &&
                detail::iequals_n(f.name.data(), name.data(), name.size())) {
                return f.value;
            }
        }
        return std::nullopt;
    }
    /// Returns how many fields are named `name` (any case).
    std::size_t count(std::string_view name) const noexcept;
    /// Returns the path part of the target (before '?').
    std::string_view path() const noexcept {
        // Most targets are short: looked at inline, with no call.
        if (target.size() > 16) {
            return long_path();
        }
        for (std::size_t i = 0; i < target.size(); ++i) {
            if (target[i] == '?') {
                return std::string_view(target.data(), i);
            }
        }
        return target;
    }
    /// Returns the query part of the target (after '?'), or empty.
    std::string_view query() const noexcept;
    /// Returns true if the request has a body to read (a length > 0 or chunked).
    bool has_body() const noexcept { return chunked || content_length.value_or(0) > 0; }

private:
    std::string_view long_path() const noexcept; // path() of a target over 16 bytes
};

/// Why a request was refused, and the status to answer with before closing the connection.
struct parse_error {
    int status = 400;        ///< 400, 413, 414, 417, 431, 501 or 505
    const char* reason = ""; ///< a short phrase for logs and the response body
};

/// Limits that bound what one request may cost the server.
struct parser_limits {
    std::size_t max_header_bytes = 16 * 1024; ///< request line + fields (431 beyond)
    std::size_t max_headers = 100;            ///< field count (431 beyond)
    std::size_t max_target = 8 * 1024;        ///< request-target length (414 beyond)
};

/// Parses request heads out of a byte stream, one request at a time.
///
/// Strict where RFC 9112 requires it, so that no request can be read two ways (smuggling):
/// conflicting Content-Length fields, Content-Length together with Transfer-Encoding,
/// Transfer-Encoding whose final coding is not a single "chunked", control characters (NUL,
/// bare CR or LF), whitespace before a field's colon, obs-fold continuation lines, a missing
/// or repeated Host in HTTP/1.1 are all rejected with 400 (501 for an unknown coding before
/// a final chunked, 505 for a version other than 1.0/1.1). Empty lines before a request
/// line are skipped, as RFC 9112 §2.2 allows, and count towards `max_header_bytes`.
///
/// The outcome depends only on the bytes, not on how they were split between calls: a
/// limit refuses a head at the first length of input that proves it broken (the fuzz target
/// in tests/fuzz/ checks this).
class request_parser {
public:
    /// What `parse` found.
    enum class status { incomplete, complete, error };

    explicit request_parser(parser_limits limits = {}) noexcept : limits_(limits) {}

    /// Looks for one complete request head at the start of `buf`.
    ///
    /// Returns `complete` with the head in `out` and its length in `consumed()`;
    /// `incomplete` if more bytes are needed (call again with the same bytes and more:
    /// scanning resumes where it stopped, so a client trickling bytes costs linear time);
    /// `error` with `error()` set when the head is malformed or over a limit, possibly
    /// before it is complete (an over-long target or header section is refused as soon as
    /// it is seen).
    status parse(std::string_view buf, request_head& out) {
        // A head that arrived whole, on the first look at it: one pass (see parse_fast).
        if (lf_pos_ == 0 && parse_fast(buf, out)) {
            return status::complete;
        }
        return parse_general(buf, out);
    }

    /// Bytes of `buf` taken by the last complete head (the body, or the next pipelined
    /// request, starts there).
    std::size_t consumed() const noexcept { return consumed_; }
    /// The last error.
    const parse_error& error() const noexcept { return error_; }
    /// Forgets the scan position: call before parsing the next request.
    void reset() noexcept {
        consumed_ = 0;
        if (!scanned_) {
            return; // only parse_fast ran since the last reset: nothing else to forget
        }
        scanned_ = false;
        line_state_ = line_scan::method;
        line_pos_ = 0;
        target_begin_ = 0;
        line_error_at_ = std::string_view::npos;
        lf_pos_ = 0;
        bare_lf_at_ = std::string_view::npos;
        lfs_ = 0;
    }

private:
    status fail(int code, const char* why) noexcept {
        error_ = {code, why};
        return status::error;
    }
    struct field_state;
    status parse_general(std::string_view buf, request_head& out);
    status parse_complete(std::string_view rest, const char* buf, request_head& out);
    bool parse_fast(std::string_view buf, request_head& out);
    const char* parse_line_fast(const char* p, const char* end, request_head& out) const noexcept;
    bool take_field(const header_field& f, field_state& fs, request_head& out) noexcept;
    bool take_known(unsigned char kind, const header_field& f, field_state& fs,
                    request_head& out) noexcept;
    status finish_fields(const field_state& fs, request_head& out) noexcept;
    static void clear_head(request_head& out) noexcept;
    // Look at the bytes of a head as they arrive, for what makes it bad before it is
    // complete; each sets the input length at which that became known (npos: nothing yet).
    void scan_line(std::string_view buf, std::size_t start) noexcept;
    // Returns the end of the head (past its CRLF CRLF) once it is in `buf`, else npos; sets
    // bare_lf_at_.
    std::size_t scan_lines(std::string_view buf, std::size_t start) noexcept;

    enum class line_scan : unsigned char { method, target, done };

    parser_limits limits_;
    std::size_t consumed_ = 0;
    line_scan line_state_ = line_scan::method;
    std::size_t line_pos_ = 0;
    std::size_t target_begin_ = 0;
    std::size_t line_error_at_ = std::string_view::npos;
    parse_error line_error_;
    std::size_t lf_pos_ = 0;
    std::size_t bare_lf_at_ = std::string_view::npos;
    // Where scan_lines found the head's first line ends (offsets into the buffer), for
    // parse_complete to split the lines without looking for them again.
    static constexpr std::size_t known_lfs = 24;
    std::uint32_t lf_at_[known_lfs];
    std::size_t lfs_ = 0;
    // parse_general ran since the last reset (the scan fields above may have moved).
    bool scanned_ = false;
    parse_error error_;
};

/// Decodes a chunked body in place: chunk sizes, extensions and trailers are removed and
/// the data bytes are moved to the front of what was given.
class chunked_decoder {
public:
    /// What `decode` reached.
    enum class status { more, done, error };

    /// Decodes from `data` (a window of the stream after the head). Returns the status;
    /// `consumed` is how many input bytes were used, `out_len` how many data bytes were
    /// written to the front of `data` (they may overlap: the decoder moves bytes forward
    /// only). Trailers are read and dropped. A chunk size over 2^60 or a malformed line is
    /// an error.
    status decode(char* data, std::size_t len, std::size_t& consumed, std::size_t& out_len);

    /// Total data bytes decoded so far.
    std::uint64_t body_bytes() const noexcept { return total_; }
    const char* error() const noexcept { return error_; }

private:
    enum class state { size, ext, size_lf, data, data_cr, data_lf, trailer, trailer_lf, done };
    state st_ = state::size;
    std::uint64_t remaining_ = 0;
    std::uint64_t total_ = 0;
    int digits_ = 0;
    std::size_t trailer_bytes_ = 0;
    bool trailer_line_empty_ = true;
    const char* error_ = "";
};

} // namespace tether::http
