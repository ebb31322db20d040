#include "context/context.hpp"
#include "context/manual_clock.hpp"
#include "context/with_cancel.hpp"
#include "context/with_deadline.hpp"
#include "context/with_value.hpp"
#include "context/without_cancel.hpp"

#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdlib>
#include <functional>
#include <memory>
#include <new>
#include <optional>
#include <system_error>
#include <thread>
#include <type_traits>
#include <vector>

using namespace std::chrono_literals;

// Counts the heap allocations made on the calling thread, to check "at most one heap
// allocation per derived context" and "no allocation per registration".
namespace {
thread_local std::size_t tls_allocations = 0;
} // namespace

// Not inlined: GCC would otherwise pair the malloc and free it sees through them and warn
// (-Wmismatched-new-delete) about frees of memory from operator new.
[[gnu::noinline]] void* operator new(std::size_t n) {
    ++tls_allocations;
    if (void* p = std::malloc(n == 0 ? 1 : n)) {
        return p;
    }
    throw std::bad_alloc{};
}
[[gnu::noinline]] void operator delete(void* p) noexcept {
    std::free(p);
}
[[gnu::noinline]] void operator delete(void* p, std::size_t) noexcept {
    std::free(p);
}

namespace {

const tether::context_key<int> int_key{"n"};

// Returns how many allocations `fn` makes on this thread.
template <class Fn>
std::size_t allocations_of(Fn fn) {
    std::size_t before = tls_allocations;
    fn();
    return tls_allocations - before;
}

void count_call(void* p) noexcept {
    ++*static_cast<int*>(p);
}

} // namespace

TEST_CASE("background is never done and has no deadline, values or cause") {
    tether::context bg = tether::background();
    CHECK_FALSE(bg.err());
    CHECK_FALSE(bg.is_done());
    CHECK_FALSE(bg.done());
    CHECK_FALSE(bg.done().can_be_done());
    CHECK(bg.is_never_done());
    CHECK_FALSE(bg.deadline().has_value());
    CHECK_FALSE(bg.has_deadline());
    CHECK(bg.value(int_key) == nullptr);
    CHECK_FALSE(tether::cause(bg));
    CHECK(&bg.clock() == &tether::real_clock());
}

TEST_CASE("todo behaves as background but is a different context") {
    tether::context td = tether::todo();
    CHECK_FALSE(td.err());
    CHECK_FALSE(td.done());
    CHECK(td.is_never_done());
    CHECK_FALSE(td.has_deadline());
    CHECK(td.value(int_key) == nullptr);
    CHECK_FALSE(tether::cause(td));
    CHECK(&td.clock() == &tether::real_clock());
    CHECK(td == tether::todo());
    CHECK_FALSE(td == tether::background());
}

TEST_CASE("a default-constructed context is background") {
    CHECK(tether::context{} == tether::background());
    CHECK(tether::background(tether::real_clock()) == tether::background());
}

TEST_CASE("background on a manual clock is inert and reads time from that clock") {
    tether::manual_clock clk;
    tether::context bg = tether::background(clk);
    CHECK(&bg.clock() == &clk);
    CHECK(bg.clock().now() == tether::manual_clock::start());
    CHECK_FALSE(bg.done());
    CHECK(bg.is_never_done());
    CHECK_FALSE(bg.has_deadline());
    clk.advance(1h);
    CHECK_FALSE(bg.err());
    CHECK_FALSE(bg == tether::background());
}

TEST_CASE("copies of a context name the same context and share its state") {
    auto [ctx, cancel] = tether::with_cancel(tether::background());
    tether::context copy = ctx;
    CHECK(copy == ctx);
    tether::context moved = std::move(copy);
    CHECK(moved == ctx);
    cancel();
    CHECK(moved.err() == tether::errc::canceled);
    CHECK(moved.done());
}

TEST_CASE("a copy keeps a context usable after the original and its handle are gone") {
    tether::context keep;
    {
        auto [ctx, cancel] = tether::with_cancel(tether::background());
        keep = tether::with_value(ctx, int_key, 7);
    }
    CHECK(keep.err() == tether::errc::canceled);
    REQUIRE(keep.value(int_key) != nullptr);
    CHECK(*keep.value(int_key) == 7);
}

