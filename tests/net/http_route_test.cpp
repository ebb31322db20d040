#include "net/http/route.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <initializer_list>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

using tether::http::path_params;
using tether::http::route_match;
using tether::http::route_table;

namespace {
struct fixture {
    route_table t;
    path_params p;
    std::string location; // of the last redirect
    long find(std::string_view method, std::string_view path) {
        route_match m = t.match(method, path, p);
        switch (m.result) {
        case route_match::kind::found:
            return static_cast<long>(m.index);
        case route_match::kind::redirect:
            location = m.location;
            return -301;
        case route_match::kind::not_found:
            return -404;
        case route_match::kind::method_not_allowed:
            break;
        }
        return -405;
    }
};
} // namespace

TEST_CASE("literal paths match exactly; a trailing slash matches the subtree") {
    fixture f;
    auto exact = f.t.add("/about");
    auto tree = f.t.add("/static/");
    auto root = f.t.add("/");
    CHECK(f.find("GET", "/about") == static_cast<long>(exact));
    CHECK(f.find("GET", "/about/x") == static_cast<long>(root));
    CHECK(f.find("GET", "/static/") == static_cast<long>(tree));
    CHECK(f.find("GET", "/static/css/a.css") == static_cast<long>(tree));
    CHECK(f.find("GET", "/anything") == static_cast<long>(root));
}

TEST_CASE("a subtree's root without its slash is redirected to it, as Go's ServeMux does") {
    fixture f;
    auto rest = f.t.add("GET /x/{r...}");
    // "/x" is not below "/x/": the rest wildcard needs the slash.
    CHECK(f.find("GET", "/x") == -301);
    CHECK(f.location == "/x/");
    CHECK(f.find("GET", "/x/") == static_cast<long>(rest));
    CHECK(f.p.get("r").empty());
    CHECK(f.find("GET", "/x/a/b") == static_cast<long>(rest));
    CHECK(f.p.get("r") == "a/b");
    // A pattern for the path itself wins over the redirect.
    auto plain = f.t.add("GET /x");
    CHECK(f.find("GET", "/x") == static_cast<long>(plain));
    CHECK(f.find("GET", "/xy") == -404);
    // A subtree: redirected even where a catch-all would take the path, since the catch-all
    // matches it only by its remainder.
    auto tree = f.t.add("/static/");
    auto root = f.t.add("/");
    CHECK(f.find("GET", "/static") == -301);
    CHECK(f.location == "/static/");
    CHECK(f.find("GET", "/static/") == static_cast<long>(tree));
    CHECK(f.find("GET", "/other") == static_cast<long>(root));
    // Only for a method the slashed pattern takes: a POST-only subtree leaves GET alone.
    f.t.add("POST /upload/");
    CHECK(f.find("GET", "/upload") == static_cast<long>(root));
    CHECK(f.find("POST", "/upload") == -301);
    CHECK(f.location == "/upload/");
}

TEST_CASE("a path with empty, \".\" or \"..\" segments is redirected to its clean form") {
    fixture f;
    auto tree = f.t.add("/static/");
    auto root = f.t.add("/");
    for (auto [from, to] : std::initializer_list<std::pair<const char*, const char*>>{
             {"/static/../secret", "/secret"},
             {"/static//a.css", "/static/a.css"},
             {"/static/./a/", "/static/a/"},
             {"/a/b/..", "/a"},
             {"/..", "/"},
             {"/static/%2e%2e/secret", "/secret"},
             {"/static/%2E/x", "/static/x"},
             {"//", "/"},
         }) {
        CAPTURE(from);
        CHECK(f.find("GET", from) == -301);
        CHECK(f.location == to);
    }
    // Canonical paths, and dots inside a segment, are served as they are.
    CHECK(f.find("GET", "/static/a.css") == static_cast<long>(tree));
    CHECK(f.find("GET", "/static/..a/b.") == static_cast<long>(tree));
    CHECK(f.find("GET", "/") == static_cast<long>(root));
}

TEST_CASE("without a catch-all, an unknown path is not found") {
    fixture f;
    f.t.add("/a");
    CHECK(f.find("GET", "/b") == -404);
    CHECK(f.find("GET", "/a/b") == -404);
}

