#include "context/with_cancel.hpp"
#include "context/with_deadline.hpp"
#include "context/without_cancel.hpp"
#include "runtime/channel.hpp"
#include "runtime/detail/loop_impl.hpp"
#include "runtime/io.hpp"
#include "runtime/loop.hpp"
#include "runtime/mutex.hpp"
#include "runtime/runtime.hpp"
#include "runtime/select.hpp"
#include "runtime/semaphore.hpp"
#include "runtime/sleep.hpp"
#include "runtime/spawn.hpp"
#include "runtime/switch_to.hpp"
#include "tests/support/test_util.hpp"

#include <doctest/doctest.h>

#include <array>
#include <atomic>
#include <chrono>
#include <coroutine>
#include <fcntl.h>
#include <linux/io_uring.h>
#include <optional>
#include <stdexcept>
#include <thread>
#include <unistd.h>
#include <variant>
#include <vector>

using namespace tether;
using namespace tether::test;
using namespace std::chrono_literals;

namespace {

task<loop*> where() {
    co_return co_await this_coro::loop;
}

task<int> add_on(int a, int b) {
    co_return a + b;
}

task<int> throws_on() {
    throw std::runtime_error("boom");
    co_return 0;
}

// Waits (practically) forever; returns true if its context canceled it.
task<bool> wait_forever() {
    result<void> r = co_await sleep_for(1h);
    co_return !r && r.error() == errc::canceled;
}

// Moves to `l` and returns where it ended.
task<loop*> switch_and_report(loop* l) {
    co_await switch_to(*l);
    co_return co_await this_coro::loop;
}

// Sleeps until canceled; true if it started on `l`, was canceled and resumed on `l`.
task<bool> canceled_on(loop* l, std::error_code want) {
    bool there = co_await this_coro::loop == l;
    result<void> r = co_await sleep_for(1h);
    co_return there && !r && r.error() == want && co_await this_coro::loop == l;
}

} // namespace

TEST_CASE("a runtime runs its loops on their own threads and block_on returns main's value") {
    runtime rt(runtime::options{.loops = 3});
    CHECK(rt.size() == 3);
    std::thread::id caller = std::this_thread::get_id();
    int v = rt.block_on([&]() -> task<int> {
        CHECK(co_await this_coro::loop == &rt.loop(0));
        CHECK(std::this_thread::get_id() != caller);
        co_return 42;
    }());
    CHECK(v == 42);
    // block_on again on the same runtime.
    CHECK(rt.block_on(add_on(2, 3)) == 5);
}

TEST_CASE("block_on rethrows main's exception") {
    runtime rt(runtime::options{.loops = 2});
    CHECK_THROWS_AS(rt.block_on(throws_on()), std::runtime_error);
}

TEST_CASE("the default runtime has one loop per core") {
    runtime rt;
    CHECK(rt.size() == std::max(1u, std::thread::hardware_concurrency()));
}

TEST_CASE("run(n, main) runs main on a runtime of n loops") {
    int v = run(2, []() -> task<int> {
        loop* here = co_await this_coro::loop;
        co_return here != nullptr ? 7 : 0;
    }());
    CHECK(v == 7);
}

TEST_CASE("spawn_on runs the task on the target loop and the joiner resumes at home") {
    runtime rt(runtime::options{.loops = 2});
    rt.block_on([&]() -> task<void> {
        auto h = co_await spawn_on(rt.loop(1), where());
        result<loop*> r = co_await h;
        REQUIRE(r);
        CHECK(*r == &rt.loop(1));
        CHECK(co_await this_coro::loop == &rt.loop(0));

        auto h2 = co_await spawn_on(rt.loop(1), add_on(20, 22));
        result<int> v = co_await h2;
        CHECK(v.value() == 42);
        CHECK(co_await this_coro::loop == &rt.loop(0));
    }());
}

TEST_CASE("spawn_on carries the exception back to the joiner") {
    runtime rt(runtime::options{.loops = 2});
    rt.block_on([&]() -> task<void> {
        auto h = co_await spawn_on(rt.loop(1), throws_on());
        bool caught = false;
        try {
            (void)co_await h;
        } catch (const std::runtime_error&) {
            caught = true;
        }
        CHECK(caught);
        CHECK(co_await this_coro::loop == &rt.loop(0));
    }());
}

