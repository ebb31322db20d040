#include "context/with_cancel.hpp"
#include "context/with_deadline.hpp"
#include "runtime/channel.hpp"
#include "runtime/loop.hpp"
#include "runtime/spawn.hpp"
#include "runtime/wait_group.hpp"
#include "tests/runtime/sync_support.hpp"
#include "tests/support/manual_loop.hpp"
#include "tests/support/test_util.hpp"

#include <doctest/doctest.h>

#include <barrier>
#include <memory>
#include <optional>
#include <thread>
#include <vector>

using namespace tether;
using namespace std::chrono_literals;
using tether::test::await_into;
using tether::test::counted;
using tether::test::start;

namespace {

using fixture = tether::test::manual_loop;

task<void> send_all(channel<int>* ch, int first, int n, std::vector<std::error_code>* errs) {
    for (int i = 0; i < n; ++i) {
        result<void> r = co_await ch->send(first + i);
        errs->push_back(r.error());
    }
}

task<void> receive_until_closed(channel<int>* ch, std::vector<int>* got, std::error_code* end) {
    result<int> v = co_await ch->receive();
    for (; v; v = co_await ch->receive()) {
        got->push_back(*v);
    }
    *end = v.error();
}

task<void> produce(channel<int>* ch, wait_group* wg, int id, int n) {
    for (int i = 0; i < n; ++i) {
        // GCC 12 miscompiles `co_await` used directly as an if condition: bind the result.
        if (result<void> r = co_await ch->send(id * 100000 + i); !r) {
            break;
        }
    }
    wg->done();
}

task<void> close_when_done(channel<int>* ch, wait_group* wg) {
    if (result<void> r = co_await wg->wait(); r) {
        ch->close();
    }
}

} // namespace

TEST_CASE("an unbuffered send waits until a receiver takes the value") {
    fixture f;
    channel<int> ch;
    std::optional<result<void>> sent;
    auto h = start(f.l, f.l.background(), await_into(&sent, ch.send(7)));
    f.l.run_until_idle();
    CHECK_FALSE(sent);
    CHECK(ch.size() == 0);
    result<int> v = ch.try_receive();
    REQUIRE(v);
    CHECK(*v == 7);
    f.l.run_until_idle();
    REQUIRE(sent);
    CHECK(sent->has_value());
}

TEST_CASE("an unbuffered receive waits until a sender gives a value") {
    fixture f;
    channel<int> ch;
    std::optional<result<int>> got;
    auto h = start(f.l, f.l.background(), await_into(&got, ch.receive()));
    f.l.run_until_idle();
    CHECK_FALSE(got);
    SUBCASE("from try_send") {
        CHECK(ch.try_send(5));
    }
    SUBCASE("from a task whose send completes without waiting") {
        std::optional<result<void>> sent;
        auto s = start(f.l, f.l.background(), await_into(&sent, ch.send(5)));
        f.l.run_until_idle();
        REQUIRE(sent);
        CHECK(sent->has_value());
    }
    f.l.run_until_idle();
    REQUIRE(got);
    REQUIRE(got->has_value());
    CHECK(**got == 5);
}

TEST_CASE("a buffered channel keeps FIFO order and blocks senders only when full") {
    fixture f;
    channel<int> ch(2);
    CHECK(ch.capacity() == 2);
    std::vector<std::error_code> errs;
    auto h = start(f.l, f.l.background(), send_all(&ch, 1, 3, &errs));
    f.l.run_until_idle();
    CHECK(errs.size() == 2); // 1 and 2 buffered, 3 waits
    CHECK(ch.size() == 2);
    CHECK(ch.try_receive().value() == 1);
    CHECK(ch.size() == 2); // the waiting sender refilled the slot
    f.l.run_until_idle();
    CHECK(errs.size() == 3);
    CHECK(ch.try_receive().value() == 2);
    CHECK(ch.try_receive().value() == 3);
    CHECK(ch.try_receive().error() == channel_errc::empty);
    CHECK(h.done());
}

TEST_CASE("waiting receivers are served in arrival order") {
    fixture f;
    channel<int> ch;
    std::optional<result<int>> a, b;
    auto ha = start(f.l, f.l.background(), await_into(&a, ch.receive()));
    f.l.run_until_idle();
    auto hb = start(f.l, f.l.background(), await_into(&b, ch.receive()));
    f.l.run_until_idle();
    CHECK(ch.try_send(1));
    CHECK(ch.try_send(2));
    CHECK(ch.try_send(3).error() == channel_errc::full);
    f.l.run_until_idle();
    REQUIRE(a);
    REQUIRE(b);
    CHECK(a->value() == 1);
    CHECK(b->value() == 2);
}

