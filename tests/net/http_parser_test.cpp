#include "net/http/parser.hpp"

#include <doctest/doctest.h>

#include <string>
#include <vector>

using tether::http::chunked_decoder;
using tether::http::request_head;
using tether::http::request_parser;
using status = request_parser::status;

namespace {

// Parses `s` as one request head; returns the status and fills head/parser.
status parse(std::string_view s, request_head& head, request_parser& p) {
    return p.parse(s, head);
}

int error_status(const std::string& s) {
    request_parser p;
    request_head h;
    status st = p.parse(s, h);
    return st == status::error ? p.error().status : (st == status::complete ? 0 : -1);
}

std::string decode_all(const std::string& body, chunked_decoder::status& st,
                       std::size_t& consumed) {
    std::string buf = body;
    chunked_decoder d;
    std::size_t out = 0;
    st = d.decode(buf.data(), buf.size(), consumed, out);
    return buf.substr(0, out);
}

} // namespace

TEST_CASE("a simple GET parses into method, target, version and fields") {
    request_parser p;
    request_head h;
    std::string req = "GET /a/b?x=1 HTTP/1.1\r\nHost: example\r\nX-Two: a\r\nx-two: b\r\n\r\n";
    REQUIRE(parse(req, h, p) == status::complete);
    CHECK(p.consumed() == req.size());
    CHECK(h.method == "GET");
    CHECK(h.target == "/a/b?x=1");
    CHECK(h.path() == "/a/b");
    CHECK(h.query() == "x=1");
    CHECK(h.version_minor == 1);
    CHECK(h.keep_alive);
    CHECK(h.header("HOST").value() == "example");
    CHECK(h.count("X-TWO") == 2);
    CHECK(h.header("x-two").value() == "a");
    CHECK_FALSE(h.header("missing"));
    CHECK_FALSE(h.has_body());
}

TEST_CASE("field values lose surrounding whitespace but keep inner spaces") {
    request_parser p;
    request_head h;
    REQUIRE(parse("GET / HTTP/1.1\r\nHost: h\r\nA: \t one two \t\r\n\r\n", h, p) ==
            status::complete);
    CHECK(h.header("a").value() == "one two");
}

TEST_CASE("an incomplete head asks for more, and byte-at-a-time parsing gives the same head") {
    std::string req = "POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello";
    request_parser p;
    request_head h;
    for (std::size_t n = 1; n < req.size() - 5; ++n) {
        REQUIRE(p.parse(std::string_view(req).substr(0, n), h) == status::incomplete);
    }
    REQUIRE(p.parse(req, h) == status::complete);
    CHECK(p.consumed() == req.size() - 5);
    CHECK(h.content_length == 5u);
    CHECK(h.has_body());
}

TEST_CASE("pipelined requests parse one after another") {
    std::string two = "GET /1 HTTP/1.1\r\nHost: h\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\n";
    request_parser p;
    request_head h;
    REQUIRE(p.parse(two, h) == status::complete);
    CHECK(h.target == "/1");
    std::size_t used = p.consumed();
    p.reset();
    REQUIRE(p.parse(std::string_view(two).substr(used), h) == status::complete);
    CHECK(h.target == "/2");
}

TEST_CASE("empty lines before the request line are skipped") {
    request_parser p;
    request_head h;
    REQUIRE(p.parse("\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n", h) == status::complete);
    CHECK(h.method == "GET");
}

TEST_CASE("keep-alive follows the version and the Connection field") {
    request_parser p;
    request_head h;
    REQUIRE(p.parse("GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n", h) ==
            status::complete);
    CHECK_FALSE(h.keep_alive);
    REQUIRE(p.parse("GET / HTTP/1.0\r\n\r\n", h) == status::complete);
    CHECK(h.version_minor == 0);
    CHECK_FALSE(h.keep_alive);
    REQUIRE(p.parse("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", h) == status::complete);
    CHECK(h.keep_alive);
    REQUIRE(p.parse("GET / HTTP/1.1\r\nHost: h\r\nConnection: upgrade, close\r\n\r\n", h) ==
            status::complete);
    CHECK_FALSE(h.keep_alive);
}

