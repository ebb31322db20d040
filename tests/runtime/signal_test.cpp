#include "context/with_cancel.hpp"
#include "runtime/loop.hpp"
#include "runtime/signal.hpp"

#include <doctest/doctest.h>

#include <atomic>
#include <csignal>
#include <pthread.h>
#include <thread>

using namespace tether;

namespace {

// Waits on `l` until `ctx` is done (the signal thread cancels it).
void wait_done(loop& l, const context& ctx) {
    auto r = l.block_on([](context c) -> task<result<void>> { co_return co_await c.done(); }(ctx));
    REQUIRE(r.has_value());
}

using handler_t = void (*)(int);

handler_t current_handler(int signo) {
    struct sigaction sa{};
    REQUIRE(::sigaction(signo, nullptr, &sa) == 0);
    return sa.sa_handler;
}

bool handler_is(int signo, handler_t h) {
    return current_handler(signo) == h;
}

std::atomic<int> user_handler_calls{0};
extern "C" void user_handler(int) {
    ++user_handler_calls;
}

} // namespace

TEST_CASE("notify_context is canceled when one of its signals arrives") {
    loop l;
    auto [ctx, stop] = notify_context(l.background(), {SIGUSR1, SIGUSR2});
    CHECK_FALSE(ctx.is_done());
    SUBCASE("raised by this thread") {
        REQUIRE(::raise(SIGUSR2) == 0);
    }
    SUBCASE("sent to the process from another thread") {
        std::thread([] { ::kill(::getpid(), SIGUSR2); }).join();
    }
    wait_done(l, ctx);
    CHECK(ctx.err() == errc::canceled);
    std::error_code why = cause(ctx);
    CHECK(why.category() == signal_category());
    CHECK(why.value() == SIGUSR2);
    CHECK(why.message() == "user defined signal 2 signal received");
    // Until stop, a second signal is still caught instead of ending the process.
    REQUIRE(::raise(SIGUSR2) == 0);
    stop();
}

TEST_CASE("stop restores the previous disposition and cancels the context") {
    loop l;
    struct sigaction mine{};
    mine.sa_handler = &user_handler;
    sigemptyset(&mine.sa_mask);
    struct sigaction before{};
    REQUIRE(::sigaction(SIGUSR1, &mine, &before) == 0);

    auto [ctx, stop] = notify_context(l.background(), {SIGUSR1});
    CHECK(!handler_is(SIGUSR1, &user_handler));
    stop();
    CHECK(ctx.err() == errc::canceled);
    CHECK_FALSE(cause(ctx).category() == signal_category());
    CHECK(handler_is(SIGUSR1, &user_handler));
    stop(); // a second stop does nothing
    CHECK_FALSE(static_cast<bool>(stop));

    user_handler_calls = 0;
    REQUIRE(::raise(SIGUSR1) == 0);
    CHECK(user_handler_calls == 1);
    REQUIRE(::sigaction(SIGUSR1, &before, nullptr) == 0);
}

TEST_CASE("two notify_contexts on one signal: both canceled, restored after the last stop") {
    loop l;
    REQUIRE((::signal(SIGUSR1, SIG_DFL) != SIG_ERR));
    auto [a, stop_a] = notify_context(l.background(), {SIGUSR1});
    auto [b, stop_b] = notify_context(l.background(), {SIGUSR1, SIGUSR1}); // duplicates are one
    REQUIRE(::raise(SIGUSR1) == 0);
    wait_done(l, a);
    wait_done(l, b);
    stop_a();
    CHECK(!handler_is(SIGUSR1, SIG_DFL)); // b still watches it
    stop_b();
    CHECK(handler_is(SIGUSR1, SIG_DFL));
}

TEST_CASE("a notify_context follows its parent and is stopped by its destructor") {
    loop l;
    REQUIRE((::signal(SIGUSR2, SIG_DFL) != SIG_ERR));
    auto [parent, cancel_parent] = with_cancel(l.background());
    context child;
    {
        auto [ctx, stop] = notify_context(parent, {SIGUSR2});
        child = ctx;
        cancel_parent();
        CHECK(child.err() == errc::canceled);
        CHECK(!handler_is(SIGUSR2, SIG_DFL));
    }
    CHECK(handler_is(SIGUSR2, SIG_DFL));
}

TEST_CASE("notify_context rejects a signal that can't be caught") {
    loop l;
    REQUIRE((::signal(SIGUSR1, SIG_DFL) != SIG_ERR));
    CHECK_THROWS_AS((void)notify_context(l.background(), {SIGUSR1, SIGKILL}), std::system_error);
    CHECK_THROWS_AS((void)notify_context(l.background(), {0}), std::system_error);
    // What the failed call had installed is undone.
    CHECK(handler_is(SIGUSR1, SIG_DFL));
}