TEST_CASE("close wakes waiting receivers with closed") {
    fixture f;
    channel<int> ch(4);
    std::optional<result<int>> a, b;
    auto ha = start(f.l, f.l.background(), await_into(&a, ch.receive()));
    auto hb = start(f.l, f.l.background(), await_into(&b, ch.receive()));
    f.l.run_until_idle();
    CHECK(ch.close());
    CHECK(ch.is_closed());
    f.l.run_until_idle();
    REQUIRE(a);
    REQUIRE(b);
    CHECK(a->error() == channel_errc::closed);
    CHECK(b->error() == channel_errc::closed);
}

TEST_CASE("a receive after close drains the buffer, then reports closed") {
    fixture f;
    channel<int> ch(3);
    CHECK(ch.try_send(1));
    CHECK(ch.try_send(2));
    CHECK(ch.close());
    std::vector<int> got;
    std::error_code end;
    auto h = start(f.l, f.l.background(), receive_until_closed(&ch, &got, &end));
    f.l.run_until_idle();
    REQUIRE(h.done());
    CHECK(got == std::vector<int>{1, 2});
    CHECK(end == channel_errc::closed);
    CHECK(ch.try_receive().error() == channel_errc::closed);
}

TEST_CASE("sends on a closed channel fail with closed") {
    fixture f;
    SUBCASE("a send after close") {
        channel<int> ch(1);
        CHECK(ch.close());
        CHECK(ch.try_send(1).error() == channel_errc::closed);
        std::optional<result<void>> sent;
        auto h = start(f.l, f.l.background(), await_into(&sent, ch.send(1)));
        f.l.run_until_idle();
        REQUIRE(sent);
        CHECK(sent->error() == channel_errc::closed);
        CHECK(ch.size() == 0);
    }
    SUBCASE("a waiting sender when the channel closes") {
        channel<int> ch;
        std::optional<result<void>> sent;
        auto h = start(f.l, f.l.background(), await_into(&sent, ch.send(1)));
        f.l.run_until_idle();
        CHECK_FALSE(sent);
        CHECK(ch.close());
        f.l.run_until_idle();
        REQUIRE(sent);
        CHECK(sent->error() == channel_errc::closed);
        CHECK(ch.try_receive().error() == channel_errc::closed); // the value was not delivered
    }
}

TEST_CASE("close returns false when the channel is already closed") {
    channel<int> ch;
    CHECK(ch.close());
    CHECK_FALSE(ch.close());
}

TEST_CASE("try_send and try_receive never suspend and keep the value on failure") {
    channel<std::unique_ptr<int>> ch(1);
    CHECK(ch.try_receive().error() == channel_errc::empty);
    auto a = std::make_unique<int>(1);
    auto b = std::make_unique<int>(2);
    CHECK(ch.try_send(std::move(a)));
    CHECK(a == nullptr);
    CHECK(ch.try_send(std::move(b)).error() == channel_errc::full);
    REQUIRE(b != nullptr); // not moved from
    CHECK(*b == 2);
    CHECK(ch.close());
    CHECK(ch.try_send(std::move(b)).error() == channel_errc::closed);
    CHECK(b != nullptr);
    result<std::unique_ptr<int>> v = ch.try_receive();
    REQUIRE(v);
    CHECK(**v == 1);
    CHECK(ch.try_receive().error() == channel_errc::closed);
}

TEST_CASE("channel errors have their own category and messages") {
    std::error_code e = channel_errc::closed;
    CHECK(e.category() == channel_category());
    CHECK(std::string(e.category().name()) == "tether.channel");
    CHECK(e.message() == "channel closed");
    CHECK(std::error_code(channel_errc::full).message() == "channel full");
    CHECK(std::error_code(channel_errc::empty).message() == "channel empty");
    CHECK(e != errc::canceled);
}

