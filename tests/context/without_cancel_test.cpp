#include "context/manual_clock.hpp"
#include "context/with_cancel.hpp"
#include "context/with_deadline.hpp"
#include "context/with_value.hpp"
#include "context/without_cancel.hpp"

#include <doctest/doctest.h>

#include <chrono>
#include <string>
#include <system_error>

using namespace std::chrono_literals;

namespace {

const tether::context_key<std::string> request_id{"request"};
const std::error_code finished_early = std::make_error_code(std::errc::operation_canceled);

} // namespace

TEST_CASE("without_cancel keeps the parent's values") {
    auto [parent, cancel] = tether::with_cancel(tether::background());
    auto v = tether::with_value(parent, request_id, std::string("r-1"));
    auto ctx = tether::without_cancel(v);
    REQUIRE(ctx.value(request_id) != nullptr);
    CHECK(*ctx.value(request_id) == "r-1");
    cancel();
    REQUIRE(ctx.value(request_id) != nullptr);
    CHECK(*ctx.value(request_id) == "r-1");
}

TEST_CASE("without_cancel is never done, even when its parent is canceled") {
    // Go's TestWithoutCancel.
    auto [parent, cancel] = tether::with_cancel_cause(tether::background());
    auto ctx = tether::without_cancel(parent);
    CHECK(ctx.is_never_done());
    CHECK_FALSE(ctx.done().can_be_done());
    cancel(finished_early);
    CHECK(parent.done());
    CHECK_FALSE(ctx.done());
    CHECK_FALSE(ctx.err());
    SUBCASE("its cause is empty") {
        CHECK_FALSE(tether::cause(ctx));
    }
    SUBCASE("made after the parent was canceled") {
        auto late = tether::without_cancel(parent);
        CHECK_FALSE(late.err());
        CHECK_FALSE(tether::cause(late));
    }
}

TEST_CASE("without_cancel drops the parent's deadline but keeps its clock") {
    tether::manual_clock clk;
    auto [parent, cancel] = tether::with_timeout(tether::background(clk), 1s);
    auto ctx = tether::without_cancel(parent);
    CHECK_FALSE(ctx.has_deadline());
    CHECK_FALSE(ctx.deadline().has_value());
    CHECK(&ctx.clock() == &clk);
    clk.advance(1s);
    CHECK(parent.err() == tether::errc::deadline_exceeded);
    CHECK_FALSE(ctx.err());
    CHECK_FALSE(tether::cause(ctx));
}

TEST_CASE("a child of without_cancel is canceled only by its own handle or deadline") {
    tether::manual_clock clk;
    auto [parent, cancel_parent] = tether::with_cancel(tether::background(clk));
    auto ctx = tether::without_cancel(parent);
    auto [child, cancel_child] = tether::with_timeout(ctx, 1s);
    CHECK(tether::detail::registration_count(parent) == 0); // not registered on the parent
    cancel_parent();
    CHECK_FALSE(child.done());
    SUBCASE("by its handle") {
        cancel_child();
        CHECK(child.err() == tether::errc::canceled);
    }
    SUBCASE("by its deadline") {
        clk.advance(1s);
        CHECK(child.err() == tether::errc::deadline_exceeded);
    }
}

TEST_CASE("a child of without_cancel of a canceled parent is not born canceled") {
    auto [parent, cancel] = tether::with_cancel(tether::background());
    cancel();
    auto [child, cancel_child] = tether::with_cancel(tether::without_cancel(parent));
    CHECK_FALSE(child.done());
    CHECK_FALSE(tether::cause(child));
}

TEST_CASE("without_cancel of background behaves as background") {
    auto ctx = tether::without_cancel(tether::background());
    CHECK_FALSE(ctx.err());
    CHECK(ctx.is_never_done());
    CHECK_FALSE(ctx.has_deadline());
    CHECK(ctx.value(request_id) == nullptr);
    CHECK(&ctx.clock() == &tether::real_clock());
}