TEST_CASE("contexts can be shared between threads and read from all of them") {
    tether::manual_clock clk;
    auto [ctx, cancel] = tether::with_timeout(tether::background(clk), 1s);
    auto v = tether::with_value(ctx, int_key, 42);
    std::atomic<int> ok{0};
    {
        std::jthread a([v, &ok] { ok += (*v.value(int_key) == 42 && v.has_deadline()) ? 1 : 0; });
        std::jthread b([v, &ok] { ok += (*v.value(int_key) == 42 && v.has_deadline()) ? 1 : 0; });
    }
    CHECK(ok.load() == 2);
}

TEST_CASE("cause is empty until the context is done") {
    auto [ctx, cancel] = tether::with_cancel_cause(tether::background());
    CHECK_FALSE(tether::cause(ctx));
    cancel(std::make_error_code(std::errc::io_error));
    CHECK(tether::cause(ctx) == std::errc::io_error);
}

TEST_CASE("done signal of a cancelable context is ready once it is done") {
    auto [ctx, cancel] = tether::with_cancel(tether::background());
    tether::done_signal d = ctx.done();
    CHECK(d.can_be_done());
    CHECK(d.state() != nullptr);
    CHECK_FALSE(d.ready());
    CHECK_FALSE(ctx.is_never_done());
    cancel();
    CHECK(d.ready());
    CHECK(static_cast<bool>(d));
}

// ---- cancel_registration -------------------------------------------------------------------

TEST_CASE("cancel_registration runs its callback once when the context is canceled") {
    auto [ctx, cancel] = tether::with_cancel(tether::background());
    int calls = 0;
    tether::cancel_registration reg;
    REQUIRE(reg.arm(ctx, &count_call, &calls));
    CHECK(reg.is_armed());
    CHECK(calls == 0);
    cancel();
    CHECK(calls == 1);
    cancel();
    CHECK(calls == 1);
    reg.disarm();
    CHECK_FALSE(reg.is_armed());
}

TEST_CASE("cancel_registration runs on a descendant's cancellation only through its parent") {
    auto [parent, cancel_parent] = tether::with_cancel(tether::background());
    auto v = tether::with_value(parent, int_key, 1);
    auto [child, cancel_child] = tether::with_cancel(v);
    int on_value = 0;
    int on_child = 0;
    tether::cancel_registration rv;
    tether::cancel_registration rc;
    REQUIRE(rv.arm(v, &count_call, &on_value));
    REQUIRE(rc.arm(child, &count_call, &on_child));
    cancel_child();
    CHECK(on_value == 0);
    CHECK(on_child == 1);
    cancel_parent();
    CHECK(on_value == 1);
    CHECK(on_child == 1);
}

TEST_CASE("cancel_registration::arm on a done context returns false and arms nothing") {
    auto [ctx, cancel] = tether::with_cancel(tether::background());
    cancel();
    int calls = 0;
    tether::cancel_registration reg;
    CHECK_FALSE(reg.arm(ctx, &count_call, &calls));
    CHECK_FALSE(reg.is_armed());
    CHECK(calls == 0);
    CHECK(tether::detail::registration_count(ctx) == 0);
}

TEST_CASE("cancel_registration::arm on a context that is never done arms nothing") {
    int calls = 0;
    tether::cancel_registration reg;
    SUBCASE("background") {
        CHECK(reg.arm(tether::background(), &count_call, &calls));
    }
    SUBCASE("todo") {
        CHECK(reg.arm(tether::todo(), &count_call, &calls));
    }
    SUBCASE("without_cancel of a canceled context") {
        auto [ctx, cancel] = tether::with_cancel(tether::background());
        cancel();
        CHECK(reg.arm(tether::without_cancel(ctx), &count_call, &calls));
    }
    SUBCASE("a null done state") {
        CHECK(reg.arm(tether::background().done().state(), &count_call, &calls));
    }
    CHECK_FALSE(reg.is_armed());
    CHECK(calls == 0);
}

