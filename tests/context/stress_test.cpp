// Cross-thread races on one context tree: cancels against cancels, registrations, children
// being created and destroyed, and deadlines firing. Each case loops many times so that
// ThreadSanitizer and AddressSanitizer see the interleavings; every wait is on an event.
#include "context/after_func.hpp"
#include "context/context.hpp"
#include "context/manual_clock.hpp"
#include "context/with_cancel.hpp"
#include "context/with_deadline.hpp"
#include "context/with_value.hpp"
#include "tests/support/test_util.hpp"

#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <memory>
#include <mutex>
#include <optional>
#include <system_error>
#include <thread>
#include <vector>

using namespace std::chrono_literals;
using tether::test::iterations;
using tether::test::run_together;

namespace {

const tether::context_key<int> int_key{"n"};
const std::error_code first_cause = std::make_error_code(std::errc::connection_reset);
const std::error_code second_cause = std::make_error_code(std::errc::broken_pipe);

void count_call(void* p) noexcept {
    static_cast<std::atomic<int>*>(p)->fetch_add(1);
}

} // namespace

TEST_CASE("many threads canceling one context cancel it exactly once") {
    for (std::size_t round = 0; round < iterations(2000); ++round) {
        auto [ctx, cancel] = tether::with_cancel_cause(tether::background());
        std::atomic<int> calls{0};
        tether::cancel_registration reg;
        REQUIRE(reg.arm(ctx, &count_call, &calls));
        run_together(4, [&, &cancel = cancel](std::size_t i) {
            cancel(i % 2 == 0 ? first_cause : second_cause);
        });
        CHECK(calls.load() == 1);
        CHECK(ctx.err() == tether::errc::canceled);
        std::error_code c = tether::cause(ctx);
        CHECK((c == first_cause || c == second_cause));
    }
}

TEST_CASE("the cause read while other threads cancel is empty, then one cause for good") {
    // Go's TestCauseRace.
    for (std::size_t round = 0; round < iterations(1000); ++round) {
        auto [ctx, cancel] = tether::with_cancel_cause(tether::background());
        std::atomic<int> bad{0};
        run_together(4, [&, &ctx = ctx, &cancel = cancel](std::size_t i) {
            if (i < 2) {
                cancel(i == 0 ? first_cause : second_cause);
                return;
            }
            std::error_code seen;
            while (!seen) {
                seen = tether::cause(ctx);
                if (seen && seen != first_cause && seen != second_cause) {
                    bad.fetch_add(1);
                }
            }
            if (tether::cause(ctx) != seen || ctx.err() != tether::errc::canceled) {
                bad.fetch_add(1);
            }
        });
        CHECK(bad.load() == 0);
    }
}

TEST_CASE("a registration racing cancellation either runs once or is refused") {
    constexpr std::size_t per_thread = 16;
    for (std::size_t round = 0; round < iterations(1000); ++round) {
        auto [ctx, cancel] = tether::with_cancel(tether::background());
        std::vector<tether::cancel_registration> regs(3 * per_thread);
        std::vector<std::atomic<int>> calls(3 * per_thread);
        std::vector<char> armed(3 * per_thread);
        run_together(4, [&, &ctx = ctx, &cancel = cancel](std::size_t t) {
            if (t == 3) {
                cancel();
                return;
            }
            for (std::size_t k = t * per_thread; k < (t + 1) * per_thread; ++k) {
                armed[k] = regs[k].arm(ctx, &count_call, &calls[k]) ? 1 : 0;
            }
        });
        // Every cancel has returned: armed callbacks have all run, refused ones never will.
        for (std::size_t k = 0; k < regs.size(); ++k) {
            CHECK(calls[k].load() == armed[k]);
        }
        CHECK(tether::detail::registration_count(ctx) == 0);
    }
}

TEST_CASE("a registration disarmed while the context is canceled never runs after disarm") {
    for (std::size_t round = 0; round < iterations(2000); ++round) {
        auto [ctx, cancel] = tether::with_cancel(tether::background());
        struct probe {
            std::atomic<bool> disarmed{false};
            std::atomic<int> late{0};
        };
        auto p = std::make_unique<probe>();
        auto reg = std::make_unique<tether::cancel_registration>();
        auto after_disarm = [](void* d) noexcept {
            auto* pr = static_cast<probe*>(d);
            if (pr->disarmed.load()) {
                pr->late.fetch_add(1);
            }
        };
        REQUIRE(reg->arm(ctx, after_disarm, p.get()));
        run_together(2, [&, &cancel = cancel](std::size_t i) {
            if (i == 0) {
                cancel();
            } else {
                reg.reset(); // disarms; waits if the callback is running
                p->disarmed = true;
            }
        });
        CHECK(p->late.load() == 0);
    }
}