TEST_CASE("Expect: 100-continue is recognised; other expectations get 417") {
    request_parser p;
    request_head h;
    REQUIRE(
        p.parse("PUT / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nExpect: 100-Continue\r\n\r\n",
                h) == status::complete);
    CHECK(h.expect_continue);
    CHECK(error_status("PUT / HTTP/1.1\r\nHost: h\r\nExpect: teapot\r\n\r\n") == 417);
}

TEST_CASE("request smuggling vectors are rejected") {
    // Conflicting lengths, length plus chunked, duplicate chunked, unknown codings.
    CHECK(error_status(
              "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n") ==
          400);
    CHECK(error_status("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3, 4\r\n\r\n") == 400);
    CHECK(error_status("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: "
                       "chunked\r\n\r\n") == 400);
    // Chunked must be the final coding, once (RFC 9112 §6.3: 400); a coding we lack before it
    // is a 501.
    CHECK(error_status(
              "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, chunked\r\n\r\n") == 400);
    CHECK(error_status("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n") == 400);
    CHECK(error_status("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, gzip\r\n\r\n") ==
          400);
    CHECK(error_status("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n"
                       "Transfer-Encoding: chunked\r\n\r\n") == 400);
    CHECK(error_status("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n") ==
          501);
    CHECK(error_status("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n"
                       "Transfer-Encoding: chunked\r\n\r\n") == 501);
    CHECK(error_status("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: \r\n\r\n") == 400);
    CHECK(error_status("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n") == 400);
    CHECK(error_status("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n") == 400);
    CHECK(error_status("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1x\r\n\r\n") == 400);
    CHECK(error_status(
              "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999999999999999\r\n\r\n") == 400);
    // Whitespace before the colon, obs-fold, control characters, bare CR.
    CHECK(error_status("GET / HTTP/1.1\r\nHost: h\r\nContent-Length : 3\r\n\r\n") == 400);
    CHECK(error_status("GET / HTTP/1.1\r\nHost: h\r\nA: b\r\n  folded\r\n\r\n") == 400);
    CHECK(error_status("GET / HTTP/1.1\r\nHost: h\r\nA: b\x01\r\n\r\n") == 400);
    CHECK(error_status("GET / HTTP/1.1\r\nHost: h\r\nA: b\rc\r\n\r\n") == 400);
    CHECK(error_status("GET /\x7f HTTP/1.1\r\nHost: h\r\n\r\n") == 400);
    // Identical repeated lengths are one length.
    CHECK(error_status("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3, 3\r\n\r\n") == 0);
}

TEST_CASE("HTTP/1.1 needs exactly one Host") {
    CHECK(error_status("GET / HTTP/1.1\r\n\r\n") == 400);
    CHECK(error_status("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n") == 400);
    CHECK(error_status("GET / HTTP/1.0\r\n\r\n") == 0);
}

TEST_CASE("malformed request lines get 400 and unknown versions 505") {
    CHECK(error_status("GET  / HTTP/1.1\r\nHost: h\r\n\r\n") == 400);
    CHECK(error_status("GET /\r\nHost: h\r\n\r\n") == 400);
    CHECK(error_status("G(T / HTTP/1.1\r\nHost: h\r\n\r\n") == 400);
    CHECK(error_status("GET / HTTP/1.1 \r\nHost: h\r\n\r\n") == 400);
    CHECK(error_status("GET / http/1.1\r\nHost: h\r\n\r\n") == 400);
    CHECK(error_status("GET / HTTP/2.0\r\nHost: h\r\n\r\n") == 505);
    CHECK(error_status("GET / HTTP/1.2\r\nHost: h\r\n\r\n") == 505);
}