TEST_CASE("spawn_on to the spawner's own loop behaves as spawn") {
    runtime rt(runtime::options{.loops = 2});
    rt.block_on([&]() -> task<void> {
        auto h = co_await spawn_on(rt.loop(0), where());
        result<loop*> where_it_ran = co_await h;
        CHECK(where_it_ran.value() == &rt.loop(0));
    }());
}

TEST_CASE("many tasks spawned on every loop all finish and join") {
    runtime rt(runtime::options{.loops = 3});
    int sum = rt.block_on([&]() -> task<int> {
        std::vector<join_handle<int>> hs;
        for (int i = 0; i < 3000; ++i) {
            hs.push_back(co_await spawn_on(rt.loop(i % rt.size()), add_on(i, 1)));
        }
        int total = 0;
        for (auto& h : hs) {
            total += (co_await h).value();
        }
        co_return total;
    }());
    CHECK(sum == 3000 * 2999 / 2 + 3000);
}

TEST_CASE("switch_to continues the coroutine on the target loop's thread") {
    runtime rt(runtime::options{.loops = 2});
    rt.block_on([&]() -> task<void> {
        std::thread::id home = std::this_thread::get_id();
        co_await switch_to(rt.loop(1));
        CHECK(co_await this_coro::loop == &rt.loop(1));
        CHECK(std::this_thread::get_id() != home);
        // I/O and timers now run on loop 1.
        result<void> slept = co_await sleep_for(1ms);
        CHECK(slept);
        co_await switch_to(rt.loop(1)); // already there: no suspension
        co_await switch_to(rt.loop(0));
        CHECK(co_await this_coro::loop == &rt.loop(0));
        CHECK(std::this_thread::get_id() == home);
    }());
}

TEST_CASE("a spawned task that switches loops still ends at its handle's loop") {
    runtime rt(runtime::options{.loops = 2});
    rt.block_on([&]() -> task<void> {
        auto h = co_await spawn(switch_and_report(&rt.loop(1)));
        result<loop*> ended = co_await h;
        CHECK(ended.value() == &rt.loop(1));
        CHECK(co_await this_coro::loop == &rt.loop(0));
    }());
}

TEST_CASE("a task spawned on another loop carries the spawner's context") {
    runtime rt(runtime::options{.loops = 2});
    rt.block_on([&]() -> task<void> {
        auto [ctx, cancel] = with_cancel(co_await this_coro::context);
        auto h = co_await with_context(ctx, spawn_on(rt.loop(1), wait_forever()));
        co_await sleep_for(1ms); // let it park on loop 1 (either way it must end canceled)
        cancel.cancel();         // the parent's cancel reaches the task on loop 1
        result<bool> canceled = co_await h;
        CHECK(canceled.value());
    }());
}

TEST_CASE("canceling a task on another loop resumes it there and the joiner at home") {
    // Thousands of times: the cancel races the task reaching its wait on the other loop.
    runtime rt(runtime::options{.loops = 2});
    rt.block_on([&]() -> task<void> {
        for (std::size_t i = 0; i < iterations(3000); ++i) {
            // Resumed on its own loop, with the cancel's error.
            auto h = co_await spawn_on(rt.loop(1), canceled_on(&rt.loop(1), errc::canceled));
            if (i % 2 == 1) {
                co_await sleep_for(0ns); // let it reach its wait sometimes
            }
            h.cancel();
            result<bool> ok = co_await h;
            REQUIRE(ok);
            REQUIRE(*ok);
            REQUIRE(co_await this_coro::loop == &rt.loop(0));
        }
    }());
}

namespace {

// Queues the awaiting coroutine at the back of its loop's ready queue.
struct requeue {
    loop* l;
    bool await_ready() const noexcept { return false; }
    void await_suspend(std::coroutine_handle<> h) const { l->schedule(h); }
    void await_resume() const noexcept {}
};

task<int> when_told(const std::atomic<bool>* go, loop* l) {
    while (!go->load(std::memory_order_acquire)) {
        co_await requeue{l};
    }
    co_return 7;
}

task<void> nap(std::chrono::nanoseconds d) {
    (void)co_await sleep_for(d);
}

// Joins `h`, then sleeps `d` out of reach of its own context's cancel: a second resume of
// this coroutine would end that sleep early.
task<void> join_then_nap(join_handle<int>* h, std::chrono::nanoseconds d, result<int>* got,
                         std::chrono::nanoseconds* napped) {
    *got = co_await *h;
    auto t0 = std::chrono::steady_clock::now();
    context calm = without_cancel(co_await this_coro::context);
    co_await with_context(calm, nap(d));
    *napped = std::chrono::steady_clock::now() - t0;
}

// Lets the task on the other loop finish, and once its end has come home, cancels the
// joiner's context before the joiner (queued by that end) has run.
task<void> cancel_once_done(join_handle<int>* h, std::atomic<bool>* go, cancel_handle* c, loop* l) {
    go->store(true, std::memory_order_release);
    while (!h->done()) {
        co_await requeue{l};
    }
    (*c)();
}

} // namespace

