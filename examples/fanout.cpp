// fanout: ask several upstreams at once under a deadline, keep the first answer, cancel the rest.
//
//   fanout
//       Runs two scenarios and exits 0 if both behaved as described below.
//   fanout --deadline MS --latency MS [--latency MS]...
//       Runs one scenario: one upstream per --latency, under a deadline of MS.
//
// Each upstream is a tether HTTP server on 127.0.0.1 whose handler sleeps its latency under
// the request's context, then answers. The fan-out asks every upstream with http::client
// under `when_any`, all of it under `with_timeout(deadline, ...)`:
//
// - the fastest upstream answers first and wins; `when_any` cancels the others' context, so
//   their reads in flight are canceled in the kernel and their `client.get` returns
//   `errc::canceled` right away, long before their upstream would have answered; each
//   upstream's server sees its client go away and its handler's sleep is canceled too;
// - if the deadline passes first, every request returns `errc::deadline_exceeded`.
//
// The default scenarios: upstreams of 9000, 20 and 6000 ms under a 5000 ms deadline (the
// 20 ms one wins, the other two are canceled), then 9000 and 6000 ms under 50 ms (the
// deadline wins). One line per upstream and one result line per scenario:
//
//   upstream 1 (20 ms): answered "upstream 1 slept 20 ms" after 21 ms
//   upstream 0 (9000 ms): canceled after 21 ms; its server's handler: canceled
//   result: upstream 1 won after 22 ms
//   result: deadline_exceeded after 50 ms

#include "context/errc.hpp"
#include "net/address.hpp"
#include "net/http/client.hpp"
#include "net/http/server.hpp"
#include "runtime/loop.hpp"
#include "runtime/sleep.hpp"
#include "runtime/spawn.hpp"
#include "runtime/task.hpp"
#include "runtime/when_any.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

using namespace tether;
using namespace std::chrono_literals;
using std::chrono::milliseconds;
using steady = std::chrono::steady_clock;