TEST_CASE("cancel_registration arms on the state behind a done signal") {
    auto [ctx, cancel] = tether::with_cancel(tether::background());
    int calls = 0;
    tether::cancel_registration reg;
    REQUIRE(reg.arm(ctx.done().state(), &count_call, &calls));
    cancel();
    CHECK(calls == 1);
    CHECK_FALSE(reg.arm(ctx.done().state(), &count_call, &calls));
}

TEST_CASE("a disarmed registration never runs and is unlinked") {
    auto [ctx, cancel] = tether::with_cancel(tether::background());
    int calls = 0;
    tether::cancel_registration reg;
    REQUIRE(reg.arm(ctx, &count_call, &calls));
    CHECK(tether::detail::registration_count(ctx) == 1);
    reg.disarm();
    CHECK(tether::detail::registration_count(ctx) == 0);
    reg.disarm(); // twice is harmless
    cancel();
    CHECK(calls == 0);
}

TEST_CASE("a destroyed registration never runs") {
    auto [ctx, cancel] = tether::with_cancel(tether::background());
    int calls = 0;
    {
        tether::cancel_registration reg;
        REQUIRE(reg.arm(ctx, &count_call, &calls));
    }
    CHECK(tether::detail::registration_count(ctx) == 0);
    cancel();
    CHECK(calls == 0);
}

TEST_CASE("re-arming a registration first disarms it") {
    auto [a, cancel_a] = tether::with_cancel(tether::background());
    auto [b, cancel_b] = tether::with_cancel(tether::background());
    int calls = 0;
    tether::cancel_registration reg;
    REQUIRE(reg.arm(a, &count_call, &calls));
    REQUIRE(reg.arm(b, &count_call, &calls));
    CHECK(tether::detail::registration_count(a) == 0);
    CHECK(tether::detail::registration_count(b) == 1);
    cancel_a();
    CHECK(calls == 0);
    cancel_b();
    CHECK(calls == 1);
}

TEST_CASE("a registration may be re-armed after its callback has run") {
    auto [a, cancel_a] = tether::with_cancel(tether::background());
    auto [b, cancel_b] = tether::with_cancel(tether::background());
    int calls = 0;
    tether::cancel_registration reg;
    REQUIRE(reg.arm(a, &count_call, &calls));
    cancel_a();
    REQUIRE(calls == 1);
    REQUIRE(reg.arm(b, &count_call, &calls));
    cancel_b();
    CHECK(calls == 2);
}

TEST_CASE("a callback may disarm its own registration") {
    struct self_disarming {
        tether::cancel_registration reg;
        int calls = 0;
        static void run(void* p) noexcept {
            auto* self = static_cast<self_disarming*>(p);
            ++self->calls;
            self->reg.disarm(); // returns at once: we are the running callback
        }
    };
    auto [ctx, cancel] = tether::with_cancel(tether::background());
    self_disarming s;
    REQUIRE(s.reg.arm(ctx, &self_disarming::run, &s));
    cancel();
    CHECK(s.calls == 1);
    CHECK_FALSE(s.reg.is_armed());
}

TEST_CASE("a callback may destroy its own registration") {
    struct owner {
        std::unique_ptr<tether::cancel_registration> reg =
            std::make_unique<tether::cancel_registration>();
        int calls = 0;
        static void run(void* p) noexcept {
            auto* self = static_cast<owner*>(p);
            ++self->calls;
            self->reg.reset();
        }
    };
    auto [ctx, cancel] = tether::with_cancel(tether::background());
    int later = 0;
    tether::cancel_registration after; // armed before, so it runs after the owner's
    REQUIRE(after.arm(ctx, &count_call, &later));
    owner o;
    REQUIRE(o.reg->arm(ctx, &owner::run, &o));
    cancel();
    CHECK(o.calls == 1);
    CHECK(o.reg == nullptr);
    CHECK(later == 1);
}