TEST_CASE("a joiner canceled after the task's end came home resumes once, with the value") {
    runtime rt(runtime::options{.loops = 2});
    rt.block_on([&]() -> task<void> {
        loop* home = co_await this_coro::loop;
        context here = co_await this_coro::context;
        for (std::size_t i = 0; i < iterations(200); ++i) {
            std::atomic<bool> go{false};
            auto h = co_await spawn_on(rt.loop(1), when_told(&go, &rt.loop(1)));
            auto [jctx, jcancel] = with_cancel(here);
            result<int> got = 0;
            std::chrono::nanoseconds napped{};
            auto joiner = spawn(jctx, join_then_nap(&h, 2ms, &got, &napped));
            auto canceler = spawn(here, cancel_once_done(&h, &go, &jcancel, home));
            result<void> j = co_await joiner;
            result<void> c = co_await canceler;
            REQUIRE(j);
            REQUIRE(c);
            // The task finished before the cancel: its value is not lost.
            REQUIRE(got.value() == 7);
            REQUIRE(napped >= 2ms);
        }
    }());
}

TEST_CASE("a cancel from a foreign thread resumes each waiter on its own loop") {
    runtime rt(runtime::options{.loops = 3});
    for (std::size_t round = 0; round < iterations(300); ++round) {
        auto [ctx, cancel] = with_cancel(rt.loop(0).background());
        int resumed_right = 0;
        std::jthread canceler;
        auto main = [&]() -> task<void> {
            std::vector<join_handle<bool>> hs;
            for (std::size_t l = 0; l < rt.size(); ++l) {
                hs.push_back(spawn_on(rt.loop(l), ctx, canceled_on(&rt.loop(l), errc::canceled)));
            }
            canceler = std::jthread([&cancel] { cancel.cancel(); });
            for (auto& h : hs) {
                resumed_right += (co_await h).value() ? 1 : 0;
            }
        };
        rt.block_on(main());
        CHECK(resumed_right == static_cast<int>(rt.size()));
    }
}

TEST_CASE("a deadline reaches a waiter on another loop, which resumes on its own loop") {
    runtime rt(runtime::options{.loops = 2});
    rt.block_on([&]() -> task<void> {
        auto [ctx, cancel] = with_timeout(co_await this_coro::context, 5ms);
        auto h = co_await with_context(
            ctx, spawn_on(rt.loop(1), canceled_on(&rt.loop(1), errc::deadline_exceeded)));
        result<bool> ok = co_await h;
        CHECK(ok.value());
    }());
}

TEST_CASE("loops wake each other through MSG_RING when the kernel has it") {
    runtime rt(runtime::options{.loops = 2});
    rt.block_on([&]() -> task<void> {
        for (int i = 0; i < 50; ++i) {
            co_await switch_to(rt.loop(1));
            co_await switch_to(rt.loop(0));
        }
    }());
    auto& one = rt.loop(1).impl();
    if (one.accepts_msg_ring()) {
        CHECK(one.msg_ring_received.load() > 0);
    } else {
        MESSAGE("no IORING_OP_MSG_RING here: loops wake each other through pipes");
    }
}

TEST_CASE("loops woken only through pipes (msg_ring off) work the same") {
    runtime::options o{.loops = 2};
    o.loop_options.msg_ring = false;
    runtime rt(o);
    int v = rt.block_on([&]() -> task<int> {
        int n = 0;
        for (int i = 0; i < 50; ++i) {
            auto h = co_await spawn_on(rt.loop(1), add_on(i, 0));
            n += (co_await h).value();
        }
        co_return n;
    }());
    CHECK(v == 50 * 49 / 2);
    CHECK(rt.loop(1).impl().msg_ring_received.load() == 0);
}