TEST_CASE("cancel_callbacks destroyed while the context is canceled on another thread") {
    for (std::size_t round = 0; round < iterations(2000); ++round) {
        auto [ctx, cancel] = tether::with_cancel(tether::background());
        std::atomic<int> ran{0};
        struct payload {
            std::atomic<int>* ran;
            std::unique_ptr<int> owned = std::make_unique<int>(7);
            void operator()() { ran->fetch_add(*owned == 7 ? 1 : 100); }
        };
        std::optional<tether::cancel_callback<payload>> cb;
        cb.emplace(ctx, payload{&ran});
        run_together(2, [&, &cancel = cancel](std::size_t i) {
            if (i == 0) {
                cancel();
            } else {
                cb.reset(); // the payload is freed only once the callback is not running
            }
        });
        CHECK(ran.load() <= 1);
    }
}

TEST_CASE("children created while the parent is canceled are all canceled") {
    // Go's TestWithCancelSimultaneouslyCanceledParent, with many creators.
    constexpr std::size_t per_thread = 32;
    for (std::size_t round = 0; round < iterations(500); ++round) {
        auto [parent, cancel] = tether::with_cancel_cause(tether::background());
        std::vector<std::pair<tether::context, tether::cancel_handle>> kids(3 * per_thread);
        run_together(4, [&, &parent = parent, &cancel = cancel](std::size_t t) {
            if (t == 3) {
                cancel(first_cause);
                return;
            }
            for (std::size_t k = t * per_thread; k < (t + 1) * per_thread; ++k) {
                kids[k] = tether::with_cancel(parent);
            }
        });
        for (auto& [kid, kid_cancel] : kids) {
            CHECK(kid.err() == tether::errc::canceled);
            CHECK(tether::cause(kid) == first_cause);
        }
        CHECK(tether::detail::registration_count(parent) == 0);
    }
}

TEST_CASE("children canceled at the moment their parent is canceled leave nothing behind") {
    // A child's own cancel races the parent's propagation into it; the child must not be
    // freed while the parent is still running its cancellation.
    constexpr std::size_t kids_per_thread = 8;
    for (std::size_t round = 0; round < iterations(1000); ++round) {
        auto [parent, cancel] = tether::with_cancel(tether::background());
        std::vector<std::optional<std::pair<tether::context, tether::cancel_handle>>> kids(
            3 * kids_per_thread);
        std::vector<std::atomic<int>> calls(3 * kids_per_thread);
        std::vector<tether::cancel_registration> regs(3 * kids_per_thread);
        for (std::size_t k = 0; k < kids.size(); ++k) {
            kids[k] = tether::with_cancel(parent);
            REQUIRE(regs[k].arm(kids[k]->first, &count_call, &calls[k]));
        }
        run_together(4, [&, &cancel = cancel](std::size_t t) {
            if (t == 3) {
                cancel();
                return;
            }
            for (std::size_t k = t * kids_per_thread; k < (t + 1) * kids_per_thread; ++k) {
                regs[k].disarm();
                kids[k].reset(); // cancels the child and drops its last reference
            }
        });
        CHECK(parent.err() == tether::errc::canceled);
        CHECK(tether::detail::registration_count(parent) == 0);
        for (auto& c : calls) {
            CHECK(c.load() <= 1);
        }
    }
}

TEST_CASE("a child dropped while its parent propagates into it outlives the propagation") {
    // The parent's cancel runs the child's cancellation without holding a reference to the
    // child; the child's owners drop it (and its children) meanwhile on other threads.
    for (std::size_t round = 0; round < iterations(1000); ++round) {
        auto [parent, cancel] = tether::with_cancel(tether::background());
        std::optional<std::pair<tether::context, tether::cancel_handle>> kid =
            tether::with_cancel(parent);
        std::vector<std::pair<tether::context, tether::cancel_handle>> grandkids;
        for (int k = 0; k < 32; ++k) {
            grandkids.push_back(tether::with_cancel(kid->first));
        }
        run_together(3, [&, &cancel = cancel](std::size_t t) {
            if (t == 0) {
                cancel();
            } else if (t == 1) {
                kid.reset();
            } else {
                while (!grandkids.empty()) {
                    grandkids.pop_back();
                }
            }
        });
        CHECK(tether::detail::registration_count(parent) == 0);
    }
}

TEST_CASE("a deep tree canceled from several levels at once ends canceled everywhere") {
    // Go's TestSimultaneousCancels, with every level canceled from its own thread.
    for (std::size_t round = 0; round < iterations(300); ++round) {
        std::vector<std::pair<tether::context, tether::cancel_handle>> levels;
        levels.push_back(tether::with_cancel(tether::background()));
        for (int i = 0; i < 15; ++i) {
            auto v = tether::with_value(levels.back().first, int_key, i);
            levels.push_back(tether::with_cancel(v));
            levels.push_back(tether::with_cancel(levels[static_cast<std::size_t>(i)].first));
        }
        std::vector<tether::context> leaves;
        for (auto& l : levels) {
            leaves.push_back(l.first);
        }
        run_together(4, [&](std::size_t t) {
            for (std::size_t k = levels.size(); k-- > 0;) {
                if (k % 4 == t) {
                    levels[k].second.cancel();
                }
            }
        });
        for (auto& l : leaves) {
            CHECK(l.err() == tether::errc::canceled);
        }
        levels.clear();
        for (auto& l : leaves) {
            CHECK(tether::detail::registration_count(l) == 0);
        }
    }
}

