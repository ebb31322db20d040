#include "net/http/route.hpp"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <stdexcept>

namespace tether::http {

namespace {

void split_path(std::string_view path, std::vector<std::string_view>& out) {
    // "/a/b/" -> {"a", "b", ""}; "/" -> {""}
    out.clear();
    if (!path.empty() && path.front() == '/') {
        path.remove_prefix(1);
    }
    for (;;) {
        std::size_t slash = path.find('/');
        out.push_back(path.substr(0, slash));
        if (slash == std::string_view::npos) {
            break;
        }
        path.remove_prefix(slash + 1);
    }
}

std::vector<std::string_view> split_path(std::string_view path) {
    std::vector<std::string_view> out;
    split_path(path, out);
    return out;
}

// Returns true if `a` and `b` hold the same bytes. Methods and paths are short: up to 16
// bytes take two overlapping word compares instead of a call to memcmp.
bool same_bytes(std::string_view a, std::string_view b) noexcept {
    const std::size_t n = a.size();
    if (n != b.size()) {
        return false;
    }
    auto differ = [](const char* p, const char* q, auto word) noexcept {
        decltype(word) x;
        decltype(word) y;
        std::memcpy(&x, p, sizeof x);
        std::memcpy(&y, q, sizeof y);
        return x != y;
    };
    const char* p = a.data();
    const char* q = b.data();
    if (n >= 8 && n <= 16) {
        return !differ(p, q, std::uint64_t{}) && !differ(p + n - 8, q + n - 8, std::uint64_t{});
    }
    if (n >= 4 && n < 8) {
        return !differ(p, q, std::uint32_t{}) && !differ(p + n - 4, q + n - 4, std::uint32_t{});
    }
    if (n < 4) {
        for (std::size_t i = 0; i < n; ++i) {
            if (p[i] != q[i]) {
                return false;
            }
        }
        return true;
    }
    return std::memcmp(p, q, n) == 0;
}

int hex_value(char c) noexcept {
    return (c >= '0' && c <= '9')   ? c - '0'
           : (c >= 'a' && c <= 'f') ? c - 'a' + 10
           : (c >= 'A' && c <= 'F') ? c - 'A' + 10
                                    : -1;
}

// Segments are compared with their escapes decoded, so that "/a%62c" matches "/abc".
bool segment_equals(std::string_view escaped, std::string_view literal) {
    if (escaped.find('%') == std::string_view::npos) {
        return escaped == literal;
    }
    return path_unescape(escaped) == literal;
}

int rank(int k) noexcept {
    // literal 3 > wildcard 2 > rest 1; end ({$}) is as specific as a literal.
    switch (k) {
    case 0:
        return 3;
    case 1:
        return 2;
    case 2:
        return 1;
    default:
        return 3;
    }
}

bool is_dots(std::string_view segment, std::string_view dots) {
    return segment == dots ||
           (segment.find('%') != std::string_view::npos && path_unescape(segment) == dots);
}

// The canonical form of `path` (split into `parts`), as Go's ServeMux makes it: no empty
// segments, no "." or ".." (escaped ones included), the trailing slash kept; empty when
// `path` is canonical already.
std::string cleaned(std::string_view path, const std::vector<std::string_view>& parts) {
    bool clean = true;
    for (std::size_t i = 0; clean && i < parts.size(); ++i) {
        clean = !(parts[i].empty() && i + 1 < parts.size()) && !is_dots(parts[i], ".") &&
                !is_dots(parts[i], "..");
    }
    if (clean) {
        return {};
    }
    std::vector<std::string_view> kept;
    for (std::string_view s : parts) {
        if (s.empty() || is_dots(s, ".")) {
            continue;
        }
        if (is_dots(s, "..")) {
            if (!kept.empty()) {
                kept.pop_back();
            }
            continue;
        }
        kept.push_back(s);
    }
    std::string out;
    for (std::string_view s : kept) {
        out += '/';
        out += s;
    }
    if (out.empty() || path.back() == '/') {
        out += '/';
    }
    return out;
}

} // namespace

std::string path_unescape(std::string_view s) {
    std::string out;
    out.reserve(s.size());
    for (std::size_t i = 0; i < s.size(); ++i) {
        if (s[i] != '%') {
            out += s[i];
            continue;
        }
        int hi = i + 2 < s.size() ? hex_value(s[i + 1]) : -1;
        int lo = i + 2 < s.size() ? hex_value(s[i + 2]) : -1;
        if (hi < 0 || lo < 0) {
            return std::string(s); // a malformed escape: the text as it came, as Go does
        }
        out += static_cast<char>(hi * 16 + lo);
        i += 2;
    }
    return out;
}

std::size_t route_table::add(std::string_view pattern) {
    route r;
    r.pattern = std::string(pattern);
    std::string_view p = pattern;
    std::size_t sp = p.find(' ');
    if (sp != std::string_view::npos) {
        r.method = std::string(p.substr(0, sp));
        p.remove_prefix(sp + 1);
        while (!p.empty() && p.front() == ' ') {
            p.remove_prefix(1);
        }
        if (r.method.empty()) {
            throw std::invalid_argument("http pattern: empty method in \"" + r.pattern + "\"");
        }
    }
    if (p.empty() || p.front() != '/') {
        throw std::invalid_argument("http pattern: path must start with '/' in \"" + r.pattern +
                                    "\"");
    }
    std::vector<std::string_view> parts = split_path(p);
    for (std::size_t i = 0; i < parts.size(); ++i) {
        std::string_view s = parts[i];
        bool last = i + 1 == parts.size();
        if (last && s.empty()) {
            r.subtree = true; // trailing slash (or "/")
            break;
        }
        if (s.size() >= 2 && s.front() == '{' && s.back() == '}') {
            std::string_view name = s.substr(1, s.size() - 2);
            if (name == "$") {
                if (!last) {
                    throw std::invalid_argument("http pattern: {$} must end \"" + r.pattern + "\"");
                }
                r.segs.push_back({segment::kind::end, ""});
            } else if (name.size() > 3 && name.substr(name.size() - 3) == "...") {
                if (!last) {
                    throw std::invalid_argument("http pattern: {name...} must be last in \"" +
                                                r.pattern + "\"");
                }
                r.segs.push_back(
                    {segment::kind::rest, std::string(name.substr(0, name.size() - 3))});
            } else if (name.empty() || name.find_first_of("{}/") != std::string_view::npos) {
                throw std::invalid_argument("http pattern: bad wildcard in \"" + r.pattern + "\"");
            } else {
                r.segs.push_back({segment::kind::wildcard, std::string(name)});
            }
        } else if (s.find_first_of("{}") != std::string_view::npos) {
            throw std::invalid_argument("http pattern: braces must enclose a whole segment in \"" +
                                        r.pattern + "\"");
        } else {
            r.segs.push_back({segment::kind::literal, path_unescape(s)});
        }
    }
    if (!r.segs.empty() && r.segs.back().k == segment::kind::end) {
        r.subtree = false;
    }
    for (const route& o : routes_) {
        if (o.method == r.method && compare(o, r) == 0) {
            bool same_shape = o.segs.size() == r.segs.size() && o.subtree == r.subtree;
            for (std::size_t i = 0; same_shape && i < o.segs.size(); ++i) {
                same_shape = o.segs[i].k == r.segs[i].k && (o.segs[i].k != segment::kind::literal ||
                                                            o.segs[i].text == r.segs[i].text);
            }
            if (same_shape) {
                throw std::invalid_argument("http pattern \"" + r.pattern + "\" conflicts with \"" +
                                            o.pattern + "\"");
            }
        }
    }
    routes_.push_back(std::move(r));
    remember_exact();
    return routes_.size() - 1;
}

void route_table::remember_exact() {
    exact_.clear();
    auto plain = [](const route& r) {
        return std::none_of(r.segs.begin(), r.segs.end(), [](const segment& s) {
            return s.k == segment::kind::wildcard || s.k == segment::kind::rest;
        });
    };
    path_params scratch;
    for (const route& r : routes_) {
        if (r.subtree || !plain(r)) {
            continue;
        }
        // The path a client sends for it: "/a/b", "/a/" for "/a/{$}", "/" for "/{$}".
        std::string path;
        for (const segment& s : r.segs) {
            path += '/';
            if (s.k == segment::kind::literal) {
                path += s.text;
            }
        }
        if (path.empty()) {
            continue;
        }
        for (std::string_view method :
             {std::string_view("GET"), std::string_view("HEAD"), std::string_view(r.method)}) {
            if (exact_.size() == max_exact) {
                return;
            }
            // (A method over 8 bytes is left to the walk: the table's keys hold 8.)
            if (method.empty() || method.size() > 8 ||
                std::any_of(exact_.begin(), exact_.end(),
                            [&](const auto& e) { return e.method == method && e.path == path; })) {
                continue;
            }
            route_match m = match_slow(method, path, scratch);
            if (m.result == route_match::kind::found && plain(routes_[m.index])) {
                exact_.push_back({short_key(method), path.size() <= 8 ? short_key(path) : 0,
                                  static_cast<std::uint32_t>(method.size()),
                                  static_cast<std::uint32_t>(path.size()), m.index,
                                  std::string(method), path});
            }
        }
    }
}

bool route_table::matches(const route& r, std::string_view path,
                          const std::vector<std::string_view>& parts, path_params* params) {
    std::size_t n = r.segs.size();
    for (std::size_t i = 0; i < n; ++i) {
        const segment& s = r.segs[i];
        if (s.k == segment::kind::rest) {
            if (i >= parts.size()) {
                return false; // "/a/{r...}" needs the slash after "a": "/a" is not below it
            }
            if (params) {
                // The rest of the path from this segment on, slashes included.
                std::size_t off = 0;
                std::string_view p = path.substr(1);
                for (std::size_t j = 0; j < i; ++j) {
                    off += parts[j].size() + 1;
                }
                params->set(s.text, path_unescape(p.substr(std::min(off, p.size()))));
            }
            return true;
        }
        if (s.k == segment::kind::end) {
            // {$}: the path ends with the slash before it.
            return i < parts.size() && i + 1 == parts.size() && parts[i].empty();
        }
        if (i >= parts.size()) {
            return false;
        }
        if (s.k == segment::kind::literal) {
            if (!segment_equals(parts[i], s.text)) {
                return false;
            }
        } else { // wildcard: one non-empty segment
            if (parts[i].empty()) {
                return false;
            }
            if (params) {
                params->set(s.text, path_unescape(parts[i]));
            }
        }
    }
    if (r.subtree) {
        return parts.size() > n; // "/a/" matches "/a/" and below
    }
    return parts.size() == n || (n == 0 && parts.size() == 1 && parts[0].empty());
}

int route_table::compare(const route& a, const route& b) {
    std::size_t n = std::min(a.segs.size(), b.segs.size());
    for (std::size_t i = 0; i < n; ++i) {
        int ra = rank(static_cast<int>(a.segs[i].k));
        int rb = rank(static_cast<int>(b.segs[i].k));
        if (ra != rb) {
            return ra - rb;
        }
    }
    if (a.segs.size() != b.segs.size()) {
        return a.segs.size() > b.segs.size() ? 1 : -1;
    }
    if (a.subtree != b.subtree) {
        return a.subtree ? -1 : 1; // an exact path beats a subtree
    }
    if (a.method.empty() != b.method.empty()) {
        return a.method.empty() ? -1 : 1;
    }
    return 0;
}

void path_params::drop_all() noexcept {
    items_.clear();
}

std::ptrdiff_t route_table::match_known_long(std::string_view method, std::string_view path,
                                             path_params& params) const noexcept {
    if (method.size() > 8) {
        return -1; // no entry has such a method
    }
    const std::uint64_t mk = short_key(method);
    for (const exact_match& e : exact_) {
        if (e.method_len == method.size() && e.path_len == path.size() && e.method_key == mk &&
            same_bytes(e.path, path)) {
            params.clear();
            return static_cast<std::ptrdiff_t>(e.index);
        }
    }
    return -1;
}

route_match route_table::match(std::string_view method, std::string_view path,
                               path_params& params) const {
    if (const std::ptrdiff_t i = match_known(method, path, params); i >= 0) {
        route_match m;
        m.result = route_match::kind::found;
        m.index = static_cast<std::size_t>(i);
        return m;
    }
    return match_slow(method, path, params);
}

bool route_table::exact(const route& r, const std::vector<std::string_view>& parts) noexcept {
    std::size_t n = r.segs.size();
    if (r.subtree) {
        return parts.size() == n + 1 && parts[n].empty();
    }
    if (n > 0 && r.segs.back().k == segment::kind::rest) {
        return parts.size() == n && parts[n - 1].empty();
    }
    return true;
}

const route_table::route* route_table::best(std::string_view method, std::string_view path,
                                            const std::vector<std::string_view>& parts,
                                            std::size_t& index,
                                            std::vector<std::string>* allowed) const {
    const route* found = nullptr;
    for (std::size_t i = 0; i < routes_.size(); ++i) {
        const route& r = routes_[i];
        if (!matches(r, path, parts, nullptr)) {
            continue;
        }
        bool method_ok =
            r.method.empty() || r.method == method || (r.method == "GET" && method == "HEAD");
        if (!method_ok) {
            if (allowed != nullptr) {
                allowed->push_back(r.method);
                if (r.method == "GET") {
                    allowed->emplace_back("HEAD");
                }
            }
            continue;
        }
        if (found == nullptr || compare(r, *found) > 0) {
            found = &r;
            index = i;
        }
    }
    return found;
}

route_match route_table::match_slow(std::string_view method, std::string_view path,
                                    path_params& params) const {
    route_match m;
    std::vector<std::string> allowed;
    // Split once per request, into a vector that keeps its capacity on this thread.
    // initial-exec: no __tls_get_addr per request (libtether is linked, not dlopen'ed).
    [[gnu::tls_model("initial-exec")]] thread_local std::vector<std::string_view> parts;
    split_path(path, parts);
    if (!path.empty() && path.front() == '/') {
        // As Go's ServeMux: "/static/../secret" or "/a//b" is redirected to its clean form,
        // so that no handler sees dot segments.
        if (std::string clean = cleaned(path, parts); !clean.empty()) {
            m.result = route_match::kind::redirect;
            m.location = std::move(clean);
            return m;
        }
    }
    const route* best = this->best(method, path, parts, m.index, &allowed);
    if ((best == nullptr || !exact(*best, parts)) && !path.empty() && path.back() != '/') {
        // As Go's ServeMux: a path that a pattern matches exactly once a slash is appended
        // ("/files" for "/files/" or "/files/{path...}") is redirected there, unless a
        // pattern matches it exactly as it is.
        std::string slashed = std::string(path) + '/';
        std::vector<std::string_view> slashed_parts;
        split_path(slashed, slashed_parts);
        std::size_t i = 0;
        if (const route* r = this->best(method, slashed, slashed_parts, i, nullptr);
            r != nullptr && exact(*r, slashed_parts)) {
            m.result = route_match::kind::redirect;
            m.location = std::move(slashed);
            return m;
        }
    }
    if (best != nullptr) {
        m.result = route_match::kind::found;
        params.clear();
        // A pattern without wildcards has nothing to fill in: no second walk.
        if (std::any_of(best->segs.begin(), best->segs.end(), [](const segment& s) {
                return s.k == segment::kind::wildcard || s.k == segment::kind::rest;
            })) {
            matches(*best, path, parts, &params);
        }
        return m;
    }
    if (!allowed.empty()) {
        std::sort(allowed.begin(), allowed.end());
        allowed.erase(std::unique(allowed.begin(), allowed.end()), allowed.end());
        m.result = route_match::kind::method_not_allowed;
        for (const std::string& a : allowed) {
            if (!m.allow.empty()) {
                m.allow += ", ";
            }
            m.allow += a;
        }
    }
    return m;
}

} // namespace tether::http