TEST_CASE("loops that spin before sleeping work the same, and need fewer wakes") {
    runtime::options o{.loops = 2};
    o.loop_options.spin = 200us;
    runtime rt(o);
    int v = rt.block_on([&]() -> task<int> {
        int n = 0;
        for (int i = 0; i < 200; ++i) {
            auto h = co_await spawn_on(rt.loop(1), add_on(i, 0));
            n += (co_await h).value();
            co_await switch_to(rt.loop(1));
            co_await switch_to(rt.loop(0));
        }
        // A long idle stretch: the spin ends and the loops sleep; they still wake.
        co_await sleep_for(5ms);
        auto h = co_await spawn_on(rt.loop(1), add_on(1, 1));
        n += (co_await h).value();
        co_return n;
    }());
    CHECK(v == 200 * 199 / 2 + 2);
}

TEST_CASE("only a loop that spins asks the kernel to flag its pending completions") {
    // IORING_SETUP_TASKRUN_FLAG costs kernel work on every batch of completions; only the
    // spin reads the flag. Checked on the DEFER_TASKRUN ring (older kernels fall back).
    loop plain;
    loop::options o;
    o.spin = 1ms;
    loop spinning(o);
    if ((plain.ring_flags() & IORING_SETUP_DEFER_TASKRUN) == 0) {
        MESSAGE("no DEFER_TASKRUN on this kernel: nothing to check");
        return;
    }
    CHECK((plain.ring_flags() & IORING_SETUP_TASKRUN_FLAG) == 0);
    CHECK((spinning.ring_flags() & IORING_SETUP_DEFER_TASKRUN) != 0);
    CHECK((spinning.ring_flags() & IORING_SETUP_TASKRUN_FLAG) != 0);
    // Both still run tasks and their I/O.
    CHECK(plain.block_on(add_on(2, 3)) == 5);
    CHECK(spinning.block_on(add_on(4, 5)) == 9);
}

TEST_CASE("a loop that spins takes posts from another thread and stops when asked mid-spin") {
    // A spin far longer than the test: only the posts and stop() can end it (or the spin's
    // own preemption check, on a loaded machine, after which the loop sleeps in the kernel
    // and the pipe wakes it: the same outcome).
    loop::options o;
    o.spin = 60s;
    loop l(o);
    std::atomic<int> ran{0};
    std::thread t([&] { l.run(); });
    constexpr int posts = 200;
    for (int i = 0; i < posts; ++i) {
        l.post([&] { ran.fetch_add(1, std::memory_order_relaxed); });
        if (i % 50 == 0) {
            std::this_thread::sleep_for(2ms); // let it go idle and spin again
        }
    }
    auto deadline = std::chrono::steady_clock::now() + 30s;
    while (ran.load() < posts && std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(1ms);
    }
    CHECK(ran.load() == posts);
    std::this_thread::sleep_for(5ms); // idle: spinning again
    auto t0 = std::chrono::steady_clock::now();
    l.stop();
    t.join();
    CHECK(std::chrono::steady_clock::now() - t0 < 20s);
}

TEST_CASE("a spinning loop's run_once(timeout) returns after the timeout, and poll() never spins") {
    loop::options o;
    o.spin = 60s;
    loop l(o);
    auto t0 = std::chrono::steady_clock::now();
    l.run_once(10ms);
    CHECK(std::chrono::steady_clock::now() - t0 < 20s);
    t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < 10; ++i) {
        CHECK_FALSE(l.poll());
    }
    CHECK(std::chrono::steady_clock::now() - t0 < 20s);
    // Posted work still runs through poll().
    bool ran = false;
    std::thread([&] { l.post([&] { ran = true; }); }).join();
    CHECK(l.poll());
    CHECK(ran);
}

TEST_CASE("a running loop takes every post from another thread between its turns") {
    // loop::run() keeps the loop awake between turns (posters skip the wake then): nothing
    // posted in that window may be left behind.
    loop l;
    std::atomic<int> ran{0};
    std::thread t([&] { l.run(); });
    const int posts = static_cast<int>(iterations(20000));
    for (int i = 0; i < posts; ++i) {
        l.post([&] { ran.fetch_add(1, std::memory_order_relaxed); });
        if (i % 1000 == 0) {
            std::this_thread::sleep_for(1ms); // and some while it sleeps
        }
    }
    auto deadline = std::chrono::steady_clock::now() + 30s;
    while (ran.load() < posts && std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(1ms);
    }
    CHECK(ran.load() == posts);
    l.stop();
    t.join();
}

