// http_parser_bench: the HTTP/1.1 request parser alone (net/http/parser.hpp), on heads that
// arrived whole, as a table of ns per head.
//
//   http_parser_bench                 every case, 5 rounds of about 0.2 s each
//   http_parser_bench --rounds N      N rounds: the table shows the median and the spread
//   http_parser_bench --heads N       one round of exactly N heads per case, no table (for
//                                     callgrind: Ir per head = the parser's Ir / N)
//   http_parser_bench --case NAME     only the case NAME ("wrk", "curl", "browser", "pipelined")
//
// The cases: wrk's default request (what benches/run.py sends, one header), curl's (three),
// a browser's (eleven, ~500 bytes), and wrk's pipelined 16 to a buffer ("pipelined"), parsed
// one after another from the same buffer as the server does.

#include "net/http/parser.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

using namespace tether;

namespace {

struct bench_case {
    const char* name;
    std::string bytes; // one or more heads, back to back
};

std::vector<bench_case> cases() {
    const std::string wrk = "GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n";
    std::string pipelined;
    for (int i = 0; i < 16; ++i) {
        pipelined += wrk;
    }
    return {
        {"wrk", wrk},
        {"curl", "GET /index.html HTTP/1.1\r\nHost: example.com\r\nUser-Agent: curl/7.88.1\r\n"
                 "Accept: */*\r\n\r\n"},
        {"browser",
         "GET /static/css/site.css?v=20240101 HTTP/1.1\r\n"
         "Host: www.example.com\r\n"
         "Connection: keep-alive\r\n"
         "sec-ch-ua: \"Chromium\";v=\"119\", \"Not?A_Brand\";v=\"24\"\r\n"
         "User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
         "Chrome/119.0.0.0 Safari/537.36\r\n"
         "Accept: text/css,*/*;q=0.1\r\n"
         "Sec-Fetch-Site: same-origin\r\n"
         "Sec-Fetch-Mode: no-cors\r\n"
         "Sec-Fetch-Dest: style\r\n"
         "Referer: https://www.example.com/\r\n"
         "Accept-Encoding: gzip, deflate, br\r\n"
         "Accept-Language: en-US,en;q=0.9\r\n\r\n"},
        {"pipelined", pipelined},
    };
}

// Parses every head of `bytes` once; returns how many, or 0 if one failed.
[[gnu::noinline]] std::size_t parse_all(http::request_parser& p, http::request_head& head,
                                        std::string_view bytes) {
    std::size_t heads = 0;
    while (!bytes.empty()) {
        p.reset();
        if (p.parse(bytes, head) != http::request_parser::status::complete) {
            return 0;
        }
        bytes.remove_prefix(p.consumed());
        ++heads;
    }
    return heads;
}

// Parses `c` `reps` times; returns the heads parsed, or 0 on a failure.
std::size_t run(const bench_case& c, std::size_t reps) {
    http::request_parser p;
    http::request_head head;
    std::size_t heads = 0;
    for (std::size_t i = 0; i < reps; ++i) {
        std::size_t n = parse_all(p, head, c.bytes);
        if (n == 0) {
            return 0;
        }
        heads += n;
    }
    return heads;
}

int usage() {
    fmt::print(stderr, "usage: http_parser_bench [--rounds N | --heads N] [--case NAME]\n");
    return 2;
}

} // namespace

int main(int argc, char** argv) {
    int rounds = 5;
    std::uint64_t exact_heads = 0;
    std::string_view only;
    for (int i = 1; i < argc; ++i) {
        std::string_view a = argv[i];
        if (a == "--rounds" && i + 1 < argc) {
            rounds = std::atoi(argv[++i]);
        } else if (a == "--case" && i + 1 < argc) {
            only = argv[++i];
        } else if (a == "--heads" && i + 1 < argc) {
            exact_heads = std::strtoull(argv[++i], nullptr, 10);
        } else {
            return usage();
        }
        if (rounds <= 0) {
            return usage();
        }
    }
    std::vector<bench_case> all = cases();
    if (!only.empty()) {
        std::erase_if(all, [&](const bench_case& c) { return c.name != only; });
        if (all.empty()) {
            return usage();
        }
    }
    if (exact_heads != 0) {
        for (const bench_case& c : all) {
            const std::size_t per = parse_all(*std::make_unique<http::request_parser>(),
                                              *std::make_unique<http::request_head>(), c.bytes);
            if (per == 0 || run(c, exact_heads / per) == 0) {
                fmt::print(stderr, "http_parser_bench: {}: the parser refused it\n", c.name);
                return 1;
            }
        }
        return 0;
    }
    using clock = std::chrono::steady_clock;
    fmt::print("{:<20} {:>7} {:>11} {:>20}\n", "case", "bytes", "ns/head", "min..max");
    for (const bench_case& c : all) {
        // Reps for about 0.2 s, from a first short run.
        std::size_t reps = 1000;
        auto t0 = clock::now();
        if (run(c, reps) == 0) {
            fmt::print(stderr, "http_parser_bench: {}: the parser refused it\n", c.name);
            return 1;
        }
        const double first = std::chrono::duration<double>(clock::now() - t0).count();
        reps = std::max<std::size_t>(1000, static_cast<std::size_t>(reps * 0.2 / first));
        std::vector<double> ns;
        std::size_t heads = 0;
        for (int r = 0; r < rounds; ++r) {
            t0 = clock::now();
            heads = run(c, reps);
            const double s = std::chrono::duration<double>(clock::now() - t0).count();
            ns.push_back(s * 1e9 / static_cast<double>(heads));
        }
        std::sort(ns.begin(), ns.end());
        fmt::print("{:<20} {:>7} {:>11.1f} {:>20}\n", c.name, c.bytes.size() * reps / heads,
                   ns[ns.size() / 2], fmt::format("{:.1f}..{:.1f}", ns.front(), ns.back()));
    }
    return 0;
}