TEST_CASE("operations under an already-canceled context fail at once without queuing") {
    fixture f;
    auto [ctx, cancel] = with_cancel(f.l.background());
    cancel();
    channel<int> ch(1);
    SUBCASE("a receive, even with a value buffered") {
        CHECK(ch.try_send(1));
        std::optional<result<int>> got;
        auto h = start(f.l, ctx, await_into(&got, ch.receive()));
        f.l.run_until_idle();
        REQUIRE(got);
        CHECK(got->error() == errc::canceled);
        CHECK(ch.size() == 1); // the value stays
    }
    SUBCASE("a send, even with room in the buffer") {
        std::optional<result<void>> sent;
        auto h = start(f.l, ctx, await_into(&sent, ch.send(1)));
        f.l.run_until_idle();
        REQUIRE(sent);
        CHECK(sent->error() == errc::canceled);
        CHECK(ch.size() == 0);
    }
    SUBCASE("a send to an unbuffered channel with a receiver waiting") {
        channel<int> ub;
        std::optional<result<int>> got;
        auto r = start(f.l, f.l.background(), await_into(&got, ub.receive()));
        f.l.run_until_idle();
        std::optional<result<void>> sent;
        auto h = start(f.l, ctx, await_into(&sent, ub.send(1)));
        f.l.run_until_idle();
        REQUIRE(sent);
        CHECK(sent->error() == errc::canceled);
        CHECK_FALSE(got); // the receiver still waits
        CHECK(ub.try_send(2));
        f.l.run_until_idle();
        REQUIRE(got);
        CHECK(got->value() == 2);
    }
}

TEST_CASE("a canceled wait resumes with canceled and leaves the queue") {
    fixture f;
    auto [ctx, cancel] = with_cancel(f.l.background());
    channel<int> ch;
    SUBCASE("a receiver") {
        std::optional<result<int>> got;
        auto h = start(f.l, ctx, await_into(&got, ch.receive()));
        f.l.run_until_idle();
        CHECK_FALSE(got);
        cancel();
        f.l.run_until_idle();
        REQUIRE(got);
        CHECK(got->error() == errc::canceled);
        CHECK(ch.try_send(1).error() == channel_errc::full); // nobody is waiting any more
    }
    SUBCASE("a sender: its value is not delivered") {
        std::optional<result<void>> sent;
        auto h = start(f.l, ctx, await_into(&sent, ch.send(1)));
        f.l.run_until_idle();
        CHECK_FALSE(sent);
        cancel();
        f.l.run_until_idle();
        REQUIRE(sent);
        CHECK(sent->error() == errc::canceled);
        CHECK(ch.try_receive().error() == channel_errc::empty);
    }
}

TEST_CASE("a wait under with_timeout resumes with deadline_exceeded at the deadline") {
    fixture f;
    auto [ctx, cancel] = with_timeout(f.l.background(), 50ms);
    channel<int> ch;
    std::optional<result<int>> got;
    auto h = start(f.l, ctx, await_into(&got, ch.receive()));
    f.l.run_until_idle();
    SUBCASE("still waiting 1 ms before") {
        f.clk.advance(49ms);
        f.l.run_until_idle();
        CHECK_FALSE(got);
    }
    SUBCASE("done at the deadline") {
        f.clk.advance(50ms);
        f.l.run_until_idle();
        REQUIRE(got);
        CHECK(got->error() == errc::deadline_exceeded);
        CHECK(ch.try_send(1).error() == channel_errc::full);
    }
}

TEST_CASE("a cancel and a hand-off in the same turn lose nothing") {
    fixture f;
    auto [ctx, cancel] = with_cancel(f.l.background());
    channel<int> ch;
    std::optional<result<int>> got;
    auto h = start(f.l, ctx, await_into(&got, ch.receive()));
    f.l.run_until_idle();
    // Both happen on the loop's thread, inside one task, in either order.
    struct both {
        static task<result<void>> run(channel<int>* c, cancel_handle* k, bool send_first) {
            if (send_first) {
                result<void> r = c->try_send(1);
                (*k)();
                co_return r;
            }
            (*k)();
            co_return c->try_send(1);
        }
    };
    SUBCASE("send, then cancel: the receiver gets the value") {
        result<void> r = f.l.block_on(both::run(&ch, &cancel, true));
        f.l.run_until_idle();
        CHECK(r.has_value());
        REQUIRE(got);
        CHECK(got->value() == 1);
    }
    SUBCASE("cancel, then send: the send finds no receiver and keeps the value") {
        result<void> r = f.l.block_on(both::run(&ch, &cancel, false));
        f.l.run_until_idle();
        CHECK(r.error() == channel_errc::full);
        REQUIRE(got);
        CHECK(got->error() == errc::canceled);
    }
}