TEST_CASE("a runtime starts and stops repeatedly, idle or right after work") {
    for (int i = 0; i < 20; ++i) {
        runtime rt(runtime::options{.loops = 2});
        if (i % 2 == 0) {
            rt.block_on([&]() -> task<void> {
                auto h = co_await spawn_on(rt.loop(1), add_on(1, 2));
                (void)co_await h;
                // A detached task on the other loop whose end is still travelling home.
                (co_await spawn_on(rt.loop(1), add_on(3, 4))).detach();
            }());
        }
    }
}

// ---- channel, mutex and semaphore shared between loops ----------------------------------

namespace {

struct item {
    int producer;
    int seq;
};

task<void> produce(channel<item>* ch, int producer, int count) {
    for (int i = 0; i < count; ++i) {
        result<void> sent = co_await ch->send(item{producer, i});
        REQUIRE(sent);
    }
}

task<std::vector<item>> consume(channel<item>* ch) {
    std::vector<item> got;
    while (result<item> v = co_await ch->receive()) {
        got.push_back(*v);
    }
    co_return got;
}

// Producers spread over every loop, `consumers` consumers too; returns what each received.
std::vector<std::vector<item>> exchange(runtime& rt, std::size_t capacity, int producers,
                                        int per_producer, int consumers) {
    channel<item> ch(capacity);
    return rt.block_on([&]() -> task<std::vector<std::vector<item>>> {
        std::vector<join_handle<std::vector<item>>> cs;
        for (int c = 0; c < consumers; ++c) {
            cs.push_back(co_await spawn_on(rt.loop(c % rt.size()), consume(&ch)));
        }
        std::vector<join_handle<void>> ps;
        for (int p = 0; p < producers; ++p) {
            ps.push_back(co_await spawn_on(rt.loop(p % rt.size()), produce(&ch, p, per_producer)));
        }
        for (auto& p : ps) {
            (void)co_await p;
        }
        ch.close();
        std::vector<std::vector<item>> all;
        for (auto& c : cs) {
            all.push_back((co_await c).value());
        }
        co_return all;
    }());
}

void check_exchange(const std::vector<std::vector<item>>& all, int producers, int per_producer) {
    std::vector<std::vector<int>> seen(producers, std::vector<int>(per_producer, 0));
    for (const auto& got : all) {
        std::vector<int> last(producers, -1);
        for (const item& v : got) {
            REQUIRE(v.producer >= 0);
            REQUIRE(v.producer < producers);
            // Each consumer sees a producer's values in the order they were sent.
            REQUIRE(v.seq > last[v.producer]);
            last[v.producer] = v.seq;
            ++seen[v.producer][v.seq];
        }
    }
    for (const auto& s : seen) {
        for (int n : s) {
            REQUIRE(n == 1); // no loss, no duplicate
        }
    }
}

task<void> bump(mutex* m, int* counter, int rounds) {
    for (int i = 0; i < rounds; ++i) {
        result<mutex::guard> g = co_await m->lock();
        REQUIRE(g);
        int v = *counter;
        if (i % 8 == 0) {
            co_await sleep_for(0ns); // hold it across a turn: others queue up
        }
        *counter = v + 1;
    }
}

task<void> limited(semaphore* s, std::atomic<int>* inside, std::atomic<int>* most, int rounds) {
    for (int i = 0; i < rounds; ++i) {
        result<void> got = co_await s->acquire();
        REQUIRE(got);
        int now = ++*inside;
        int seen = most->load();
        while (now > seen && !most->compare_exchange_weak(seen, now)) {
        }
        co_await sleep_for(0ns);
        --*inside;
        s->release();
    }
}

// Waits for the lock; either gets it (and gives it back) or is canceled. True if it was
// granted.
task<bool> lock_or_cancel(mutex* m) {
    result<mutex::guard> g = co_await m->lock();
    co_return static_cast<bool>(g);
}

} // namespace

TEST_CASE("a channel carries values between many producers and consumers on several loops") {
    runtime rt(runtime::options{.loops = 3});
    const int producers = 9;
    const int per = static_cast<int>(iterations(2000));
    SUBCASE("buffered, one consumer: every producer's order kept") {
        auto all = exchange(rt, 8, producers, per, 1);
        check_exchange(all, producers, per);
    }
    SUBCASE("unbuffered, three consumers") {
        auto all = exchange(rt, 0, producers, per, 3);
        check_exchange(all, producers, per);
    }
    SUBCASE("buffered, six consumers") {
        auto all = exchange(rt, 64, producers, per, 6);
        check_exchange(all, producers, per);
    }
}