TEST_CASE("wildcards capture one segment; rest wildcards capture the remainder") {
    fixture f;
    auto item = f.t.add("GET /items/{id}");
    auto files = f.t.add("/files/{path...}");
    CHECK(f.find("GET", "/items/42") == static_cast<long>(item));
    CHECK(f.p.get("id") == "42");
    CHECK(f.find("GET", "/items/") == -404);
    CHECK(f.find("GET", "/items/42/x") == -404);
    CHECK(f.find("GET", "/files/a/b/c.txt") == static_cast<long>(files));
    CHECK(f.p.get("path") == "a/b/c.txt");
    CHECK(f.p.get("missing").empty());
}

TEST_CASE("the most specific pattern wins") {
    fixture f;
    auto any_item = f.t.add("/items/{id}");
    auto new_item = f.t.add("/items/new");
    auto get_item = f.t.add("GET /items/{id}");
    CHECK(f.find("GET", "/items/new") == static_cast<long>(new_item));
    CHECK(f.find("GET", "/items/7") == static_cast<long>(get_item));
    CHECK(f.find("POST", "/items/7") == static_cast<long>(any_item));
}

TEST_CASE("{$} matches only the path ending in the slash") {
    fixture f;
    auto home = f.t.add("/{$}");
    CHECK(f.find("GET", "/") == static_cast<long>(home));
    CHECK(f.find("GET", "/x") == -404);
}

TEST_CASE("a path known under other methods gets 405 with Allow; GET also serves HEAD") {
    fixture f;
    auto get = f.t.add("GET /echo");
    f.t.add("POST /echo");
    CHECK(f.find("HEAD", "/echo") == static_cast<long>(get));
    route_match m = f.t.match("DELETE", "/echo", f.p);
    CHECK(m.result == route_match::kind::method_not_allowed);
    CHECK(m.allow == "GET, HEAD, POST");
}

TEST_CASE("malformed and conflicting patterns are refused") {
    route_table t;
    CHECK_THROWS_AS(t.add("items"), std::invalid_argument);
    CHECK_THROWS_AS(t.add("/a/{x...}/b"), std::invalid_argument);
    CHECK_THROWS_AS(t.add("/a/b{x}"), std::invalid_argument);
    CHECK_THROWS_AS(t.add("/a/{}"), std::invalid_argument);
    t.add("GET /u/{id}");
    CHECK_THROWS_AS(t.add("GET /u/{name}"), std::invalid_argument);
    CHECK_NOTHROW(t.add("POST /u/{name}"));
}

TEST_CASE("wildcards match escaped segments and give their values unescaped, as Go 1.22") {
    fixture f;
    auto item = f.t.add("GET /items/{id}");
    auto file = f.t.add("GET /files/{path...}");
    auto lit = f.t.add("GET /a%2Fb/x");
    auto sub = f.t.add("GET /items/{id}/tags");

    // %2F does not split a segment: {id} takes all of "a%2Fb", and gets it decoded.
    CHECK(f.find("GET", "/items/a%2Fb") == static_cast<long>(item));
    CHECK(f.p.get("id") == "a/b");
    CHECK(f.find("GET", "/items/hello%20world") == static_cast<long>(item));
    CHECK(f.p.get("id") == "hello world");
    CHECK(f.find("GET", "/items/%E2%82%AC/tags") == static_cast<long>(sub));
    CHECK(f.p.get("id") == "\xE2\x82\xAC");
    // '+' is not a space in a path; a malformed escape is kept as sent.
    CHECK(f.find("GET", "/items/a+b") == static_cast<long>(item));
    CHECK(f.p.get("id") == "a+b");
    CHECK(f.find("GET", "/items/100%") == static_cast<long>(item));
    CHECK(f.p.get("id") == "100%");
    CHECK(f.find("GET", "/items/%zz") == static_cast<long>(item));
    CHECK(f.p.get("id") == "%zz");
    // A rest wildcard gets the rest of the path decoded, slashes and %2F alike.
    CHECK(f.find("GET", "/files/dir/a%2Fb/%7Euser") == static_cast<long>(file));
    CHECK(f.p.get("path") == "dir/a/b/~user");
    // Literals compare decoded, on both sides: the pattern's %2F is one segment "a/b".
    CHECK(f.find("GET", "/a%2Fb/x") == static_cast<long>(lit));
    CHECK(f.find("GET", "/a%2fb/%78") == static_cast<long>(lit));
    CHECK(f.find("GET", "/a/b/x") == -404);
    // An escaped literal segment matches the literal.
    CHECK(f.find("GET", "/%69tems/7") == static_cast<long>(item));
    CHECK(f.p.get("id") == "7");
}

