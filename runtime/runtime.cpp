#include "runtime/runtime.hpp"

#include "runtime/detail/loop_impl.hpp"

#include <pthread.h>
#include <sched.h>

namespace tether {

void runtime::done_signal::wait() {
    std::unique_lock lk(mu);
    cv.wait(lk, [this] { return done; });
}

void runtime::done_signal::set() {
    // Notified under the lock: the waiter can't return (and destroy this) before we unlock.
    std::lock_guard lk(mu);
    done = true;
    cv.notify_one();
}

runtime::runtime() : runtime(options{}) {
}

runtime::runtime(options opts) {
    std::size_t n = opts.loops;
    if (n == 0) {
        n = std::max(1u, std::thread::hardware_concurrency());
    }
    barrier_ = std::make_unique<std::barrier<>>(static_cast<std::ptrdiff_t>(n));
    loops_.reserve(n);
    for (std::size_t i = 0; i < n; ++i) {
        // Built here; each ring is enabled (bound) by the thread that runs it.
        loops_.push_back(std::make_unique<tether::loop>(opts.loop_options));
    }
    std::vector<int> cpus;
    if (opts.pin) {
        cpu_set_t set;
        CPU_ZERO(&set);
        if (::sched_getaffinity(0, sizeof set, &set) == 0) {
            for (int c = 0; c < CPU_SETSIZE; ++c) {
                if (CPU_ISSET(c, &set)) {
                    cpus.push_back(c);
                }
            }
        }
    }
    threads_.reserve(n);
    try {
        for (std::size_t i = 0; i < n; ++i) {
            threads_.emplace_back([l = loops_[i].get(), b = barrier_.get()] {
                // Not loop::run(): it clears a stop that may already have been asked for.
                detail::loop_impl& impl = l->impl();
                impl.run_until_stopped();
                // Run, a few times in step with the other loops, what they posted here while
                // stopping (a spawned task's end, a resumption), so that no frame is leaked
                // in a queue. Each ring stays with its own thread.
                for (int round = 0; round < 3; ++round) {
                    b->arrive_and_wait();
                    impl.run_once(duration::zero());
                }
            });
            if (!cpus.empty()) {
                cpu_set_t set;
                CPU_ZERO(&set);
                CPU_SET(cpus[i % cpus.size()], &set);
                ::pthread_setaffinity_np(threads_.back().native_handle(), sizeof set, &set);
            }
        }
    } catch (...) {
        // The threads already started would wait at the barrier for the rest: drop them out.
        for (std::size_t i = threads_.size(); i < n; ++i) {
            barrier_->arrive_and_drop();
        }
        stop();
        for (std::thread& t : threads_) {
            t.join();
        }
        throw;
    }
}

runtime::~runtime() {
    stop();
    for (std::thread& t : threads_) {
        t.join();
    }
}

void runtime::stop() noexcept {
    for (auto& l : loops_) {
        l->stop();
    }
}

} // namespace tether