TEST_CASE("a mutex excludes tasks on different loops") {
    runtime rt(runtime::options{.loops = 3});
    mutex m;
    int counter = 0; // guarded by m: TSan checks the hand-offs
    const int rounds = static_cast<int>(iterations(3000));
    rt.block_on([&]() -> task<void> {
        std::vector<join_handle<void>> hs;
        for (int t = 0; t < 6; ++t) {
            hs.push_back(co_await spawn_on(rt.loop(t % 3), bump(&m, &counter, rounds)));
        }
        for (auto& h : hs) {
            (void)co_await h;
        }
    }());
    CHECK(counter == 6 * rounds);
    CHECK_FALSE(m.is_locked());
}

TEST_CASE("a semaphore bounds tasks on different loops") {
    runtime rt(runtime::options{.loops = 3});
    semaphore s(2);
    std::atomic<int> inside{0};
    std::atomic<int> most{0};
    const int rounds = static_cast<int>(iterations(2000));
    rt.block_on([&]() -> task<void> {
        std::vector<join_handle<void>> hs;
        for (int t = 0; t < 6; ++t) {
            hs.push_back(co_await spawn_on(rt.loop(t % 3), limited(&s, &inside, &most, rounds)));
        }
        for (auto& h : hs) {
            (void)co_await h;
        }
    }());
    CHECK(most.load() <= 2);
    CHECK(most.load() >= 1);
    CHECK(s.available() == 2);
}

TEST_CASE("a mutex waiter on one loop canceled while another loop unlocks: never lost") {
    runtime rt(runtime::options{.loops = 2});
    mutex m;
    int granted = 0;
    const std::size_t rounds = iterations(3000);
    rt.block_on([&]() -> task<void> {
        for (std::size_t i = 0; i < rounds; ++i) {
            std::optional<mutex::guard> g = m.try_lock();
            REQUIRE(g);
            auto h = co_await spawn_on(rt.loop(1), lock_or_cancel(&m));
            if (i % 3 != 0) {
                co_await sleep_for(0ns); // let the waiter queue up, sometimes
            }
            // Race: the unlock hands the lock to the waiter on loop 1 while the cancel
            // reaches it there.
            g->unlock();
            h.cancel();
            result<bool> got = co_await h;
            REQUIRE(got);
            granted += *got ? 1 : 0;
            // Granted or canceled, the lock is free again (the guard on loop 1 unlocked it).
            REQUIRE_FALSE(m.is_locked());
        }
    }());
    MESSAGE(granted << " of " << rounds << " waiters got the lock before the cancel");
}

namespace {

// Receives from `a` and `b` through select until both are closed; returns what it got.
task<std::vector<int>> select_receive(channel<int>* a, channel<int>* b) {
    std::vector<int> got;
    bool a_open = true;
    bool b_open = true;
    while (a_open && b_open) {
        result<std::variant<result<int>, result<int>>> r =
            co_await select(a->receive(), b->receive());
        REQUIRE(r);
        result<int> v = r->index() == 0 ? std::get<0>(*r) : std::get<1>(*r);
        if (v) {
            got.push_back(*v);
        } else {
            (r->index() == 0 ? a_open : b_open) = false;
        }
    }
    channel<int>* rest = a_open ? a : b;
    while (result<int> v = co_await rest->receive()) {
        got.push_back(*v);
    }
    co_return got;
}

// Sends `n` values from `first` on: through a select over `a` and `b` when `selecting`.
task<void> select_send(channel<int>* a, channel<int>* b, int first, int n, bool selecting) {
    for (int i = 0; i < n; ++i) {
        if (selecting) {
            result<std::variant<result<void>, result<void>>> r =
                co_await select(a->send(first + i), b->send(first + i));
            REQUIRE(r);
            REQUIRE((r->index() == 0 ? std::get<0>(*r) : std::get<1>(*r)));
        } else {
            result<void> r = co_await (i % 2 == 0 ? a : b)->send(first + i);
            REQUIRE(r);
        }
    }
}

} // namespace

