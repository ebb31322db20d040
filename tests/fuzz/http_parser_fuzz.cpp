// libFuzzer target for the HTTP/1.1 request parser and the chunked decoder.
//
// Built and run by `./dev test` with clang-19 and -fsanitize=fuzzer,address,undefined over
// net/http/parser.cpp alone (see run_fuzz in ./dev). It checks invariants, not only that
// nothing crashes:
//   - a stream of pipelined requests parsed from the whole input gives the same heads, the
//     same lengths and the same error status as the same bytes fed in pieces, split at
//     points the input chooses (the parser resumes its scan between calls);
//   - every view of a head points into the buffer; the fields agree with what was parsed
//     (no Content-Length together with chunked, HTTP/1.1 has exactly one Host, ...);
//   - the chunked decoder gives the same bytes, the same status and the same length fed
//     whole or in pieces; and data encoded as chunks decodes back to itself.
//
// Input layout: byte 0 chooses the limits, byte 1 the split step; the rest is the stream.

#include "net/http/parser.hpp"

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

using namespace tether::http;

namespace {

[[noreturn]] void fail(const char* what) {
    std::fprintf(stderr, "http_parser_fuzz: invariant broken: %s\n", what);
    std::abort();
}

#define CHECK_INV(cond)                                                                            \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fail(#cond);                                                                           \
        }                                                                                          \
    } while (0)

bool inside(std::string_view part, std::string_view buf) {
    return part.data() >= buf.data() && part.data() + part.size() <= buf.data() + buf.size();
}

// What one parse of one request produced, with offsets instead of views so that runs over
// different buffers compare.
struct outcome {
    request_parser::status st = request_parser::status::incomplete;
    int error_status = 0;
    std::size_t consumed = 0;
    std::string method, target;
    int version_minor = 0;
    std::vector<std::pair<std::string, std::string>> headers;
    bool has_length = false;
    std::uint64_t length = 0;
    bool chunked = false, keep_alive = false, expect_continue = false;

    bool operator==(const outcome&) const = default;
};

bool is_known_error(int s) {
    return s == 400 || s == 413 || s == 414 || s == 417 || s == 431 || s == 501 || s == 505;
}

void check_head(const request_head& h, std::string_view buf, std::size_t consumed,
                const parser_limits& lim) {
    CHECK_INV(consumed >= 4 && consumed <= buf.size());
    CHECK_INV(buf.substr(consumed - 4, 4) == "\r\n\r\n");
    CHECK_INV(!h.method.empty() && inside(h.method, buf));
    CHECK_INV(!h.target.empty() && inside(h.target, buf) && h.target.size() <= lim.max_target);
    CHECK_INV(h.version_minor == 0 || h.version_minor == 1);
    CHECK_INV(h.headers.size() <= lim.max_headers);
    for (const header_field& f : h.headers) {
        CHECK_INV(!f.name.empty() && inside(f.name, buf) && inside(f.value, buf));
        CHECK_INV(f.name.find_first_of(" \t\r\n:") == std::string_view::npos);
        CHECK_INV(f.value.find_first_of("\r\n") == std::string_view::npos);
        CHECK_INV(f.value.find('\0') == std::string_view::npos);
        if (!f.value.empty()) {
            CHECK_INV(f.value.front() != ' ' && f.value.front() != '\t');
            CHECK_INV(f.value.back() != ' ' && f.value.back() != '\t');
        }
    }
    CHECK_INV(!(h.chunked && h.content_length));
    if (h.chunked) {
        CHECK_INV(h.version_minor == 1 && h.count("transfer-encoding") > 0);
    } else {
        CHECK_INV(h.count("transfer-encoding") == 0);
    }
    if (h.content_length) {
        CHECK_INV(h.count("content-length") > 0);
    } else {
        CHECK_INV(h.count("content-length") == 0);
    }
    if (h.version_minor == 1) {
        CHECK_INV(h.count("host") == 1);
    }
    CHECK_INV(h.path().size() + (h.query().empty() ? 0 : h.query().size() + 1) <= h.target.size());
}

outcome record(request_parser& p, request_parser::status st, const request_head& h) {
    outcome o;
    o.st = st;
    if (st == request_parser::status::error) {
        o.error_status = p.error().status;
        CHECK_INV(is_known_error(o.error_status));
        CHECK_INV(p.error().reason != nullptr && p.error().reason[0] != '\0');
        return o;
    }
    if (st != request_parser::status::complete) {
        return o;
    }
    o.consumed = p.consumed();
    o.method = h.method;
    o.target = h.target;
    o.version_minor = h.version_minor;
    for (const header_field& f : h.headers) {
        o.headers.emplace_back(f.name, f.value);
    }
    o.has_length = h.content_length.has_value();
    o.length = h.content_length.value_or(0);
    o.chunked = h.chunked;
    o.keep_alive = h.keep_alive;
    o.expect_continue = h.expect_continue;
    return o;
}

