#include "runtime/offload.hpp"

#include "runtime/loop.hpp"

#include <algorithm>
#include <cassert>
#include <condition_variable>
#include <deque>
#include <thread>

namespace tether::detail {

namespace {

// The process-wide pool: threads start when a call finds none idle, up to max_threads,
// and then stay. It is never destroyed, so exit() doesn't wait for a function still
// running on it (as Go's runtime doesn't).
class offload_pool {
public:
    static constexpr std::size_t max_threads = 16;

    void submit(std::function<void()> job) {
        std::unique_lock lk(mu_);
        jobs_.push_back(std::move(job));
        if (jobs_.size() > idle_ && threads_ < max_threads) {
            try {
                std::thread([this] { work(); }).detach();
                ++threads_;
            } catch (...) {
                if (threads_ == 0) {
                    jobs_.pop_back();
                    throw;
                }
                // Some thread will get to it.
            }
        }
        lk.unlock();
        cv_.notify_one();
    }

private:
    void work() {
        std::unique_lock lk(mu_);
        for (;;) {
            ++idle_;
            cv_.wait(lk, [this] { return !jobs_.empty(); });
            --idle_;
            std::function<void()> job = std::move(jobs_.front());
            jobs_.pop_front();
            lk.unlock();
            job();
            job = nullptr; // drop what it holds before waiting again
            lk.lock();
        }
    }

    std::mutex mu_;
    std::condition_variable cv_;
    std::deque<std::function<void()>> jobs_;
    std::size_t idle_ = 0;
    std::size_t threads_ = 0;
};

offload_pool& pool() {
    static auto* p = new offload_pool; // never destroyed: see offload_pool
    return *p;
}

// The context is done (loop thread): resume now, with the value if it is already there.
void offload_cancel(waiter* w) noexcept {
    auto* st = static_cast<offload_shared*>(w->data);
    bool ready;
    {
        std::lock_guard lk(st->mu);
        ready = st->ready;
        st->abandoned = !ready;
    }
    w->finish(ready ? std::error_code{} : w->cancel_error());
}

} // namespace

bool offload_begin(const std::shared_ptr<offload_shared>& st, const context& c,
                   std::coroutine_handle<> h) {
    loop* l = current_loop();
    assert(l != nullptr && "offload must be awaited on a running loop");
    waiter& w = st->w;
    w.lp = l;
    w.handle = h;
    w.data = st.get();
    w.on_cancel = &offload_cancel;
    if (!w.arm(c)) {
        return false;
    }
    try {
        pool().submit([st] {
            st->run();
            std::lock_guard lk(st->mu);
            st->ready = true;
            // Posting under the lock: an awaiter that has not abandoned the call is still
            // suspended, so its loop is alive until we are done with it.
            if (!st->abandoned) {
                st->w.lp->post([st] {
                    // Wait for the pool thread to leave post() (it still writes the loop's
                    // wake pipe after queueing this): once the coroutine resumes, the loop
                    // may be destroyed.
                    {
                        std::lock_guard barrier(st->mu);
                    }
                    if (!st->w.completed) {
                        st->w.finish({});
                    }
                });
            }
        });
    } catch (...) {
        w.finish_quietly({});
        throw;
    }
    return true;
}

} // namespace tether::detail