TEST_CASE("path_unescape decodes %XX and leaves malformed input alone") {
    using tether::http::path_unescape;
    CHECK(path_unescape("") == "");
    CHECK(path_unescape("abc") == "abc");
    CHECK(path_unescape("%41%62%2f") == "Ab/");
    CHECK(path_unescape("%00") == std::string(1, '\0'));
    CHECK(path_unescape("a%4") == "a%4");
    CHECK(path_unescape("a%g1") == "a%g1");
    CHECK(path_unescape("%") == "%");
}

TEST_CASE("a literal path's answer follows every later pattern (the exact-path shortcut)") {
    fixture f;
    auto any = f.t.add("/x");
    CHECK(f.find("GET", "/x") == static_cast<long>(any));
    CHECK(f.find("HEAD", "/x") == static_cast<long>(any));
    auto get = f.t.add("GET /x");
    CHECK(f.find("GET", "/x") == static_cast<long>(get));
    CHECK(f.find("HEAD", "/x") == static_cast<long>(get));
    CHECK(f.find("POST", "/x") == static_cast<long>(any));
    // A match with a wildcard fills in its value; the next one, by the shortcut, clears it.
    auto rest = f.t.add("GET /z/{r...}");
    CHECK(f.find("GET", "/z/a/b") == static_cast<long>(rest));
    CHECK(f.p.get("r") == "a/b");
    CHECK(f.find("GET", "/x") == static_cast<long>(get));
    CHECK(f.p.size() == 0); // a match without wildcards leaves no values from the last one
    // Escaped bytes and paths that differ by a byte take the walk.
    CHECK(f.find("GET", "/%78") == static_cast<long>(get));
    CHECK(f.find("GET", "/y") == -404);
    CHECK(f.find("GET", "/xx") == -404);
    auto end = f.t.add("GET /{$}");
    CHECK(f.find("GET", "/") == static_cast<long>(end));
    CHECK(f.find("DELETE", "/") == -405);
}

TEST_CASE("the exact-path shortcut tells apart paths and methods that differ in any one byte") {
    // Paths of 1 to 12 bytes (the shortcut keeps up to 8 as a word), each with a twin that
    // differs in one byte, at every position; methods of 3 to 10 bytes.
    fixture f;
    std::vector<std::pair<std::string, long>> paths;
    for (std::size_t n = 1; n <= 12; ++n) {
        for (std::size_t at = 1; at < n; ++at) {
            std::string a = "/" + std::string(n - 1, 'a');
            std::string b = a;
            b[at] = 'b';
            if (std::none_of(paths.begin(), paths.end(),
                             [&](const auto& p) { return p.first == b; })) {
                paths.emplace_back(b, static_cast<long>(f.t.add("GET " + b)));
            }
        }
        std::string a = "/" + std::string(n - 1, 'a');
        paths.emplace_back(a, static_cast<long>(f.t.add("GET " + a)));
    }
    for (const auto& [path, index] : paths) {
        CHECK(f.find("GET", path) == index);
        CHECK(f.find("HEAD", path) == index);
        CHECK(f.find("PUT", path) == -405);
    }
    // Methods: one pattern each, on one path; a method one byte off is not allowed.
    fixture g;
    std::vector<std::pair<std::string, long>> methods;
    for (std::string m :
         {"PUT", "POST", "PATCH", "DELETE", "OPTIONS", "PROPFIND", "MKACTIVITY", "VERSIONCTL"}) {
        methods.emplace_back(m, static_cast<long>(g.t.add(m + " /m")));
    }
    for (const auto& [m, index] : methods) {
        CHECK(g.find(m, "/m") == index);
        std::string off = m;
        off[m.size() / 2] = static_cast<char>(off[m.size() / 2] + 1);
        CHECK(g.find(off, "/m") == -405);
    }
}