TEST_CASE("limits give 414 for a long target and 431 for a large header section") {
    tether::http::parser_limits lim;
    lim.max_target = 100;
    lim.max_header_bytes = 1000;
    lim.max_headers = 5;
    auto st = [&](const std::string& s) {
        request_parser p(lim);
        request_head h;
        status r = p.parse(s, h);
        return r == status::error ? p.error().status : (r == status::complete ? 0 : -1);
    };
    CHECK(st("GET /" + std::string(200, 'a') + " HTTP/1.1\r\nHost: h\r\n\r\n") == 414);
    // Refused before the head is complete, too.
    CHECK(st("GET /" + std::string(300, 'a')) == 414);
    CHECK(st("GET / HTTP/1.1\r\nHost: h\r\nA: " + std::string(2000, 'a') + "\r\n\r\n") == 431);
    CHECK(st("GET / HTTP/1.1\r\nHost: h\r\nA: " + std::string(2000, 'a')) == 431);
    std::string many = "GET / HTTP/1.1\r\nHost: h\r\n";
    for (int i = 0; i < 6; ++i) {
        many += "A: b\r\n";
    }
    CHECK(st(many + "\r\n") == 431);
    // Exactly the limit is allowed, one more is not.
    std::string five = "GET / HTTP/1.1\r\nHost: h\r\n";
    for (int i = 0; i < 4; ++i) {
        five += "A: b\r\n";
    }
    CHECK(st(five + "\r\n") == 0);
    CHECK(st(five + "A: b\r\n\r\n") == 431);
    // Far over the limit: refused without keeping room for every field.
    std::string flood = "GET / HTTP/1.1\r\nHost: h\r\n";
    for (int i = 0; i < 150; ++i) {
        flood += "A: b\r\n";
    }
    request_parser p(lim);
    request_head h;
    CHECK(p.parse(flood + "\r\n", h) == status::error);
    CHECK(p.error().status == 431);
    CHECK(h.headers.capacity() <= 16);
}

TEST_CASE("a limit gives the same status however the bytes arrive") {
    tether::http::parser_limits lim;
    lim.max_target = 100;
    lim.max_header_bytes = 200;
    // Whole, and one byte at a time.
    auto both = [&](const std::string& s) {
        request_parser whole(lim);
        request_head h;
        status r = whole.parse(s, h);
        int a = r == status::error ? whole.error().status : (r == status::complete ? 0 : -1);
        request_parser inc(lim);
        int b = -1;
        for (std::size_t n = 1; n <= s.size(); ++n) {
            r = inc.parse(std::string_view(s).substr(0, n), h);
            if (r != status::incomplete) {
                b = r == status::error ? inc.error().status : 0;
                break;
            }
        }
        CHECK(a == b);
        return a;
    };
    // A head that ends just inside the limit is accepted both ways (a prefix of it must not
    // be refused as too large), one byte more is refused both ways.
    std::string base = "GET / HTTP/1.1\r\nHost: h\r\nA: ";
    std::string fits = base + std::string(200 - base.size(), 'a') + "\r\n\r\n";
    CHECK(fits.size() == 204);
    CHECK(both(fits) == 0);
    CHECK(both(base + std::string(201 - base.size(), 'a') + "\r\n\r\n") == 431);
    // A long target in a head that is also too large: the target is seen first.
    CHECK(both("GET /" + std::string(150, 'a') +
               " HTTP/1.1\r\nHost: h\r\nA: " + std::string(300, 'a') + "\r\n\r\n") == 414);
    // A head that is too large before its target is long: 431.
    CHECK(both("GET /" + std::string(90, 'a') +
               " HTTP/1.1\r\nHost: h\r\nA: " + std::string(300, 'a') + "\r\n\r\n") == 431);
    // A malformed method is seen at its second byte: 400, however long the rest.
    CHECK(both("G(T /" + std::string(150, 'a') + " HTTP/1.1\r\nHost: h\r\n\r\n") == 400);
    CHECK(both("G(T /" + std::string(250, 'a') + " HTTP/1.1\r\nHost: h\r\n\r\n") == 400);
    // A bare LF is seen where it is: before a long target, it wins.
    CHECK(both("GET /\n" + std::string(250, 'a')) == 400);
    CHECK(both("GET /" + std::string(150, 'a') + "\n") == 414);
}

TEST_CASE("empty lines before the request line count towards the header limit") {
    tether::http::parser_limits lim;
    lim.max_header_bytes = 100;
    request_parser p(lim);
    request_head h;
    std::string flood;
    for (int i = 0; i < 60; ++i) {
        flood += "\r\n";
    }
    CHECK(p.parse(flood, h) == status::error);
    CHECK(p.error().status == 431);
    // A few are fine.
    request_parser q(lim);
    CHECK(q.parse("\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n", h) == status::complete);
}