TEST_CASE("a callback may cancel the context it runs for, and its other children") {
    struct recanceler {
        tether::cancel_handle* self;
        tether::cancel_handle* child;
        static void run(void* p) noexcept {
            auto* r = static_cast<recanceler*>(p);
            r->self->cancel(); // already done: a no-op, never a deadlock
            r->child->cancel();
        }
    };
    auto [ctx, cancel] = tether::with_cancel(tether::background());
    auto [child, cancel_child] = tether::with_cancel(ctx);
    recanceler r{&cancel, &cancel_child};
    tether::cancel_registration reg;
    REQUIRE(reg.arm(ctx, &recanceler::run, &r));
    cancel();
    CHECK(ctx.err() == tether::errc::canceled);
    CHECK(child.err() == tether::errc::canceled);
    CHECK(tether::detail::registration_count(ctx) == 0);
}

TEST_CASE("a registration outlives every context that named it") {
    int calls = 0;
    tether::cancel_registration reg;
    SUBCASE("the context and its handle are dropped while it is armed") {
        std::optional<std::pair<tether::context, tether::cancel_handle>> p =
            tether::with_cancel(tether::background());
        REQUIRE(reg.arm(p->first, &count_call, &calls));
        p->first = tether::background();
        p.reset(); // the handle cancels; the registration still holds the state
        CHECK(calls == 1);
    }
    SUBCASE("armed through a temporary") {
        auto [parent, cancel] = tether::with_cancel(tether::background());
        REQUIRE(reg.arm(tether::with_value(parent, int_key, 1), &count_call, &calls));
        cancel();
        CHECK(calls == 1);
    }
    reg.disarm();
    CHECK(calls == 1);
}

TEST_CASE("disarm waits for the callback running on another thread") {
    // The callback blocks until released; a third thread disarms meanwhile and must not
    // return before the callback has finished. Nothing here waits on time: a late disarm
    // (after the callback) passes too, it just checks less.
    for (int round = 0; round < 50; ++round) {
        auto [ctx, cancel] = tether::with_cancel(tether::background());
        struct probe {
            std::atomic<bool> entered{false};
            std::atomic<bool> released{false};
            int finished = 0; // plain: disarm's wait must order it before the read
        };
        probe p;
        auto blocking = [](void* d) noexcept {
            auto* pr = static_cast<probe*>(d);
            pr->entered = true;
            while (!pr->released.load()) {
                std::this_thread::yield();
            }
            pr->finished = 1;
        };
        tether::cancel_registration reg;
        REQUIRE(reg.arm(ctx, blocking, &p));
        std::jthread canceler([&cancel = cancel] { cancel(); });
        while (!p.entered.load()) {
            std::this_thread::yield();
        }
        std::atomic<bool> disarming{false};
        int seen = -1;
        std::jthread disarmer([&] {
            disarming = true;
            reg.disarm();
            seen = p.finished;
        });
        while (!disarming.load()) {
            std::this_thread::yield();
        }
        for (int spin = 0; spin < 100; ++spin) {
            std::this_thread::yield(); // let the disarmer get into its wait, usually
        }
        p.released = true;
        disarmer.join();
        CHECK(seen == 1);
    }
}

// ---- cancel_callback -----------------------------------------------------------------------

TEST_CASE("cancel_callback runs its function once when the context is canceled") {
    auto [ctx, cancel] = tether::with_cancel(tether::background());
    int calls = 0;
    tether::cancel_callback cb(ctx, [&calls] { ++calls; });
    CHECK(calls == 0);
    cancel();
    cancel();
    CHECK(calls == 1);
}

TEST_CASE("cancel_callback on a done context runs its function inside the constructor") {
    auto [ctx, cancel] = tether::with_cancel(tether::background());
    cancel();
    int calls = 0;
    tether::cancel_callback cb(ctx, [&calls] { ++calls; });
    CHECK(calls == 1);
}

TEST_CASE("a destroyed cancel_callback never runs") {
    auto [ctx, cancel] = tether::with_cancel(tether::background());
    int calls = 0;
    {
        tether::cancel_callback cb(ctx, [&calls] { ++calls; });
    }
    cancel();
    CHECK(calls == 0);
    CHECK(tether::detail::registration_count(ctx) == 0);
}

TEST_CASE("cancel_callback on a context that is never done never runs") {
    int calls = 0;
    {
        tether::cancel_callback cb(tether::background(), [&calls] { ++calls; });
    }
    CHECK(calls == 0);
}