// Parses every request head in `stream`, skipping Content-Length bodies (a chunked body or
// an error ends the walk: the decoder is checked on its own). `step` 0 feeds each request's
// bytes whole; otherwise they arrive `step` bytes at a time, as from a socket.
std::vector<outcome> parse_stream(std::string_view stream, std::size_t step,
                                  const parser_limits& lim) {
    std::vector<outcome> out;
    request_parser p(lim);
    std::size_t pos = 0;
    while (pos < stream.size() && out.size() < 64) {
        std::string_view rest = stream.substr(pos);
        p.reset();
        request_head h;
        request_parser::status st = request_parser::status::incomplete;
        if (step == 0) {
            st = p.parse(rest, h);
        } else {
            // A fresh copy of each prefix: views that leak from an earlier, shorter buffer
            // show up under ASan.
            for (std::size_t have = std::min(step, rest.size());;
                 have = std::min(have + step, rest.size())) {
                std::vector<char> copy(rest.begin(), rest.begin() + static_cast<long>(have));
                std::string_view prefix(copy.data(), copy.size());
                st = p.parse(prefix, h);
                if (st == request_parser::status::complete) {
                    check_head(h, prefix, p.consumed(), lim);
                    // Re-parse in the full buffer so the views compare by content.
                    request_parser again(lim);
                    request_head h2;
                    CHECK_INV(again.parse(rest, h2) == request_parser::status::complete);
                    CHECK_INV(again.consumed() == p.consumed());
                    h = h2;
                    break;
                }
                if (st == request_parser::status::error || have == rest.size()) {
                    break;
                }
            }
        }
        if (st == request_parser::status::complete) {
            check_head(h, rest, p.consumed(), lim);
        }
        out.push_back(record(p, st, h));
        if (st != request_parser::status::complete || h.chunked) {
            break;
        }
        std::uint64_t body = h.content_length.value_or(0);
        if (body > rest.size() - p.consumed()) {
            break;
        }
        pos += p.consumed() + static_cast<std::size_t>(body);
    }
    return out;
}

struct decoded {
    chunked_decoder::status st = chunked_decoder::status::more;
    std::string data;
    std::size_t consumed = 0;
    bool operator==(const decoded&) const = default;
};

// Decodes `in` with windows of `step` bytes (0: whole). The caller's window is decoded in
// place, as the server does in its connection buffer.
decoded decode(std::string_view in, std::size_t step) {
    decoded d;
    chunked_decoder dec;
    std::vector<char> buf(in.begin(), in.end());
    std::size_t pos = 0;
    while (pos < buf.size()) {
        std::size_t len = step == 0 ? buf.size() - pos : std::min(step, buf.size() - pos);
        std::size_t used = 0;
        std::size_t produced = 0;
        d.st = dec.decode(buf.data() + pos, len, used, produced);
        CHECK_INV(used <= len && produced <= used);
        d.data.append(buf.data() + pos, produced);
        pos += used;
        if (d.st != chunked_decoder::status::more) {
            break;
        }
        CHECK_INV(used == len);
    }
    CHECK_INV(dec.body_bytes() == d.data.size());
    d.consumed = pos;
    return d;
}

// Encodes `data` as chunks whose sizes come from `sizes` (cycled), with an extension and a
// trailer now and then.
std::string encode_chunked(std::string_view data, std::string_view sizes) {
    std::string out;
    std::size_t k = 0;
    char hex[32];
    while (!data.empty()) {
        std::size_t n =
            sizes.empty() ? data.size() : 1 + static_cast<unsigned char>(sizes[k++ % sizes.size()]);
        n = std::min(n, data.size());
        std::snprintf(hex, sizeof hex, (k % 3 == 0) ? "%zX" : "%zx", n);
        out += hex;
        if (k % 5 == 0) {
            out += ";name=value";
        }
        out += "\r\n";
        out.append(data.substr(0, n));
        out += "\r\n";
        data.remove_prefix(n);
    }
    out += "0\r\n";
    if (k % 2 == 1) {
        out += "Trailer-Field: x\r\n";
    }
    out += "\r\n";
    return out;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size < 2) {
        return 0;
    }
    // Small limits half of the time, so that the limit paths are reached with short inputs.
    parser_limits lim;
    if ((data[0] & 1) != 0) {
        lim.max_header_bytes = 64 + (data[0] >> 1) * 4;
        lim.max_headers = 1 + (data[0] >> 4);
        lim.max_target = 8 + (data[0] >> 2);
    }
    std::size_t step = 1 + data[1] % 17;
    std::string_view stream(reinterpret_cast<const char*>(data) + 2, size - 2);

    // The parser: whole vs. split at every `step` bytes vs. one byte at a time.
    std::vector<outcome> whole = parse_stream(stream, 0, lim);
    CHECK_INV(parse_stream(stream, step, lim) == whole);
    if (stream.size() <= 512) {
        CHECK_INV(parse_stream(stream, 1, lim) == whole);
    }

    // The chunked decoder, on the raw stream and on the body after a chunked head.
    decoded d = decode(stream, 0);
    CHECK_INV(decode(stream, step) == d);
    if (stream.size() <= 512) {
        CHECK_INV(decode(stream, 1) == d);
    }
    if (!whole.empty() && whole.back().st == request_parser::status::complete &&
        whole.back().chunked) {
        // The walk stopped at this head: its body starts after the heads before it.
        std::size_t off = 0;
        for (const outcome& o : whole) {
            off += o.consumed + (o.chunked ? 0 : static_cast<std::size_t>(o.length));
        }
        if (off <= stream.size()) {
            std::string_view body = stream.substr(off);
            CHECK_INV(decode(body, step) == decode(body, 0));
        }
    }

    // Round trip: the stream, encoded as chunks, decodes back to itself.
    std::string enc = encode_chunked(stream, stream.substr(0, std::min<std::size_t>(8, size - 2)));
    decoded rt = decode(enc, step);
    CHECK_INV(rt.st == chunked_decoder::status::done);
    CHECK_INV(rt.data == stream);
    CHECK_INV(rt.consumed == enc.size());
    return 0;
}