TEST_CASE("a trickled head costs linear work and still parses") {
    std::string req = "GET / HTTP/1.1\r\nHost: h\r\n" + std::string() +
                      "X: " + std::string(4000, 'v') + "\r\n\r\n";
    request_parser p;
    request_head h;
    std::size_t n = 1;
    status s = status::incomplete;
    for (; n <= req.size() && s == status::incomplete; ++n) {
        s = p.parse(std::string_view(req).substr(0, n), h);
    }
    CHECK(s == status::complete);
    CHECK(n - 1 == req.size());
}

TEST_CASE("chunked bodies decode in place, with extensions and trailers") {
    chunked_decoder::status st;
    std::size_t consumed = 0;
    std::string body = "5;name=val\r\nhello\r\n6\r\n world\r\n0\r\nTrailer: x\r\n\r\nNEXT";
    std::string out = decode_all(body, st, consumed);
    CHECK(st == chunked_decoder::status::done);
    CHECK(out == "hello world");
    CHECK(body.substr(consumed) == "NEXT");
}

TEST_CASE("chunked decoding works byte by byte") {
    std::string body = "A\r\n0123456789\r\n1\r\nx\r\n0\r\n\r\n";
    chunked_decoder d;
    std::string out;
    chunked_decoder::status st = chunked_decoder::status::more;
    for (char c : body) {
        char b = c;
        std::size_t used = 0;
        std::size_t n = 0;
        st = d.decode(&b, 1, used, n);
        REQUIRE(st != chunked_decoder::status::error);
        CHECK(used == 1);
        out.append(&b, n);
    }
    CHECK(st == chunked_decoder::status::done);
    CHECK(out == "0123456789x");
    CHECK(d.body_bytes() == 11);
}

TEST_CASE("bad chunk framing is an error") {
    chunked_decoder::status st;
    std::size_t consumed = 0;
    decode_all("zz\r\n", st, consumed);
    CHECK(st == chunked_decoder::status::error);
    decode_all("5\r\nhelloX\r\n", st, consumed);
    CHECK(st == chunked_decoder::status::error);
    decode_all("ffffffffffffffffff\r\n", st, consumed);
    CHECK(st == chunked_decoder::status::error);
    decode_all("\r\n", st, consumed);
    CHECK(st == chunked_decoder::status::error);
    decode_all("3\nabc\r\n", st, consumed);
    CHECK(st == chunked_decoder::status::error);
}

