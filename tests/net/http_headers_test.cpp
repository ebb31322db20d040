#include "net/http/detail/put.hpp"
#include "net/http/headers.hpp"
#include "net/http/parser.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <iterator>
#include <limits>
#include <string>
#include <utility>
#include <vector>

using tether::http::header_map;
using tether::http::iequals;

namespace {

std::vector<std::pair<std::string, std::string>> fields(const header_map& h) {
    std::vector<std::pair<std::string, std::string>> out;
    for (const auto& [k, v] : h) {
        out.emplace_back(k, v);
    }
    return out;
}

// What wire() must be: each field as "Name: value\r\n", in order.
std::string wire_of(const header_map& h) {
    std::string out;
    for (auto it = h.begin(); it != h.end(); ++it) {
        out += std::string(it->first) + ": " + std::string(it->second) + "\r\n";
    }
    return out;
}

using list = std::vector<std::pair<std::string, std::string>>;

} // namespace

TEST_CASE("header_map: set replaces every field of a name, in any case; add keeps them") {
    header_map h;
    CHECK(h.empty());
    CHECK(h.wire().empty());
    h.set("Content-Type", "text/plain");
    h.add("Set-Cookie", "a=1");
    h.add("set-cookie", "b=2");
    h.set("X-One", "1");
    CHECK(h.size() == 4);
    CHECK(h.get("content-type") == "text/plain");
    CHECK(h.get("SET-COOKIE") == "a=1");
    CHECK_FALSE(h.get("cookie").has_value());
    CHECK(h.has("x-one"));
    CHECK_FALSE(h.has("x-two"));

    h.set("SET-cookie", "c=3"); // both go, the new one comes last
    CHECK(fields(h) == list{{"Content-Type", "text/plain"}, {"X-One", "1"}, {"SET-cookie", "c=3"}});
    CHECK(h.wire() == "Content-Type: text/plain\r\nX-One: 1\r\nSET-cookie: c=3\r\n");

    h.remove("content-TYPE");
    CHECK(fields(h) == list{{"X-One", "1"}, {"SET-cookie", "c=3"}});
    CHECK(h.wire() == wire_of(h));
    h.remove("nothing");
    CHECK(h.size() == 2);

    h.clear();
    CHECK(h.empty());
    CHECK(h.wire().empty());
    CHECK_FALSE(h.has("x-one"));
    h.set("A", "");
    CHECK(h.get("a") == "");
    CHECK(h.wire() == "A: \r\n");
}

TEST_CASE("header_map: names of one length but other letters are different names") {
    header_map h;
    h.set("X-Request-ID", "id");
    h.set("Content-Type", "t"); // same length as X-Request-ID
    CHECK(h.get("x-request-id") == "id");
    CHECK(h.get("content-type") == "t");
    CHECK_FALSE(h.has("content-typf"));
    CHECK_FALSE(h.has("x-request-ie"));
    CHECK(h.size() == 2);
}

TEST_CASE("header_map: a value taken from the map itself can be stored back") {
    header_map h;
    h.set("A", std::string(100, 'a'));
    h.set("B", "b");
    // The value is a view into the map; set() both removes A's bytes and may grow.
    for (int i = 0; i < 50; ++i) {
        h.set("A", *h.get("a"));
        h.add("C" + std::to_string(i), *h.get("b"));
    }
    CHECK(h.get("a") == std::string(100, 'a'));
    CHECK(h.get("c49") == "b");
    h.set("B", *h.get("c7"));
    CHECK(h.get("b") == "b");
    // A name taken from the map.
    std::string_view name = (*h.begin()).first;
    h.remove(name);
    CHECK(h.size() == 51);
    CHECK(h.wire() == wire_of(h));
}

TEST_CASE("header_map: grows, copies and moves keep every field") {
    header_map h;
    for (int i = 0; i < 200; ++i) {
        h.add("Name-" + std::to_string(i), std::string(static_cast<std::size_t>(i), 'v'));
    }
    CHECK(h.size() == 200);
    CHECK(h.get("name-150") == std::string(150, 'v'));
    CHECK(h.wire() == wire_of(h));

    header_map copy = h;
    CHECK(fields(copy) == fields(h));
    CHECK(copy.wire() == h.wire());
    copy.set("Name-0", "changed");
    CHECK(h.get("name-0") == "");

    header_map moved = std::move(copy);
    CHECK(moved.get("name-0") == "changed");
    CHECK(copy.empty()); // NOLINT(bugprone-use-after-move): a moved-from map is empty
    CHECK(copy.wire().empty());
    copy.set("Reused", "yes");
    CHECK(copy.wire() == "Reused: yes\r\n");

    h = moved;
    CHECK(fields(h) == fields(moved));
    h = header_map{};
    CHECK(h.empty());
    h.add("After", "x");
    CHECK(h.wire() == "After: x\r\n");
}