namespace {

long long ms_since(steady::time_point t0) {
    return std::chrono::duration_cast<milliseconds>(steady::now() - t0).count();
}

std::string error_name(std::error_code e) {
    if (e == errc::canceled) {
        return "canceled";
    }
    if (e == errc::deadline_exceeded) {
        return "deadline_exceeded";
    }
    return e.message();
}

// What one upstream's server saw: how its handler ended.
struct server_side {
    bool ended = false;
    std::error_code error; // empty: it answered
};

// The upstream's handler: sleeps `latency` under the request's context, then answers. When
// the client goes away the request's context is canceled and the sleep returns its error.
task<void> answer(int index, milliseconds latency, server_side* seen, http::response_writer& w) {
    result<void> slept = co_await sleep_for(latency);
    seen->ended = true;
    if (!slept) {
        seen->error = slept.error();
        co_return;
    }
    w.write(fmt::format("upstream {} slept {} ms", index, latency.count()));
}

struct upstream {
    milliseconds latency{};
    server_side seen;
    http::serve_mux mux;
    std::unique_ptr<http::server> srv;
    std::string url;
    join_handle<result<void>> serving;
};

// What the fan-out's call to one upstream returned, and when.
struct call_side {
    bool ended = false;
    std::error_code error;
    std::string body;
    long long after_ms = 0;
};

// One upstream call. The winner's value is kept by when_any; the losers' is dropped, so each
// call also reports what happened to it.
task<result<std::string>> ask(http::client* client, std::string url, steady::time_point t0,
                              call_side* out) {
    result<http::response> r = co_await client->get(std::move(url));
    out->ended = true;
    out->after_ms = ms_since(t0);
    if (!r) {
        out->error = r.error();
        co_return r.error();
    }
    out->body = r->body;
    co_return std::move(r->body);
}

// Runs one fan-out; returns true if it behaved as the top of this file says.
task<bool> scenario(std::vector<milliseconds> latencies, milliseconds deadline) {
    fmt::print("== {} upstreams (", latencies.size());
    for (std::size_t i = 0; i < latencies.size(); ++i) {
        fmt::print("{}{} ms", i == 0 ? "" : ", ", latencies[i].count());
    }
    fmt::print(") under a {} ms deadline\n", deadline.count());

    std::vector<std::unique_ptr<upstream>> ups;
    for (std::size_t i = 0; i < latencies.size(); ++i) {
        auto u = std::make_unique<upstream>();
        u->latency = latencies[i];
        upstream* raw = u.get();
        u->mux.handle("GET /", [raw, i](http::request&, http::response_writer& w) {
            return answer(static_cast<int>(i), raw->latency, &raw->seen, w);
        });
        u->srv = std::make_unique<http::server>(u->mux.as_handler());
        if (auto r = u->srv->listen(net::address::ipv4_loopback(0)); !r) {
            fmt::print(stderr, "fanout: listen: {}\n", r.error().message());
            co_return false;
        }
        u->url = fmt::format("http://{}/", *u->srv->local_addr());
        u->serving = co_await spawn(u->srv->serve());
        ups.push_back(std::move(u));
    }

    // The fan-out: every call under when_any, all of it under the deadline.
    http::client client;
    std::vector<call_side> calls(ups.size());
    auto t0 = steady::now();
    std::vector<task<result<std::string>>> asks;
    for (std::size_t i = 0; i < ups.size(); ++i) {
        asks.push_back(ask(&client, ups[i]->url, t0, &calls[i]));
    }
    auto first = when_any(std::move(asks));
    auto bounded = with_timeout(deadline, std::move(first));
    result<std::pair<std::size_t, result<std::string>>> r = co_await std::move(bounded);
    long long took = ms_since(t0);

    // The servers' handlers learn that their client went away from the kernel (the
    // connection's hangup): give them a moment.
    for (int i = 0; i < 2000; ++i) {
        bool all = std::all_of(ups.begin(), ups.end(), [](const auto& u) { return u->seen.ended; });
        if (all) {
            break;
        }
        (void)co_await sleep_for(5ms);
    }

    // Expected: the fastest upstream wins if it is faster than the deadline.
    auto fastest = static_cast<std::size_t>(std::min_element(latencies.begin(), latencies.end()) -
                                            latencies.begin());
    bool deadline_wins = latencies[fastest] >= deadline;
    bool ok = r.has_value();
    for (std::size_t i = 0; i < ups.size(); ++i) {
        const call_side& c = calls[i];
        const server_side& s = ups[i]->seen;
        bool winner = !deadline_wins && i == fastest;
        if (!c.error) {
            fmt::print("upstream {} ({} ms): answered \"{}\" after {} ms\n", i,
                       latencies[i].count(), c.body, c.after_ms);
        } else {
            fmt::print("upstream {} ({} ms): {} after {} ms; its server's handler: {}\n", i,
                       latencies[i].count(), error_name(c.error), c.after_ms,
                       !s.ended  ? "still running"
                       : s.error ? error_name(s.error)
                                 : "answered");
        }
        if (winner) {
            ok = ok && c.ended && !c.error && s.ended && !s.error;
        } else {
            // A loser's call ends when the winner (or the deadline) does, well before its
            // upstream would have answered, and its upstream's handler is canceled.
            std::error_code want = deadline_wins ? errc::deadline_exceeded : errc::canceled;
            ok = ok && c.ended && c.error == want && c.after_ms < latencies[i].count() && s.ended &&
                 s.error == errc::canceled;
        }
    }
    if (r && r->second) {
        fmt::print("result: upstream {} won after {} ms\n", r->first, took);
        ok = ok && !deadline_wins && r->first == fastest;
    } else if (r) {
        fmt::print("result: {} after {} ms\n", error_name(r->second.error()), took);
        ok = ok && deadline_wins && r->second.error() == errc::deadline_exceeded;
    } else {
        fmt::print("result: {} after {} ms\n", error_name(r.error()), took);
    }

    for (auto& u : ups) {
        auto stopping = u->srv->shutdown();
        (void)co_await std::move(stopping);
        (void)co_await u->serving;
    }
    std::fflush(stdout);
    co_return ok;
}

task<int> run_all(std::vector<milliseconds> latencies, std::optional<milliseconds> deadline) {
    bool ok = true;
    if (deadline) {
        auto one = scenario(std::move(latencies), *deadline);
        ok = co_await std::move(one);
    } else {
        // Named first, and awaited alone: GCC 12 mishandles temporaries around a co_await that
        // suspends.
        auto fastest_wins = scenario({9000ms, 20ms, 6000ms}, 5000ms);
        ok = co_await std::move(fastest_wins);
        auto deadline_wins = scenario({9000ms, 6000ms}, 50ms);
        bool ok2 = co_await std::move(deadline_wins);
        ok = ok && ok2;
    }
    fmt::print("{}\n", ok ? "ok" : "FAILED");
    co_return ok ? EXIT_SUCCESS : EXIT_FAILURE;
}

} // namespace

int main(int argc, char** argv) {
    std::vector<milliseconds> latencies;
    std::optional<milliseconds> deadline;
    for (int i = 1; i < argc; ++i) {
        std::string_view a = argv[i];
        if (a == "--latency" && i + 1 < argc) {
            latencies.emplace_back(std::atoi(argv[++i]));
        } else if (a == "--deadline" && i + 1 < argc) {
            deadline = milliseconds(std::atoi(argv[++i]));
        } else {
            deadline.reset();
            latencies.clear();
            break;
        }
    }
    if (argc > 1 && (!deadline || latencies.empty())) {
        fmt::print(stderr, "usage: fanout [--deadline MS --latency MS [--latency MS]...]\n");
        return 2;
    }
    return tether::run(run_all(std::move(latencies), deadline));
}
