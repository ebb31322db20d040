#include "context/clock.hpp"

#include "context/detail/timer_heap.hpp"
#include "context/manual_clock.hpp"

#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>

namespace tether {

namespace detail {

bool timer_heap::push(timer_node* t) {
    v_.push_back(t);
    t->heap_index = v_.size() - 1;
    sift_up(v_.size() - 1);
    return v_[0] == t;
}

bool timer_heap::remove(timer_node* t) noexcept {
    std::size_t i = t->heap_index;
    if (i >= v_.size() || v_[i] != t) {
        return false;
    }
    t->heap_index = npos;
    timer_node* last = v_.back();
    v_.pop_back();
    if (i < v_.size()) {
        place(i, last);
        sift_up(i);
        sift_down(last->heap_index);
    }
    return true;
}

timer_node* timer_heap::pop_due(time_point now) noexcept {
    if (v_.empty() || v_[0]->when > now) {
        return nullptr;
    }
    timer_node* t = v_[0];
    remove(t);
    return t;
}

void timer_heap::sift_up(std::size_t i) noexcept {
    timer_node* t = v_[i];
    while (i > 0) {
        std::size_t p = (i - 1) / 2;
        if (v_[p]->when <= t->when) {
            break;
        }
        place(i, v_[p]);
        i = p;
    }
    place(i, t);
}

void timer_heap::sift_down(std::size_t i) noexcept {
    timer_node* t = v_[i];
    std::size_t n = v_.size();
    for (;;) {
        std::size_t c = 2 * i + 1;
        if (c >= n) {
            break;
        }
        if (c + 1 < n && v_[c + 1]->when < v_[c]->when) {
            ++c;
        }
        if (t->when <= v_[c]->when) {
            break;
        }
        place(i, v_[c]);
        i = c;
    }
    place(i, t);
}

} // namespace detail

namespace {

// The real clock: steady_clock plus one background thread that fires timers and runs
// posted functions. The thread is woken only when a new timer becomes the earliest, so
// creating and canceling long timeouts (the common case) costs a lock and a heap update.
class real_clock_impl final : public clock, public executor {
public:
    time_point now() const noexcept override { return std::chrono::steady_clock::now(); }

    void schedule(detail::timer_node& t) override {
        std::unique_lock lk(mu_);
        start_locked();
        bool earliest = heap_.push(&t);
        if (earliest && t.when < sleeping_until_) {
            lk.unlock();
            cv_.notify_one();
        }
    }

    bool unschedule(detail::timer_node& t) noexcept override {
        std::lock_guard lk(mu_);
        return heap_.remove(&t);
    }

    void post(std::function<void()> fn) override {
        {
            std::lock_guard lk(mu_);
            start_locked();
            posted_.push_back(std::move(fn));
        }
        cv_.notify_one();
    }

private:
    void start_locked() {
        if (!started_) {
            started_ = true;
            std::thread([this] { run(); }).detach();
        }
    }

    void run() {
        std::unique_lock lk(mu_);
        for (;;) {
            if (!posted_.empty()) {
                auto fn = std::move(posted_.front());
                posted_.pop_front();
                lk.unlock();
                fn();
                lk.lock();
                continue;
            }
            if (detail::timer_node* t = heap_.pop_due(std::chrono::steady_clock::now())) {
                lk.unlock();
                t->fire(t);
                lk.lock();
                continue;
            }
            sleeping_until_ = heap_.next();
            if (sleeping_until_ == time_point::max()) {
                cv_.wait(lk);
            } else {
                cv_.wait_until(lk, sleeping_until_);
            }
            sleeping_until_ = time_point::min();
        }
    }

    std::mutex mu_;
    std::condition_variable cv_;
    detail::timer_heap heap_;
    std::deque<std::function<void()>> posted_;
    // The time the thread sleeps until; min() while it is awake (it rechecks anyway).
    time_point sleeping_until_ = time_point::min();
    bool started_ = false;
};

// Leaked on purpose: the detached thread may still use it while statics are destroyed.
real_clock_impl& the_real_clock() noexcept {
    static auto* c = new real_clock_impl;
    return *c;
}

// Initial-exec: the loop swaps it every turn, and libtether.so is never dlopen()ed late
// enough to need the general TLS model (the node cache makes the same choice).
[[gnu::tls_model("initial-exec")]] constinit thread_local executor* tls_executor = nullptr;

} // namespace

clock& real_clock() noexcept {
    return the_real_clock();
}
executor& real_executor() noexcept {
    return the_real_clock();
}
executor* current_executor() noexcept {
    return tls_executor;
}

namespace detail {
executor* exchange_current_executor(executor* ex) noexcept {
    executor* old = tls_executor;
    tls_executor = ex;
    return old;
}
} // namespace detail

// ---- manual_clock ----------------------------------------------------------------------

manual_clock::manual_clock() noexcept : now_(start().time_since_epoch().count()) {
}
manual_clock::~manual_clock() = default;

time_point manual_clock::start() noexcept {
    // A fixed, recognisable origin: one day past the steady clock's epoch.
    return time_point{std::chrono::hours(24)};
}

time_point manual_clock::now() const noexcept {
    return time_point{duration{now_.load(std::memory_order_acquire)}};
}

void manual_clock::schedule(detail::timer_node& t) {
    std::lock_guard lk(mu_);
    heap_.push(&t);
}

bool manual_clock::unschedule(detail::timer_node& t) noexcept {
    std::lock_guard lk(mu_);
    return heap_.remove(&t);
}

void manual_clock::advance(duration d) {
    std::unique_lock lk(mu_);
    if (d.count() > 0) {
        // Read and write now_ under the lock: two threads advancing by d move it by 2d.
        now_.store(now_.load(std::memory_order_relaxed) + d.count(), std::memory_order_release);
    }
    fire_due(lk);
}

void manual_clock::set(time_point t) {
    std::unique_lock lk(mu_);
    if (t.time_since_epoch().count() > now_.load(std::memory_order_relaxed)) {
        now_.store(t.time_since_epoch().count(), std::memory_order_release);
    }
    fire_due(lk);
}

void manual_clock::fire_due(std::unique_lock<std::mutex>& lk) {
    time_point n = now();
    while (detail::timer_node* tn = heap_.pop_due(n)) {
        lk.unlock();
        tn->fire(tn);
        lk.lock();
    }
    auto observers = observers_;
    lk.unlock();
    for (auto& [id, fn] : observers) {
        fn();
    }
}

std::size_t manual_clock::pending() const {
    std::lock_guard lk(mu_);
    return heap_.size();
}

time_point manual_clock::next_expiry() const {
    std::lock_guard lk(mu_);
    return heap_.next();
}

std::uint64_t manual_clock::observe(std::function<void()> fn) {
    std::lock_guard lk(mu_);
    observers_.emplace_back(next_id_, std::move(fn));
    return next_id_++;
}

void manual_clock::unobserve(std::uint64_t id) {
    std::lock_guard lk(mu_);
    std::erase_if(observers_, [id](const auto& p) { return p.first == id; });
}

} // namespace tether
