#include "context/format.hpp"
#include "context/manual_clock.hpp"
#include "context/with_cancel.hpp"
#include "context/with_deadline.hpp"
#include "context/with_value.hpp"
#include "context/without_cancel.hpp"

#include <doctest/doctest.h>
#include <fmt/format.h>

#include <array>
#include <chrono>
#include <string>

using namespace std::chrono_literals;

namespace {

struct user_id {
    std::string value;
};

const tether::context_key<std::string> user_key{"user"};
const tether::context_key<int> count_key{"count"};
const tether::context_key<std::array<char, 12>> opaque_key{"opaque"};
const tether::context_key<int> unnamed_key;

bool starts_with(const std::string& s, const std::string& prefix) {
    return s.compare(0, prefix.size(), prefix) == 0;
}

bool ends_with(const std::string& s, const std::string& suffix) {
    return s.size() >= suffix.size() &&
           s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

} // namespace

TEST_CASE("errc formats as Go's error strings") {
    CHECK(fmt::format("{}", tether::errc::canceled) == "context canceled");
    CHECK(fmt::format("{}", tether::errc::deadline_exceeded) == "context deadline exceeded");
    CHECK(tether::to_string(tether::errc::canceled) == "context canceled");
    CHECK(tether::to_string(tether::errc::deadline_exceeded) == "context deadline exceeded");
}

TEST_CASE("errc formatting honours string format specs") {
    CHECK(fmt::format("[{:>18}]", tether::errc::canceled) == "[  context canceled]");
    CHECK(fmt::format("[{:<17}]", tether::errc::canceled) == "[context canceled ]");
}

TEST_CASE("an errc value outside the enumeration formats as unknown") {
    CHECK(fmt::format("{}", static_cast<tether::errc>(77)) == "unknown tether error");
}

TEST_CASE("roots print as Go's") {
    tether::manual_clock clk;
    CHECK(tether::to_string(tether::background()) == "context.Background");
    CHECK(tether::to_string(tether::todo()) == "context.TODO");
    CHECK(tether::to_string(tether::background(clk)) == "context.Background");
}

TEST_CASE("a chain prints root first, one link per derived context") {
    // Go's TestString, with tether's spellings of values.
    auto [c1, cancel1] = tether::with_cancel(tether::background());
    CHECK(tether::to_string(c1) == "context.Background.WithCancel");
    auto c2 = tether::with_value(c1, user_key, std::string("ada"));
    CHECK(tether::to_string(c2) == "context.Background.WithCancel.WithValue(user, ada)");
    auto c3 = tether::with_value(c2, count_key, 42);
    CHECK(tether::to_string(c3) ==
          "context.Background.WithCancel.WithValue(user, ada).WithValue(count, 42)");
    auto c4 = tether::without_cancel(c3);
    CHECK(ends_with(tether::to_string(c4), ".WithValue(count, 42).WithoutCancel"));
    auto [c5, cancel5] = tether::with_cancel(tether::todo());
    CHECK(tether::to_string(c5) == "context.TODO.WithCancel");
}

TEST_CASE("values that can't be formatted print their size, and unnamed keys print as key") {
    auto c1 = tether::with_value(tether::background(), opaque_key, std::array<char, 12>{});
    CHECK(tether::to_string(c1) == "context.Background.WithValue(opaque, <12 bytes>)");
    auto c2 = tether::with_value(tether::background(), unnamed_key, 7);
    CHECK(tether::to_string(c2) == "context.Background.WithValue(key, 7)");
}

TEST_CASE("a deadline prints as WithDeadline with the time left, and its children as WithCancel") {
    tether::manual_clock clk;
    auto [ctx, cancel] = tether::with_timeout(tether::background(clk), 1s);
    std::string s = tether::to_string(ctx);
    CHECK(starts_with(s, "context.Background.WithDeadline("));
    CHECK(s.find(" [") != std::string::npos);
    CHECK(ends_with(s, "])"));
    auto [child, cancel_child] = tether::with_cancel(ctx);
    CHECK(tether::to_string(child) == s + ".WithCancel");
    // A later deadline than the parent's is no deadline of its own (Go prints it the same).
    auto [later, cancel_later] = tether::with_timeout(ctx, 1h);
    CHECK(tether::to_string(later) == s + ".WithCancel");
    // An earlier one is.
    auto [earlier, cancel_earlier] = tether::with_timeout(ctx, 1ms);
    CHECK(starts_with(tether::to_string(earlier), s + ".WithDeadline("));
}

TEST_CASE("a deadline prints as Go prints it: the time, then the time left in brackets") {
    tether::manual_clock clk;
    // A manual clock has no wall time: its reading is printed as Go's monotonic reading.
    auto [ctx, cancel] = tether::with_timeout(tether::background(clk), 1s);
    CHECK(tether::to_string(ctx) == "context.Background.WithDeadline(m=+86401.000000000 [1s])");
    clk.advance(250ms);
    CHECK(tether::to_string(ctx) == "context.Background.WithDeadline(m=+86401.000000000 [750ms])");
    // A tie with the parent's deadline is a deadline of the child's own, as Go's timerCtx.
    auto [tie, cancel_tie] = tether::with_deadline(ctx, *ctx.deadline());
    CHECK(tether::to_string(tie) == tether::to_string(ctx) + ".WithDeadline(m=+86401.000000000 "
                                                             "[750ms])");
    clk.advance(1s);
    CHECK(tether::to_string(ctx) == "context.Background.WithDeadline(m=+86401.000000000 [-250ms])");
    // A child of a done parent still prints its deadline.
    auto [late, cancel_late] = tether::with_deadline(ctx, clk.now() - 1h);
    CHECK(ends_with(tether::to_string(late), ".WithDeadline(m=+82801.250000000 [-1h0m0s])"));
}

TEST_CASE("on the real clock a deadline prints its wall time in UTC, as Go's Time.String()") {
    auto [ctx, cancel] = tether::with_timeout(tether::background(), 1h);
    std::string s = tether::to_string(ctx);
    INFO(s);
    // "context.Background.WithDeadline(2026-11-26 02:10:00.123456789 +0000 UTC m=+9.5 [59m59.9s])"
    const std::string head = "context.Background.WithDeadline(";
    REQUIRE(starts_with(s, head));
    REQUIRE(s.size() > head.size() + 19);
    std::string date = s.substr(head.size(), 19);
    for (std::size_t i = 0; i < date.size(); ++i) {
        char ch = date[i];
        if (i == 4 || i == 7) {
            CHECK(ch == '-');
        } else if (i == 10) {
            CHECK(ch == ' ');
        } else if (i == 13 || i == 16) {
            CHECK(ch == ':');
        } else {
            CHECK((ch >= '0' && ch <= '9'));
        }
    }
    CHECK(s.find(" +0000 UTC m=+") != std::string::npos);
    CHECK(s.find(" [59m") != std::string::npos);
    CHECK(ends_with(s, "s])"));
}

TEST_CASE("durations print as Go's time.Duration.String()") {
    auto go = [](std::chrono::nanoseconds d) {
        std::string out;
        tether::detail::append_go_duration(d, out);
        return out;
    };
    CHECK(go(0ns) == "0s");
    CHECK(go(1ns) == "1ns");
    CHECK(go(999ns) == "999ns");
    CHECK(go(1100ns) == "1.1\xc2\xb5s");
    CHECK(go(2200us) == "2.2ms");
    CHECK(go(999'999'999ns) == "999.999999ms");
    CHECK(go(1s) == "1s");
    CHECK(go(3300ms) == "3.3s");
    CHECK(go(1min) == "1m0s");
    CHECK(go(4min + 5s + 1ms) == "4m5.001s");
    CHECK(go(8h) == "8h0m0s");
    CHECK(go(5h + 6min + 7s + 1ns) == "5h6m7.000000001s");
    CHECK(go(-1ns) == "-1ns");
    CHECK(go(-90s) == "-1m30s");
    CHECK(go(std::chrono::nanoseconds::min()) == "-2562047h47m16.854775808s");
}

TEST_CASE("fmt formats a context as its chain, honouring string format specs") {
    auto [ctx, cancel] = tether::with_cancel(tether::background());
    CHECK(fmt::format("{}", ctx) == tether::to_string(ctx));
    CHECK(fmt::format("{:>20}", tether::background()) == "  context.Background");
}

TEST_CASE("printing a context doesn't depend on whether it is done") {
    auto [ctx, cancel] = tether::with_cancel(tether::background());
    std::string before = tether::to_string(ctx);
    cancel();
    CHECK(tether::to_string(ctx) == before);
}

TEST_CASE("a deep chain prints without recursing") {
    tether::context ctx = tether::background();
    for (int i = 0; i < 200'000; ++i) {
        ctx = tether::with_value(ctx, count_key, i);
    }
    std::string s = tether::to_string(ctx);
    CHECK(starts_with(s, "context.Background.WithValue(count, 0).WithValue(count, 1)."));
    CHECK(ends_with(s, ".WithValue(count, 199999)"));
}