TEST_CASE("cancel_callback runs when the deadline passes") {
    tether::manual_clock clk;
    auto [ctx, cancel] = tether::with_timeout(tether::background(clk), 10ms);
    int calls = 0;
    tether::cancel_callback cb(ctx, [&calls] { ++calls; });
    clk.advance(9ms);
    CHECK(calls == 0);
    clk.advance(1ms);
    CHECK(calls == 1);
}

TEST_CASE("cancel_callback and cancel_registration are neither copyable nor movable") {
    static_assert(!std::is_copy_constructible_v<tether::cancel_registration>);
    static_assert(!std::is_copy_assignable_v<tether::cancel_registration>);
    static_assert(!std::is_move_constructible_v<tether::cancel_registration>);
    auto f = [] {};
    static_assert(!std::is_copy_constructible_v<tether::cancel_callback<decltype(f)>>);
    static_assert(!std::is_move_constructible_v<tether::cancel_callback<decltype(f)>>);
}

// ---- registration_count and allocations ----------------------------------------------------

TEST_CASE("registration_count counts armed registrations and live children") {
    auto [ctx, cancel] = tether::with_cancel(tether::background());
    CHECK(tether::detail::registration_count(ctx) == 0);
    int calls = 0;
    tether::cancel_registration reg;
    REQUIRE(reg.arm(ctx, &count_call, &calls));
    CHECK(tether::detail::registration_count(ctx) == 1);
    {
        auto [child, cancel_child] = tether::with_cancel(ctx);
        CHECK(tether::detail::registration_count(ctx) == 2);
        auto v = tether::with_value(ctx, int_key, 1); // values don't register
        auto w = tether::without_cancel(ctx);         // nor does without_cancel
        CHECK(tether::detail::registration_count(ctx) == 2);
    }
    CHECK(tether::detail::registration_count(ctx) == 1);
    reg.disarm();
    CHECK(tether::detail::registration_count(ctx) == 0);
    CHECK(tether::detail::registration_count(tether::background()) == 0);
    CHECK(tether::detail::registration_count(tether::with_value(ctx, int_key, 1)) == 0);
}

TEST_CASE("a thread reuses the memory of the contexts it dropped, wherever they were made") {
#if defined(__SANITIZE_ADDRESS__)
    // Under ASan every node goes back to malloc, so that a use after free is caught.
    CHECK(allocations_of([] { auto p = tether::with_cancel(tether::background()); }) == 1);
#else
    {
        auto warm = tether::with_cancel(tether::background());
        auto warm_deadline = tether::with_timeout(tether::background(), 1h);
    }
    CHECK(allocations_of([] { auto p = tether::with_cancel(tether::background()); }) == 0);
    CHECK(allocations_of([] { auto p = tether::with_timeout(tether::background(), 1h); }) == 0);
    (void)tether::with_value(tether::background(), int_key, 1);
    CHECK(allocations_of([] { (void)tether::with_value(tether::background(), int_key, 2); }) == 0);
    // Made on another thread, dropped here (the last reference), reused here.
    std::optional<std::pair<tether::context, tether::cancel_handle>> made;
    std::thread([&] { made = tether::with_cancel(tether::background()); }).join();
    made.reset();
    std::size_t n = allocations_of([] {
        auto a = tether::with_cancel(tether::background());
        auto b = tether::with_cancel(tether::background());
    });
    CHECK(n == 0);
#endif
}

