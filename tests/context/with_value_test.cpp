#include "context/manual_clock.hpp"
#include "context/with_cancel.hpp"
#include "context/with_deadline.hpp"
#include "context/with_value.hpp"
#include "context/without_cancel.hpp"
#include "tests/support/test_util.hpp"

#include <doctest/doctest.h>

#include <chrono>
#include <memory>
#include <string>
#include <string_view>
#include <type_traits>

using namespace std::chrono_literals;
using tether::test::counted;

namespace {

struct user_id {
    std::string value;
};

const tether::context_key<std::string> k1{"k1"};
const tether::context_key<std::string> k2{"k2"};
const tether::context_key<std::string> k3{"k3"};
const tether::context_key<user_id> user_key{"user"};

// Returns the value under `key`, or "<missing>".
std::string lookup(const tether::context& ctx, const tether::context_key<std::string>& key) {
    const std::string* v = ctx.value(key);
    return v != nullptr ? *v : "<missing>";
}

} // namespace

TEST_CASE("value returns what with_value stored under the key") {
    auto ctx = tether::with_value(tether::background(), user_key, user_id{"ada"});
    const user_id* u = ctx.value(user_key);
    REQUIRE(u != nullptr);
    CHECK(u->value == "ada");
}

TEST_CASE("a missing key gives null") {
    auto ctx = tether::with_value(tether::background(), k1, std::string("one"));
    CHECK(ctx.value(k2) == nullptr);
    CHECK(tether::background().value(k1) == nullptr);
    CHECK(tether::todo().value(k1) == nullptr);
}

TEST_CASE("lookup walks to the nearest ancestor with the key, and shadowing is downward only") {
    // Go's TestValues.
    auto c0 = tether::background();
    auto c1 = tether::with_value(c0, k1, std::string("c1k1"));
    auto c2 = tether::with_value(c1, k2, std::string("c2k2"));
    auto c3 = tether::with_value(c2, k3, std::string("c3k3"));
    auto c4 = tether::with_value(c3, k1, std::string("c4k1"));
    auto [c5, cancel5] = tether::with_cancel(c4);
    auto c6 = tether::without_cancel(c5);

    CHECK(lookup(c0, k1) == "<missing>");
    CHECK(lookup(c1, k1) == "c1k1");
    CHECK(lookup(c1, k2) == "<missing>");
    CHECK(lookup(c2, k1) == "c1k1");
    CHECK(lookup(c2, k2) == "c2k2");
    CHECK(lookup(c2, k3) == "<missing>");
    CHECK(lookup(c3, k1) == "c1k1");
    CHECK(lookup(c3, k3) == "c3k3");
    CHECK(lookup(c4, k1) == "c4k1"); // shadows c1's
    CHECK(lookup(c4, k2) == "c2k2");
    CHECK(lookup(c5, k1) == "c4k1"); // through a cancel link
    CHECK(lookup(c6, k3) == "c3k3"); // and a without_cancel link
    CHECK(lookup(c3, k1) == "c1k1"); // the ancestor is unchanged
}

TEST_CASE("two keys of the same type and name never collide") {
    static const tether::context_key<int> a{"id"};
    static const tether::context_key<int> b{"id"};
    auto ctx = tether::with_value(tether::background(), a, 1);
    CHECK(ctx.value(b) == nullptr);
    ctx = tether::with_value(ctx, b, 2);
    REQUIRE(ctx.value(a) != nullptr);
    REQUIRE(ctx.value(b) != nullptr);
    CHECK(*ctx.value(a) == 1);
    CHECK(*ctx.value(b) == 2);
}

TEST_CASE("keys of different types never collide") {
    static const tether::context_key<int> as_int{"k"};
    static const tether::context_key<long> as_long{"k"};
    auto ctx = tether::with_value(tether::background(), as_int, 1);
    CHECK(ctx.value(as_long) == nullptr);
}

TEST_CASE("keys are neither copyable nor assignable, so a key is one object") {
    static_assert(!std::is_copy_constructible_v<tether::context_key<int>>);
    static_assert(!std::is_copy_assignable_v<tether::context_key<int>>);
    constexpr tether::context_key<int> unnamed;
    static_assert(unnamed.name() == "key");
    CHECK(k1.name() == "k1");
}

TEST_CASE("a value can be of a move-only type, stored by moving") {
    static const tether::context_key<std::unique_ptr<int>> key{"p"};
    auto ctx = tether::with_value(tether::background(), key, std::make_unique<int>(5));
    const std::unique_ptr<int>* p = ctx.value(key);
    REQUIRE(p != nullptr);
    REQUIRE(*p != nullptr);
    CHECK(**p == 5);
}

TEST_CASE("a value converts to the key's type") {
    auto ctx = tether::with_value(tether::background(), k1, "literal");
    CHECK(lookup(ctx, k1) == "literal");
}

TEST_CASE("the value lives as long as any copy of its context, and no longer") {
    static const tether::context_key<counted> key{"counted"};
    counted::reset();
    const counted* seen = nullptr;
    {
        tether::context keep;
        {
            auto ctx = tether::with_value(tether::background(), key, counted{});
            auto [child, cancel] = tether::with_cancel(ctx);
            keep = child;
            seen = ctx.value(key);
        }
        CHECK(counted::alive() == 1);
        CHECK(keep.value(key) == seen);
    }
    CHECK(counted::alive() == 0);
}

TEST_CASE("a value below a cancel context is canceled with it and keeps its deadline") {
    tether::manual_clock clk;
    auto [ctx, cancel] = tether::with_timeout(tether::background(clk), 1s);
    auto v = tether::with_value(ctx, k1, std::string("x"));
    CHECK(v.deadline() == ctx.deadline());
    CHECK(&v.clock() == &clk);
    CHECK_FALSE(v.done());
    clk.advance(1s);
    CHECK(v.err() == tether::errc::deadline_exceeded);
    CHECK(tether::cause(v) == tether::errc::deadline_exceeded);
    CHECK(lookup(v, k1) == "x");
}

TEST_CASE("with_value on a done parent gives a done context") {
    auto [ctx, cancel] = tether::with_cancel(tether::background());
    cancel();
    auto v = tether::with_value(ctx, k1, std::string("x"));
    CHECK(v.err() == tether::errc::canceled);
}

TEST_CASE("a deep chain of values is looked up and destroyed without recursing per link") {
    static const tether::context_key<int> depth_key{"depth"};
    static const tether::context_key<int> bottom_key{"bottom"};
    counted::reset();
    {
        auto ctx = tether::with_value(tether::background(), bottom_key, -1);
        for (int i = 0; i < 200'000; ++i) {
            ctx = tether::with_value(ctx, depth_key, i);
        }
        REQUIRE(ctx.value(depth_key) != nullptr);
        CHECK(*ctx.value(depth_key) == 199'999);
        REQUIRE(ctx.value(bottom_key) != nullptr);
        CHECK(*ctx.value(bottom_key) == -1);
    } // 200'001 nodes released here, iteratively
    static const tether::context_key<counted> ck{"c"};
    {
        auto ctx = tether::with_value(tether::background(), ck, counted{});
        for (int i = 0; i < 100'000; ++i) {
            ctx = tether::with_value(ctx, ck, counted{});
        }
        CHECK(counted::alive() == 100'001);
    }
    CHECK(counted::alive() == 0);
}