TEST_CASE("header_map: removing many fields keeps the rest in order") {
    header_map h;
    for (int i = 0; i < 100; ++i) {
        h.add(i % 3 == 0 ? "Drop" : "Keep-" + std::to_string(i), std::to_string(i));
    }
    h.remove("DROP");
    CHECK(h.size() == 66);
    CHECK_FALSE(h.has("drop"));
    CHECK(h.get("keep-1") == "1");
    CHECK(h.get("keep-98") == "98");
    CHECK(h.wire() == wire_of(h));
    std::size_t n = 0;
    for (const auto& [k, v] : h) {
        CHECK(k == "Keep-" + std::string(v));
        ++n;
    }
    CHECK(n == 66);
}

TEST_CASE("iequals agrees with a byte-by-byte comparison at every length") {
    auto reference = [](std::string_view a, std::string_view b) {
        if (a.size() != b.size()) {
            return false;
        }
        for (std::size_t i = 0; i < a.size(); ++i) {
            if (std::tolower(static_cast<unsigned char>(a[i])) !=
                std::tolower(static_cast<unsigned char>(b[i]))) {
                return false;
            }
        }
        return true;
    };
    // Letters, the bytes next to them ('@', '[', '`', '{'), and bytes with the high bit set
    // (which must not fold: 0xC1 is not 0xE1).
    const std::string alphabet = "aAzZ@[`{-0\xc1\xe1\x80\x7f";
    for (std::size_t n = 0; n <= 20; ++n) {
        for (std::size_t at = 0; at < std::max<std::size_t>(n, 1); ++at) {
            for (char x : alphabet) {
                for (char y : alphabet) {
                    std::string a(n, 'k');
                    std::string b(n, 'K');
                    if (n > 0) {
                        a[at] = x;
                        b[at] = y;
                    }
                    INFO("n=" << n << " at=" << at << " x=" << int(x) << " y=" << int(y));
                    REQUIRE(iequals(a, b) == reference(a, b));
                }
            }
        }
    }
    CHECK(iequals("Content-Length", "content-length"));
    CHECK_FALSE(iequals("Content-Length", "content-lengti"));
    CHECK_FALSE(iequals("abc", "abcd"));
}

TEST_CASE("http_date is an IMF-fixdate and the 200 head start carries the same date") {
    const std::string date(tether::http::http_date());
    REQUIRE(date.size() == 29); // "Sun, 06 Nov 1994 08:49:37 GMT"
    CHECK(date.substr(3, 2) == ", ");
    CHECK(date.substr(25) == " GMT");
    const std::string start(tether::http::detail::ok_status_and_date());
    // The second may turn between the two calls: then both are read again.
    const std::string again(tether::http::http_date());
    CHECK(start.rfind("HTTP/1.1 200 OK\r\nDate: ", 0) == 0);
    CHECK(start.size() == 23 + 29 + 2);
    CHECK(start.substr(start.size() - 2) == "\r\n");
    const std::string in_start = start.substr(23, 29);
    CHECK((in_start == date || in_start == again));
}

TEST_CASE("put_uint writes every number as std::to_string does") {
    std::vector<std::uint64_t> vs;
    for (std::uint64_t v = 0; v < 20000; ++v) {
        vs.push_back(v);
    }
    for (std::uint64_t p = 10; p <= std::numeric_limits<std::uint64_t>::max() / 10; p *= 10) {
        vs.push_back(p - 1);
        vs.push_back(p);
        vs.push_back(p + 1);
        vs.push_back(p * 10 - 1);
    }
    vs.push_back(std::numeric_limits<std::uint64_t>::max());
    for (std::uint64_t v : vs) {
        char buf[24];
        std::fill(std::begin(buf), std::end(buf), '#');
        char* end = tether::http::detail::put_uint(buf, v);
        REQUIRE(std::string(buf, end) == std::to_string(v));
        REQUIRE(*end == '#'); // nothing written past the end
    }
}

TEST_CASE("copy_ends<32> copies 32 to 64 bytes exactly") {
    std::string src;
    for (int i = 0; i < 64; ++i) {
        src.push_back(static_cast<char>('A' + i % 58));
    }
    for (std::size_t n = 32; n <= 64; ++n) {
        std::string dst(80, '#');
        tether::http::detail::copy_ends<32>(dst.data() + 4, src.data(), n);
        CHECK(dst.substr(0, 4) == "####");
        CHECK(dst.substr(4, n) == src.substr(0, n));
        CHECK(dst.substr(4 + n) == std::string(80 - 4 - n, '#'));
    }
}
