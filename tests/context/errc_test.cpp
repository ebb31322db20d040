#include "context/errc.hpp"
#include "context/with_cancel.hpp"
#include "context/with_deadline.hpp"

#include <doctest/doctest.h>

#include <chrono>
#include <string>
#include <system_error>

using namespace std::chrono_literals;

TEST_CASE("errc values are error codes in tether's category") {
    std::error_code c = tether::errc::canceled;
    CHECK(&c.category() == &tether::tether_category());
    CHECK(c.value() == 1);
    CHECK(std::string(tether::tether_category().name()) == "tether");
    CHECK(tether::make_error_code(tether::errc::deadline_exceeded).value() == 2);
    CHECK(static_cast<bool>(c));
}

TEST_CASE("errc messages are Go's error strings") {
    CHECK(std::error_code(tether::errc::canceled).message() == "context canceled");
    CHECK(std::error_code(tether::errc::deadline_exceeded).message() ==
          "context deadline exceeded");
    CHECK(tether::tether_category().message(99) == "unknown tether error");
}

TEST_CASE("an errc compares equal only to itself") {
    std::error_code c = tether::errc::canceled;
    CHECK(c == tether::errc::canceled);
    CHECK(c != tether::errc::deadline_exceeded);
    CHECK(c != std::error_code(1, std::generic_category()));
    CHECK(std::error_code{} != tether::errc::canceled);
}

TEST_CASE("canceled is an operation_canceled and deadline_exceeded is a timed_out") {
    // Go's TestDeadlineExceededSupportsTimeout: a deadline is recognisably a timeout.
    CHECK(std::error_code(tether::errc::canceled) == std::errc::operation_canceled);
    CHECK(std::error_code(tether::errc::deadline_exceeded) == std::errc::timed_out);
    CHECK(std::error_code(tether::errc::canceled) != std::errc::timed_out);
    CHECK(std::error_code(tether::errc::deadline_exceeded) != std::errc::operation_canceled);
}

TEST_CASE("err() of a done context is one of the two errc values") {
    auto [a, cancel_a] = tether::with_cancel(tether::background());
    cancel_a();
    CHECK(a.err() == tether::errc::canceled);
    auto [b, cancel_b] = tether::with_timeout(tether::background(), -1s);
    CHECK(b.err() == tether::errc::deadline_exceeded);
}
