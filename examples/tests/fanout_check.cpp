// Runs examples/fanout (its path comes in FANOUT) and checks what it reports: the fastest
// upstream wins, the others are canceled (their calls and their servers' handlers), and a
// deadline that passes first ends every call with deadline_exceeded.

#include "child_process.hpp"

#include <doctest/doctest.h>

#include <cstdlib>
#include <string>

namespace {

const char* fanout_path() {
    const char* path = std::getenv("FANOUT");
    REQUIRE(path != nullptr);
    return path;
}

bool has(const std::string& out, const std::string& what) {
    return out.find(what) != std::string::npos;
}

} // namespace

TEST_CASE("fanout: the fastest upstream wins and the losers are canceled; then a deadline wins") {
    check::child_process c(fanout_path(), {});
    int status = c.wait();
    const std::string& out = c.output();
    INFO(out);
    CHECK(status == 0);
    // First scenario: 9000, 20 and 6000 ms under 5000 ms.
    CHECK(has(out, "upstream 1 (20 ms): answered \"upstream 1 slept 20 ms\""));
    CHECK(has(out, "upstream 0 (9000 ms): canceled after "));
    CHECK(has(out, "upstream 2 (6000 ms): canceled after "));
    CHECK(has(out, "; its server's handler: canceled\n"));
    CHECK(has(out, "result: upstream 1 won after "));
    // Second scenario: 9000 and 6000 ms under 50 ms.
    CHECK(has(out, "upstream 0 (9000 ms): deadline_exceeded after "));
    CHECK(has(out, "upstream 1 (6000 ms): deadline_exceeded after "));
    CHECK(has(out, "result: deadline_exceeded after "));
    CHECK(has(out, "\nok\n"));
}

TEST_CASE("fanout with arguments: one scenario") {
    check::child_process c(fanout_path(),
                           {"--deadline", "100", "--latency", "6000", "--latency", "7000"});
    int status = c.wait();
    INFO(c.output());
    CHECK(status == 0);
    CHECK(has(c.output(), "result: deadline_exceeded after "));

    check::child_process bad(fanout_path(), {"--latency"});
    CHECK(bad.wait() == 2);
}