TEST_CASE("values in a channel are destroyed with it; a canceled send destroys its value") {
    fixture f;
    counted::reset();
    {
        channel<counted> ch(2);
        CHECK(ch.try_send(counted{}));
        CHECK(ch.try_send(counted{}));
        auto [ctx, cancel] = with_cancel(f.l.background());
        std::optional<result<void>> sent;
        {
            auto h = start(f.l, ctx, await_into(&sent, ch.send(counted{})));
            f.l.run_until_idle();
            CHECK(counted::alive() > 2);
            cancel();
            f.l.run_until_idle();
            CHECK(h.done());
        }
        REQUIRE(sent);
        CHECK(sent->error() == errc::canceled);
        CHECK(counted::alive() == 2); // the buffered ones
    }
    CHECK(counted::alive() == 0);
}

TEST_CASE("many producers and consumers: every value arrives once, in order per producer") {
    fixture f;
    constexpr int producers = 8;
    constexpr int consumers = 5;
    constexpr int per_producer = 500;
    for (std::size_t cap : {std::size_t{0}, std::size_t{1}, std::size_t{16}}) {
        CAPTURE(cap);
        channel<int> ch(cap);
        wait_group wg;
        wg.add(producers);
        std::vector<tether::test::started<void>> hs;
        std::vector<std::vector<int>> got(consumers);
        std::vector<std::error_code> ends(consumers);
        for (int c = 0; c < consumers; ++c) {
            hs.push_back(
                start(f.l, f.l.background(), receive_until_closed(&ch, &got[c], &ends[c])));
        }
        for (int p = 0; p < producers; ++p) {
            hs.push_back(start(f.l, f.l.background(), produce(&ch, &wg, p, per_producer)));
        }
        hs.push_back(start(f.l, f.l.background(), close_when_done(&ch, &wg)));
        f.l.run_until_idle();
        for (auto& h : hs) {
            CHECK(h.done());
        }
        std::vector<int> count(producers, 0);
        for (int c = 0; c < consumers; ++c) {
            CHECK(ends[c] == channel_errc::closed);
            std::vector<int> last(producers, -1);
            for (int v : got[c]) {
                int p = v / 100000;
                int i = v % 100000;
                CHECK(i > last[p]); // a producer's values come out in the order it sent them
                last[p] = i;
                ++count[p];
            }
        }
        for (int p = 0; p < producers; ++p) {
            CHECK(count[p] == per_producer);
        }
    }
}

TEST_CASE("a receive canceled from another thread resumes with canceled") {
    loop l;
    for (std::size_t i = 0; i < tether::test::iterations(2000); ++i) {
        channel<int> ch;
        auto [ctx, cancel] = with_cancel(l.background());
        std::optional<result<int>> got;
        auto h = start(l, ctx, await_into(&got, ch.receive()));
        l.run_until_idle();
        REQUIRE_FALSE(got);
        std::thread th([&cancel] { cancel(); });
        while (!got) {
            l.run_once(); // woken by the cancel
        }
        th.join();
        CHECK(got->error() == errc::canceled);
        CHECK(ch.try_send(1).error() == channel_errc::full);
    }
}

TEST_CASE("a hand-off racing a cancel from another thread loses nothing") {
    loop l;
    for (std::size_t i = 0; i < tether::test::iterations(2000); ++i) {
        channel<int> ch(i % 2); // unbuffered and buffered
        auto [ctx, cancel] = with_cancel(l.background());
        std::optional<result<int>> got;
        auto h = start(l, ctx, await_into(&got, ch.receive()));
        l.run_until_idle();
        REQUIRE_FALSE(got);
        std::barrier go(2);
        std::thread th([&] {
            go.arrive_and_wait();
            cancel();
        });
        go.arrive_and_wait();
        l.poll(); // runs the cancel if it has arrived; the receiver then leaves the queue
        int v = static_cast<int>(i);
        result<void> sent = ch.try_send(std::move(v));
        while (!got) {
            l.run_once();
        }
        th.join();
        // The value is in exactly one place: with the receiver (handed over before the
        // cancel ran), in the buffer, or still with the sender (try_send refused it).
        int places = (got->has_value() ? 1 : 0) + static_cast<int>(ch.size()) + (sent ? 0 : 1);
        CHECK(places == 1);
        if (got->has_value()) {
            CHECK(**got == static_cast<int>(i));
        } else {
            CHECK(got->error() == errc::canceled);
        }
    }
}