TEST_CASE("every derived context costs at most one allocation") {
    tether::manual_clock clk;
    auto root = tether::background(clk);
    {
        // Let the clock's heap grow first, so that scheduling a timer allocates nothing.
        auto w1 = tether::with_timeout(root, 1h);
        auto w2 = tether::with_timeout(root, 1h);
        auto w3 = tether::with_timeout(root, 1h);
    }
    std::optional<std::pair<tether::context, tether::cancel_handle>> p;
    std::optional<tether::context> c;
    CHECK(allocations_of([] { (void)tether::background(); }) == 0);
    CHECK(allocations_of([] { (void)tether::todo(); }) == 0);
    CHECK(allocations_of([&] { p = tether::with_cancel(root); }) <= 1);
    CHECK(allocations_of([&] { p = tether::with_cancel_cause(root); }) <= 1);
    CHECK(allocations_of([&] { p = tether::with_timeout(root, 1s); }) <= 1);
    CHECK(allocations_of([&] { p = tether::with_deadline(root, clk.now() + 1s); }) <= 1);
    CHECK(allocations_of([&] { p = tether::with_timeout(root, -1s); }) <= 1);
    CHECK(allocations_of([&] { c = tether::with_value(root, int_key, 3); }) <= 1);
    CHECK(allocations_of([&] { c = tether::without_cancel(root); }) <= 1);
    tether::context copy;
    CHECK(allocations_of([&] { copy = c.value(); }) == 0);
    auto [ctx, cancel] = tether::with_cancel(root);
    auto [child, cancel_child] = tether::with_cancel(ctx);
    int calls = 0;
    tether::cancel_registration reg;
    CHECK(allocations_of([&] { (void)reg.arm(ctx, &count_call, &calls); }) == 0);
    CHECK(allocations_of([&] { reg.disarm(); }) == 0);
    CHECK(allocations_of([&] { (void)reg.arm(ctx, &count_call, &calls); }) == 0);
    CHECK(allocations_of([&] { cancel(); }) == 0);
    CHECK(allocations_of([&] { (void)ctx.err(); }) == 0);
    CHECK(allocations_of([&] { (void)tether::cause(child); }) == 0);
}

// ---- cause ---------------------------------------------------------------------------------

