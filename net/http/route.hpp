#pragma once
// route_table: Go 1.22 ServeMux patterns ("GET /items/{id}", "/static/{path...}") matched
// against a method and a path, most specific pattern first.

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace tether::http {

/// Returns `s` with its %XX escapes decoded (Go's url.PathUnescape: '+' stays '+'); `s`
/// unchanged if an escape is malformed.
std::string path_unescape(std::string_view s);

/// The wildcard values of a match, by name.
class path_params {
public:
    /// Returns the value of wildcard `name`, or empty if the pattern has none.
    std::string_view get(std::string_view name) const noexcept {
        for (const auto& [k, v] : items_) {
            if (k == name) {
                return v;
            }
        }
        return {};
    }
    void set(std::string_view name, std::string value) {
        items_.emplace_back(name, std::move(value));
    }
    void clear() noexcept {
        if (!items_.empty()) { // most patterns have no wildcards: nothing to drop, no call
            drop_all();
        }
    }
    std::size_t size() const noexcept { return items_.size(); }

private:
    void drop_all() noexcept;
    std::vector<std::pair<std::string_view, std::string>> items_;
};

/// What `route_table::match` found.
struct route_match {
    /// redirect: the path is not canonical ("/a/../b", "/a//b": `location` is its clean
    /// form), or no pattern matches it exactly but one matches it with a slash appended
    /// ("/files" for "/files/" or "/files/{path...}"). Go's ServeMux answers both with 301.
    enum class kind { found, not_found, method_not_allowed, redirect };
    kind result = kind::not_found;
    std::size_t index = 0; ///< the pattern's registration index, when found
    std::string allow;     ///< for method_not_allowed: the Allow header value ("GET, HEAD")
    std::string location;  ///< for redirect: the path to go to (no query)
};

/// Maps patterns to indexes, with the syntax and precedence of Go 1.22's ServeMux.
///
/// A pattern is `[METHOD ]/path`. Segments are literals, `{name}` (one segment),
/// `{name...}` (the rest of the path; last only) or `{$}` (the end, after a trailing
/// slash). A pattern ending in `/` matches every path below it. `GET` also matches `HEAD`.
/// When several patterns match, the most specific wins (a literal beats a wildcard, a
/// single-segment wildcard beats a rest wildcard, a method beats none). A path that matches
/// only patterns for other methods gets `method_not_allowed` with the Allow list.
///
/// Escapes: as Go does, the path is matched as sent (escaped), segment by segment: "%2F"
/// does not split a segment. Each segment is decoded before it is compared with a literal
/// (whose escapes are decoded too), and wildcard values are decoded: `{name}` against
/// "/a%2Fb" gives "a/b", `{rest...}` against "/x/%7Ey" gives "x/~y".
///
/// Errors: `add` throws `std::invalid_argument` for a malformed pattern or one that
/// conflicts with an earlier one (same shape: neither is more specific).
class route_table {
public:
    /// Registers `pattern`; returns its index (0, 1, ...).
    std::size_t add(std::string_view pattern);
    /// Finds the pattern for `method` and `path` and fills `params` with its wildcards.
    route_match match(std::string_view method, std::string_view path, path_params& params) const;
    /// Returns what `match` would find when it is known without a walk over the patterns
    /// (the path of a pattern without wildcards: `params` is cleared), as its index; else
    /// -1, and `match` has the answer. No `route_match` (and its strings) is made.
    ///
    /// Inline: it runs once per request, and in most of them answers from the table's first
    /// entries.
    std::ptrdiff_t match_known(std::string_view method, std::string_view path,
                               path_params& params) const noexcept {
        if (method.size() > 8 || path.size() > 8) [[unlikely]] {
            return match_known_long(method, path, params);
        }
        const std::uint64_t mk = short_key(method);
        const std::uint64_t pk = short_key(path);
        for (const exact_match& e : exact_) {
            if (e.path_key == pk && e.method_key == mk && e.path_len == path.size() &&
                e.method_len == method.size()) {
                params.clear();
                return static_cast<std::ptrdiff_t>(e.index);
            }
        }
        return -1;
    }
    std::size_t size() const noexcept { return routes_.size(); }

private:
    struct segment {
        enum class kind { literal, wildcard, rest, end };
        kind k;
        std::string text; // literal text, or the wildcard's name
    };
    struct route {
        std::string method; // empty: any
        std::vector<segment> segs;
        bool subtree = false; // ends with '/': matches everything below
        std::string pattern;
    };
    static bool matches(const route& r, std::string_view path,
                        const std::vector<std::string_view>& parts, path_params* params);
    static int compare(const route& a, const route& b); // >0: a more specific
    // True if `r`, which matches `parts`, matches them exactly: not by a remainder, as "/a/"
    // and "/a/{rest...}" match "/a/b" (they match "/a/" exactly).
    static bool exact(const route& r, const std::vector<std::string_view>& parts) noexcept;
    // The most specific pattern matching `path` (split into `parts`) for `method`, or null;
    // with `allowed`, the methods of the patterns that match the path for other methods.
    const route* best(std::string_view method, std::string_view path,
                      const std::vector<std::string_view>& parts, std::size_t& index,
                      std::vector<std::string>* allowed) const;
    // The walk over every pattern that match() does when `exact_` has no answer.
    route_match match_slow(std::string_view method, std::string_view path,
                           path_params& params) const;
    // Rebuilds `exact_` (after a pattern was added).
    void remember_exact();
    // Answers match() knows without a walk: for the paths of the patterns without wildcards
    // (each as the bytes a client would send for it), GET, HEAD and the pattern's own method,
    // what match_slow() gives, when it finds a pattern without wildcards (no params to fill
    // in). A request whose method and path are one of these, byte for byte, gets the answer
    // a walk would give: it is one.
    //
    // Methods and most paths are short: an entry keeps the bytes of each, up to 8, as a word
    // (short_key), so that a lookup compares words, not bytes.
    struct exact_match {
        std::uint64_t method_key; // short_key(method)
        std::uint64_t path_key;   // short_key(path), if path is 8 bytes or shorter
        std::uint32_t method_len;
        std::uint32_t path_len;
        std::size_t index;
        std::string method; // at most 8 bytes
        std::string path;
    };
    // Up to 8 bytes as a word that, with their count, tells them apart from any others.
    static std::uint64_t short_key(std::string_view s) noexcept {
        const char* p = s.data();
        const std::size_t n = s.size();
        if (n >= 4) {
            // The first and the last four bytes (overlapping below 8): every byte, in place.
            std::uint32_t a;
            std::uint32_t b;
            std::memcpy(&a, p, 4);
            std::memcpy(&b, p + n - 4, 4);
            return a | std::uint64_t{b} << 32;
        }
        if (n == 0) {
            return 0;
        }
        // Bytes 0 and 1 (or 0 alone) and byte n-1: each of one to three bytes, in place.
        std::uint64_t k = static_cast<unsigned char>(p[n - 1]);
        if (n >= 2) {
            std::uint16_t a;
            std::memcpy(&a, p, 2);
            return a | k << 16;
        }
        return k | k << 16;
    }
    // match_known() for a method or a path over 8 bytes.
    std::ptrdiff_t match_known_long(std::string_view method, std::string_view path,
                                    path_params& params) const noexcept;
    static constexpr std::size_t max_exact = 32; // a scan of more would cost as much as a walk
    std::vector<route> routes_;
    std::vector<exact_match> exact_;
};

} // namespace tether::http