TEST_CASE("children made and dropped while the parent is canceled from another thread") {
    constexpr std::size_t per_thread = 64;
    for (std::size_t round = 0; round < iterations(300); ++round) {
        auto [parent, cancel] = tether::with_cancel(tether::background());
        std::vector<std::pair<tether::context, tether::cancel_handle>> kept(2 * per_thread);
        run_together(3, [&, &parent = parent, &cancel = cancel](std::size_t t) {
            if (t == 2) {
                cancel();
                return;
            }
            for (std::size_t k = t * per_thread; k < (t + 1) * per_thread; ++k) {
                auto [child, child_cancel] = tether::with_cancel(parent);
                kept[k] = tether::with_cancel(child);
                if (k % 2 == 0) {
                    child_cancel();
                }
                // child and child_cancel are dropped here, racing the parent's cancel.
            }
        });
        for (auto& [grandchild, gc_cancel] : kept) {
            CHECK(grandchild.err() == tether::errc::canceled);
        }
        CHECK(tether::detail::registration_count(parent) == 0);
    }
}

TEST_CASE("deadlines firing on the manual clock race cancels and new children") {
    tether::manual_clock clk;
    auto root = tether::background(clk);
    for (std::size_t round = 0; round < iterations(300); ++round) {
        auto [parent, cancel] = tether::with_timeout(root, 1ms);
        std::vector<tether::context> kids(64);
        std::vector<tether::cancel_handle> handles(64);
        run_together(4, [&, &parent = parent, &cancel = cancel](std::size_t t) {
            if (t == 0) {
                clk.advance(1ms);
                return;
            }
            if (t == 3) {
                cancel();
                return;
            }
            for (std::size_t k = (t - 1) * 32; k < t * 32; ++k) {
                auto [kid, h] = tether::with_timeout(parent, 2ms);
                kids[k] = kid;
                handles[k] = std::move(h);
            }
        });
        CHECK(parent.is_done());
        for (auto& kid : kids) {
            CHECK(kid.is_done());
        }
        handles.clear();
        CHECK(clk.pending() == 0);
    }
}

TEST_CASE("timeouts on the real clock created and canceled from many threads") {
    // Short timeouts fire on the clock's thread while other threads cancel and drop them.
    std::atomic<int> not_done{0};
    run_together(4, [&](std::size_t t) {
        for (std::size_t k = 0; k < iterations(2000); ++k) {
            auto [ctx, cancel] =
                tether::with_timeout(tether::background(), std::chrono::microseconds(k % 50));
            auto [child, child_cancel] = tether::with_cancel(ctx);
            if ((k + t) % 3 == 0) {
                cancel();
                if (!child.is_done()) {
                    not_done.fetch_add(1);
                }
            }
        }
    });
    CHECK(not_done.load() == 0);

    // And one that is left to fire: done within a generous bound, never asserted as fast.
    auto [ctx, cancel] = tether::with_timeout(tether::background(), 1ms);
    std::mutex mu;
    std::condition_variable cv;
    bool fired = false;
    tether::cancel_callback cb(ctx, [&] {
        std::lock_guard lk(mu);
        fired = true;
        cv.notify_all();
    });
    std::unique_lock lk(mu);
    REQUIRE(cv.wait_for(lk, 10s, [&] { return fired; }));
    CHECK(ctx.err() == tether::errc::deadline_exceeded);
}

TEST_CASE("after_func stop racing cancel: fn runs exactly when stop returns false") {
    struct inline_executor final : tether::executor {
        void post(std::function<void()> fn) override { fn(); }
    };
    inline_executor ex;
    for (std::size_t round = 0; round < iterations(2000); ++round) {
        auto [ctx, cancel] = tether::with_cancel(tether::background());
        std::atomic<int> ran{0};
        tether::executor* old = tether::detail::exchange_current_executor(&ex);
        tether::after_func_handle h = tether::after_func(ctx, [&ran] { ran.fetch_add(1); });
        tether::detail::exchange_current_executor(old);
        std::atomic<bool> stopped{false};
        run_together(2, [&, &cancel = cancel](std::size_t i) {
            if (i == 0) {
                cancel();
            } else {
                stopped = h.stop();
            }
        });
        CHECK(ran.load() == (stopped.load() ? 0 : 1));
        CHECK_FALSE(h.stop());
    }
}

TEST_CASE("after_func handles dropped while the context is canceled free everything") {
    tether::test::counted::reset();
    struct inline_executor final : tether::executor {
        void post(std::function<void()> fn) override { fn(); }
    };
    inline_executor ex;
    for (std::size_t round = 0; round < iterations(2000); ++round) {
        auto [ctx, cancel] = tether::with_cancel(tether::background());
        tether::executor* old = tether::detail::exchange_current_executor(&ex);
        std::optional<tether::after_func_handle> h;
        h.emplace(tether::after_func(ctx, [c = tether::test::counted{}] { (void)c; }));
        tether::detail::exchange_current_executor(old);
        run_together(2, [&, &cancel = cancel](std::size_t i) {
            if (i == 0) {
                cancel();
            } else {
                h.reset();
            }
        });
    }
    CHECK(tether::test::counted::alive() == 0);
}