TEST_CASE("a head in one piece parses as the same head fed byte by byte") {
    // A whole head takes a one-pass path; one fed in pieces, the resumable one. They must
    // agree on every input, valid or not (the fuzz target checks the same on random bytes).
    const std::vector<std::string> heads = {
        "GET / HTTP/1.1\r\nHost: h\r\n\r\n",
        "GET / HTTP/1.0\r\n\r\n",
        "GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n",
        "POST /p?q=1 HTTP/1.1\r\nHOST: h\r\nCONTENT-LENGTH: 12\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3, 3\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
        "PUT / HTTP/1.1\r\nHost: h\r\nExpect: 100-CONTINUE\r\nContent-Length: 1\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: h\r\nExpect: nothing\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: h\r\nA:\t x\ty \t\r\nB:\r\nC:   \r\n\r\n",
        "GET / HTTP/1.1\r\nHost: h\r\nObs: caf\xc3\xa9\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: h\r\nCtl: a\x01z\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: h\r\nDel: a\x7fz\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: h\r\nCr: a\rz\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: h\nX: y\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: h\r\n Folded: x\r\n\r\n",
        "GET / HTTP/1.1\r\nHost : h\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        "GET / HTTP/1.1\r\nConnection: close\r\n\r\n",
        "GET / HTTP/2.0\r\nHost: h\r\n\r\n",
        "GET / HTTP/1.1 \r\nHost: h\r\n\r\n",
        "GET  / HTTP/1.1\r\nHost: h\r\n\r\n",
        "G@T / HTTP/1.1\r\nHost: h\r\n\r\n",
        "\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n",
        // A field name is found by its colon among the next sixteen bytes, then checked:
        // a CR where a known name has its '-', a line without a colon before one with it,
        // names that aren't tokens, and names longer than sixteen bytes.
        "POST / HTTP/1.1\r\nHost: h\r\nContent\rLength: 5\r\nX-Padding: 0123456789\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: h\r\nTransfer\rEncoding: chunked\r\nX-Padding: 01234\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: h\r\nNoColon\r\nX: y\r\nX-Padding: 0123456789\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: h\r\nBad(Name): y\r\nX-Padding: 0123456789\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: h\r\n: empty name\r\nX-Padding: 0123456789\r\n\r\n",
        "GET / HTTP/1.1\r\nhOsT: h\r\nUpgrade-Insecure-Requests: 1\r\nX-Padding: 0123456\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: h\r\ncOnTeNt-LeNgTh: 0\r\nCONNECTION: close\r\n\r\n",
        "GET /a/long/target/of/more/than/sixteen/bytes?q=1 HTTP/1.1\r\nHost: h\r\n\r\n",
        "GET /a/long/target/with\x01control HTTP/1.1\r\nHost: h\r\n\r\n",
        "GET /a/long/target/with/obs-text/\xc3\xa9 HTTP/1.1\r\nHost: h\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: h\r\nLong: a value of more than sixteen bytes\x7f here\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: h\r\nLong: a value of more than sixteen bytes\there\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: h\r\nCRLF: a value of more than sixteen bytes\r\r\n\r\n",
    };
    for (const std::string& head : heads) {
        CAPTURE(head);
        request_parser whole;
        request_head a;
        const status sa = whole.parse(head, a);
        request_parser pieces;
        request_head b;
        status sb = status::incomplete;
        for (std::size_t n = 1; n <= head.size() && sb == status::incomplete; ++n) {
            sb = pieces.parse(std::string_view(head).substr(0, n), b);
        }
        REQUIRE(sa == sb);
        if (sa == status::error) {
            CHECK(whole.error().status == pieces.error().status);
            continue;
        }
        REQUIRE(sa == status::complete);
        CHECK(whole.consumed() == pieces.consumed());
        CHECK(a.method == b.method);
        CHECK(a.target == b.target);
        CHECK(a.version_minor == b.version_minor);
        REQUIRE(a.headers.size() == b.headers.size());
        for (std::size_t i = 0; i < a.headers.size(); ++i) {
            CHECK(a.headers[i].name == b.headers[i].name);
            CHECK(a.headers[i].value == b.headers[i].value);
        }
        CHECK(a.content_length == b.content_length);
        CHECK(a.chunked == b.chunked);
        CHECK(a.keep_alive == b.keep_alive);
        CHECK(a.expect_continue == b.expect_continue);
    }
}

TEST_CASE("a field name with a byte that is not a token character is refused, wherever it is") {
    // Names of every length up to 24 (found by their colon, checked four bytes at a time,
    // or token by token near the end of the buffer), with one bad byte at each place.
    for (std::size_t n = 1; n <= 24; ++n) {
        for (const char* tail : {"X-Padding: 0123456789abcdef\r\n\r\n", "\r\n"}) {
            std::string name(n, 'k');
            const std::string good = "GET / HTTP/1.1\r\nHost: h\r\n" + name + ": v\r\n" + tail;
            CAPTURE(good);
            CHECK(error_status(good) == 0);
            for (std::size_t at = 0; at < n; ++at) {
                for (char bad : {'(', '"', '@', '\x01', '\x7f', '\x80', '\t'}) {
                    std::string named = name;
                    named[at] = bad;
                    const std::string head =
                        "GET / HTTP/1.1\r\nHost: h\r\n" + named + ": v\r\n" + tail;
                    CAPTURE(head);
                    CHECK(error_status(head) == 400);
                }
            }
        }
    }
}

TEST_CASE("has_token finds an element of a comma-separated list, any case, trimmed") {
    CHECK(tether::http::has_token("close", "close"));
    CHECK(tether::http::has_token(" Keep-Alive , Upgrade", "keep-alive"));
    CHECK(tether::http::has_token("keep-alive,\tUPGRADE", "upgrade"));
    CHECK(tether::http::has_token(",,close,", "close"));
    CHECK_FALSE(tether::http::has_token("closed", "close"));
    CHECK_FALSE(tether::http::has_token("keep-alive", "close"));
    CHECK_FALSE(tether::http::has_token("", "close"));
}
