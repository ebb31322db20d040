#pragma once
// Small helpers shared by the test suites.
//   counted          a value type that counts its live instances (cppcoro's counted)
//   iterations(n)    how many rounds a stress loop runs: n, or fewer under ThreadSanitizer
//   under_tsan(), under_asan(), under_sanitizer()   which sanitizer the test was built with
//   run_together     starts n threads that begin at the same moment, and joins them

#include <atomic>
#include <barrier>
#include <cstddef>
#include <thread>
#include <vector>

namespace tether::test {

/// A value that counts constructions and destructions, to check that frames, contexts and
/// callbacks destroy what they hold.
///
/// The counters are global: call `counted::reset()` at the start of a test, and check
/// `counted::alive()` at the end.
///
/// Thread safety: the counters are atomic; instances may be made and destroyed on any thread.
///
/// Example:
///
///     counted::reset();
///     {
///         auto ctx = with_value(background(), key, counted{});
///         CHECK(counted::alive() == 1);
///     }
///     CHECK(counted::alive() == 0);
struct counted {
    static inline std::atomic<int> default_constructions{0};
    static inline std::atomic<int> copy_constructions{0};
    static inline std::atomic<int> move_constructions{0};
    static inline std::atomic<int> destructions{0};

    /// Sets every counter to zero.
    static void reset() noexcept {
        default_constructions = 0;
        copy_constructions = 0;
        move_constructions = 0;
        destructions = 0;
    }

    /// Returns how many instances have been constructed in all.
    static int constructions() noexcept {
        return default_constructions + copy_constructions + move_constructions;
    }

    /// Returns how many instances are alive now.
    static int alive() noexcept { return constructions() - destructions; }

    counted() noexcept : id(default_constructions++) {}
    counted(const counted& o) noexcept : id(o.id) { ++copy_constructions; }
    counted(counted&& o) noexcept : id(o.id) { ++move_constructions; }
    counted& operator=(const counted&) noexcept = default;
    counted& operator=(counted&&) noexcept = default;
    ~counted() { ++destructions; }

    int id; ///< which default construction this instance descends from
};

/// Returns true when the tests were built with ThreadSanitizer.
constexpr bool under_tsan() noexcept {
#if defined(__SANITIZE_THREAD__)
    return true;
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
    return true;
#else
    return false;
#endif
#else
    return false;
#endif
}

/// Returns true when the tests were built with AddressSanitizer.
constexpr bool under_asan() noexcept {
#if defined(__SANITIZE_ADDRESS__)
    return true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
    return true;
#else
    return false;
#endif
#else
    return false;
#endif
}

/// Returns true under ASan or TSan. GCC doesn't turn calls into tail calls there, so
/// symmetric transfer between coroutines grows the stack with every resumption: a test of
/// a chain a million awaits deep would overflow it.
constexpr bool under_sanitizer() noexcept {
    return under_asan() || under_tsan();
}

/// Returns how many rounds a stress loop should run: `n`, or a tenth of it (at least one)
/// under ThreadSanitizer, which runs such loops 5 to 15 times slower.
constexpr std::size_t iterations(std::size_t n) noexcept {
    if (under_tsan()) {
        return n / 10 > 0 ? n / 10 : 1;
    }
    return n;
}

/// Runs `fn(i)` on `n` threads, `i` from 0 to n - 1, released together by a barrier so that
/// they race, and returns once all have finished.
///
/// Use it for races that must happen at the same moment (cancel against register, two
/// cancels); loop it `iterations(...)` times. It waits on events, never on time.
template <class Fn>
void run_together(std::size_t n, Fn fn) {
    std::barrier start(static_cast<std::ptrdiff_t>(n));
    std::vector<std::jthread> threads;
    threads.reserve(n);
    for (std::size_t i = 0; i < n; ++i) {
        threads.emplace_back([&start, &fn, i] {
            start.arrive_and_wait();
            fn(i);
        });
    }
}

} // namespace tether::test