TEST_CASE("cause follows Go's table: the first cancel wins and children inherit it") {
    // Go's TestCause, row for row (without the custom-context rows, which have no C++
    // counterpart). Each row builds a context; the handles live until the row is checked.
    const std::error_code parent_cause = std::make_error_code(std::errc::connection_reset);
    const std::error_code child_cause = std::make_error_code(std::errc::broken_pipe);
    const std::error_code too_slow = std::make_error_code(std::errc::timed_out);
    const std::error_code finished_early = std::make_error_code(std::errc::interrupted);
    const std::error_code canceled = tether::errc::canceled;
    const std::error_code deadline_exceeded = tether::errc::deadline_exceeded;
    const std::error_code none{};

    struct row {
        const char* name;
        std::function<tether::context(std::vector<tether::cancel_handle>&)> make;
        std::error_code err;
        std::error_code cause;
    };
    auto keep = [](std::vector<tether::cancel_handle>& hs,
                   std::pair<tether::context, tether::cancel_handle> p) {
        hs.push_back(std::move(p.second));
        return p.first;
    };
    const std::vector<row> rows = {
        {"background", [](auto&) { return tether::background(); }, none, none},
        {"todo", [](auto&) { return tether::todo(); }, none, none},
        {"with_cancel",
         [&](auto& hs) {
             auto ctx = keep(hs, tether::with_cancel(tether::background()));
             hs.back()();
             return ctx;
         },
         canceled, canceled},
        {"with_cancel_cause",
         [&](auto& hs) {
             auto ctx = keep(hs, tether::with_cancel_cause(tether::background()));
             hs.back()(parent_cause);
             return ctx;
         },
         canceled, parent_cause},
        {"with_cancel_cause, empty cause",
         [&](auto& hs) {
             auto ctx = keep(hs, tether::with_cancel_cause(tether::background()));
             hs.back()(none);
             return ctx;
         },
         canceled, canceled},
        {"parent cause before child",
         [&](auto& hs) {
             auto parent = keep(hs, tether::with_cancel_cause(tether::background()));
             auto child = keep(hs, tether::with_cancel_cause(parent));
             hs[0](parent_cause);
             hs[1](child_cause);
             return child;
         },
         canceled, parent_cause},
        {"parent cause after child",
         [&](auto& hs) {
             auto parent = keep(hs, tether::with_cancel_cause(tether::background()));
             auto child = keep(hs, tether::with_cancel_cause(parent));
             hs[1](child_cause);
             hs[0](parent_cause);
             return child;
         },
         canceled, child_cause},
        {"parent cause before a child without one",
         [&](auto& hs) {
             auto parent = keep(hs, tether::with_cancel_cause(tether::background()));
             auto child = keep(hs, tether::with_cancel(parent));
             hs[0](parent_cause);
             return child;
         },
         canceled, parent_cause},
        {"parent cause after a child canceled without one",
         [&](auto& hs) {
             auto parent = keep(hs, tether::with_cancel_cause(tether::background()));
             auto child = keep(hs, tether::with_cancel(parent));
             hs[1]();
             hs[0](parent_cause);
             return child;
         },
         canceled, canceled},
        {"child cause after the parent canceled without one",
         [&](auto& hs) {
             auto parent = keep(hs, tether::with_cancel(tether::background()));
             auto child = keep(hs, tether::with_cancel_cause(parent));
             hs[0]();
             hs[1](child_cause);
             return child;
         },
         canceled, canceled},
        {"child cause before the parent canceled without one",
         [&](auto& hs) {
             auto parent = keep(hs, tether::with_cancel(tether::background()));
             auto child = keep(hs, tether::with_cancel_cause(parent));
             hs[1](child_cause);
             hs[0]();
             return child;
         },
         canceled, child_cause},
        {"with_timeout",
         [&](auto& hs) { return keep(hs, tether::with_timeout(tether::background(), 0s)); },
         deadline_exceeded, deadline_exceeded},
        {"with_timeout canceled",
         [&](auto& hs) {
             auto ctx = keep(hs, tether::with_timeout(tether::background(), 1h));
             hs.back()();
             return ctx;
         },
         canceled, canceled},
        {"with_timeout_cause",
         [&](auto& hs) {
             return keep(hs, tether::with_timeout_cause(tether::background(), 0s, too_slow));
         },
         deadline_exceeded, too_slow},
        {"with_timeout_cause canceled",
         [&](auto& hs) {
             auto ctx = keep(hs, tether::with_timeout_cause(tether::background(), 1h, too_slow));
             hs.back()();
             return ctx;
         },
         canceled, canceled},
        {"with_timeout_cause stacked",
         [&](auto& hs) {
             auto parent = keep(hs, tether::with_cancel_cause(tether::background()));
             auto ctx = keep(hs, tether::with_timeout_cause(parent, 0s, too_slow));
             hs[0](finished_early);
             return ctx;
         },
         deadline_exceeded, too_slow},
        {"with_timeout_cause stacked canceled",
         [&](auto& hs) {
             auto parent = keep(hs, tether::with_cancel_cause(tether::background()));
             auto ctx = keep(hs, tether::with_timeout_cause(parent, 1h, too_slow));
             hs[0](finished_early);
             return ctx;
         },
         canceled, finished_early},
        {"without_cancel", [&](auto&) { return tether::without_cancel(tether::background()); },
         none, none},
        {"without_cancel canceled",
         [&](auto& hs) {
             auto parent = keep(hs, tether::with_cancel_cause(tether::background()));
             hs[0](finished_early);
             return tether::without_cancel(parent);
         },
         none, none},
        {"without_cancel timeout",
         [&](auto& hs) {
             auto parent = keep(hs, tether::with_timeout_cause(tether::background(), 0s, too_slow));
             return tether::without_cancel(parent);
         },
         none, none},
    };
    for (const row& r : rows) {
        CAPTURE(r.name);
        std::vector<tether::cancel_handle> handles;
        tether::context ctx = r.make(handles);
        CHECK(ctx.err() == r.err);
        CHECK(tether::cause(ctx) == r.cause);
    }
}

TEST_CASE("a deadline cause reaches children, and a later cancel can't overwrite it") {
    tether::manual_clock clk;
    const std::error_code too_slow = std::make_error_code(std::errc::timed_out);
    auto [parent, cancel_parent] =
        tether::with_timeout_cause(tether::background(clk), 1s, too_slow);
    auto [child, cancel_child] = tether::with_cancel_cause(parent);
    clk.advance(1s);
    cancel_child(std::make_error_code(std::errc::io_error));
    cancel_parent(std::make_error_code(std::errc::io_error));
    CHECK(parent.err() == tether::errc::deadline_exceeded);
    CHECK(tether::cause(parent) == too_slow);
    CHECK(child.err() == tether::errc::deadline_exceeded);
    CHECK(tether::cause(child) == too_slow);
}