TEST_CASE("selects on several loops share channels: every value taken exactly once") {
    runtime rt(runtime::options{.loops = 3});
    const int per = static_cast<int>(iterations(1500));
    const int producers = 6;
    for (std::size_t capacity : {std::size_t{0}, std::size_t{4}}) {
        CAPTURE(capacity);
        channel<int> a(capacity);
        channel<int> b(capacity);
        std::vector<std::vector<int>> all =
            rt.block_on([&]() -> task<std::vector<std::vector<int>>> {
                std::vector<join_handle<std::vector<int>>> cs;
                for (std::size_t c = 0; c < 3; ++c) {
                    cs.push_back(co_await spawn_on(rt.loop(c), select_receive(&a, &b)));
                }
                std::vector<join_handle<void>> ps;
                for (int p = 0; p < producers; ++p) {
                    // Producers on every loop, half of them selecting between the channels.
                    ps.push_back(co_await spawn_on(rt.loop(static_cast<std::size_t>(p) % 3),
                                                   select_send(&a, &b, p * per, per, p % 2 == 0)));
                }
                for (auto& p : ps) {
                    (void)co_await p;
                }
                a.close();
                b.close();
                std::vector<std::vector<int>> got;
                for (auto& c : cs) {
                    got.push_back((co_await c).value());
                }
                co_return got;
            }());
        std::vector<int> seen(static_cast<std::size_t>(producers * per), 0);
        for (const auto& got : all) {
            for (int v : got) {
                REQUIRE(v >= 0);
                REQUIRE(v < producers * per);
                ++seen[static_cast<std::size_t>(v)];
            }
        }
        for (int n : seen) {
            REQUIRE(n == 1); // no loss, no duplicate
        }
    }
}

namespace {

// Reads one byte written to a fresh pipe through the loop's ring (a read SQE, submitted and
// completed by io_uring_enter).
task<int> read_pipe_byte() {
    int fds[2];
    REQUIRE(::pipe2(fds, O_CLOEXEC) == 0);
    REQUIRE(::write(fds[1], "x", 1) == 1);
    std::array<std::byte, 1> b{};
    result<std::size_t> r = co_await tether::read(fds[0], b);
    ::close(fds[0]);
    ::close(fds[1]);
    co_return r && *r == 1 ? static_cast<int>(b[0]) : -1;
}

} // namespace

TEST_CASE("a loop enters through its ring fd registered on its thread; destroying one on "
          "another thread leaves that thread's registrations alone") {
    loop a;
    CHECK(a.block_on(read_pipe_byte()) == 'x');
    if ((a.ring_flags() & IORING_SETUP_SINGLE_ISSUER) == 0) {
        MESSAGE("no SINGLE_ISSUER ring here: ring fds are not registered");
        return;
    }
    REQUIRE(a.impl().ring_fd_registered());
    // liburing enters through the slot, not the fd.
    CHECK(a.impl().ring().enter_ring_fd != a.impl().ring().ring_fd);
    {
        // Built here, run (and its fd registered) on a thread that has ended by the time the
        // loop is destroyed here. Its slot in that thread's table has the number a's has in
        // this thread's: unregistering it here would cut `a` off its ring (the kernel
        // refuses it: only the ring's own thread may).
        auto b = std::make_unique<loop>();
        std::thread([&b] {
            CHECK(b->block_on(read_pipe_byte()) == 'x');
            CHECK(b->impl().ring_fd_registered());
        }).join();
        REQUIRE(b->impl().ring().enter_ring_fd == a.impl().ring().enter_ring_fd);
    }
    // Without the slot, liburing's enter fails with EBADF (and the read below never completes).
    REQUIRE(io_uring_get_events(&a.impl().ring()) >= 0);
    CHECK(a.block_on(read_pipe_byte()) == 'x');
}

TEST_CASE("loops past the ring fds one thread may register enter by their fd and work the same") {
    // A thread's table holds 16 rings: the loops after that fall back to the plain fd.
    std::vector<std::unique_ptr<loop>> loops;
    int registered = 0;
    for (int i = 0; i < 20; ++i) {
        loops.push_back(std::make_unique<loop>());
        CHECK(loops.back()->block_on(read_pipe_byte()) == 'x');
        registered += loops.back()->impl().ring_fd_registered() ? 1 : 0;
    }
    if ((loops.front()->ring_flags() & IORING_SETUP_SINGLE_ISSUER) == 0) {
        MESSAGE("no SINGLE_ISSUER ring here: ring fds are not registered");
        return;
    }
    CHECK(registered == 16);
    for (auto& l : loops) {
        CHECK(l->block_on(read_pipe_byte()) == 'x');
    }
}
