// context_bench: the workloads of Go's src/context/benchmark_test.go, case for case and under
// the same names, on tether's context; with --go, Go's own benchmark side by side.
//
//   context_bench                 every case, 3 rounds of about 1 s each, as a table
//   context_bench --quick         one round of about 0.1 s each (--benchtime T: Go's syntax)
//   context_bench --rounds N      N rounds (default 3, 1 with --quick): the table shows the
//                                 median and the spread
//   context_bench --go            also run `go test -bench . context` and print Go/tether
//   context_bench --json FILE     also write the results as JSON
//   context_bench --bench PATTERN only the cases that match, with Go's -bench rules
//
// Each round runs every case on tether, then on Go (A B A B). Each run goes like Go's
// testing.B: once with n = 1, then with n predicted from the last run, until one run takes at
// least the bench time. ns/op is that run's time over n; allocs/op counts the calls to the
// global operator new (replaced below) made by the benchmark thread.

#include "benches/support/process.hpp"
#include "context/context.hpp"
#include "context/with_cancel.hpp"
#include "context/with_deadline.hpp"
#include "context/with_value.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <functional>
#include <new>
#include <optional>
#include <regex>
#include <string>
#include <string_view>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

// ---- counting allocator --------------------------------------------------------------------
//
// Per thread and without atomics, so that counting costs next to nothing: every workload runs
// on the main thread, and the real clock's thread allocates nothing while no timer fires.

namespace {

using tether::bench::find_go;
using tether::bench::go_cache_dir;
using tether::bench::go_environment;
using tether::bench::json_escape;
using tether::bench::run_command;

struct alloc_stats {
    std::uint64_t count = 0;
    std::uint64_t bytes = 0;
};
thread_local alloc_stats tls_allocs;

void* counted_alloc(std::size_t n) {
    ++tls_allocs.count;
    tls_allocs.bytes += n;
    return std::malloc(n == 0 ? 1 : n);
}

void* counted_alloc(std::size_t n, std::align_val_t al) {
    ++tls_allocs.count;
    tls_allocs.bytes += n;
    auto a = static_cast<std::size_t>(al);
    a = a < sizeof(void*) ? sizeof(void*) : a;
    return std::aligned_alloc(a, (n + a - 1) / a * a);
}

void* counted_alloc_or_throw(std::size_t n) {
    if (void* p = counted_alloc(n)) {
        return p;
    }
    throw std::bad_alloc();
}

void* counted_alloc_or_throw(std::size_t n, std::align_val_t al) {
    if (void* p = counted_alloc(n, al)) {
        return p;
    }
    throw std::bad_alloc();
}

} // namespace

void* operator new(std::size_t n) {
    return counted_alloc_or_throw(n);
}
void* operator new[](std::size_t n) {
    return counted_alloc_or_throw(n);
}
void* operator new(std::size_t n, std::align_val_t al) {
    return counted_alloc_or_throw(n, al);
}
void* operator new[](std::size_t n, std::align_val_t al) {
    return counted_alloc_or_throw(n, al);
}
void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
    return counted_alloc(n);
}
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept {
    return counted_alloc(n);
}
void* operator new(std::size_t n, std::align_val_t al, const std::nothrow_t&) noexcept {
    return counted_alloc(n, al);
}
void* operator new[](std::size_t n, std::align_val_t al, const std::nothrow_t&) noexcept {
    return counted_alloc(n, al);
}
void operator delete(void* p) noexcept {
    std::free(p);
}
void operator delete[](void* p) noexcept {
    std::free(p);
}
void operator delete(void* p, std::size_t) noexcept {
    std::free(p);
}
void operator delete[](void* p, std::size_t) noexcept {
    std::free(p);
}
void operator delete(void* p, std::align_val_t) noexcept {
    std::free(p);
}
void operator delete[](void* p, std::align_val_t) noexcept {
    std::free(p);
}
void operator delete(void* p, std::size_t, std::align_val_t) noexcept {
    std::free(p);
}
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept {
    std::free(p);
}
void operator delete(void* p, const std::nothrow_t&) noexcept {
    std::free(p);
}
void operator delete[](void* p, const std::nothrow_t&) noexcept {
    std::free(p);
}
void operator delete(void* p, std::align_val_t, const std::nothrow_t&) noexcept {
    std::free(p);
}
void operator delete[](void* p, std::align_val_t, const std::nothrow_t&) noexcept {
    std::free(p);
}

namespace {

using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;

// Makes the optimizer assume `*p` is read and written by someone it can't see, so that work
// whose result is unused is still done (Chandler Carruth's escape and clobber).
template <class T>
void escape(T* p) {
    asm volatile("" : : "g"(p) : "memory");
}

// ---- the harness ---------------------------------------------------------------------------

/// What a case function gets: run the workload `n` times between the timer's start and stop.
class bench_state {
public:
    explicit bench_state(std::int64_t iterations) : n(iterations) {}

    const std::int64_t n;

    /// Forgets the time and allocations so far (after set-up).
    void reset_timer() {
        elapsed_ = {};
        allocs_ = {};
        if (running_) {
            mark();
        }
    }
    void start_timer() {
        if (!running_) {
            running_ = true;
            mark();
        }
    }
    void stop_timer() {
        if (running_) {
            auto now = steady::now();
            elapsed_ += now - start_;
            allocs_.count += tls_allocs.count - start_allocs_.count;
            allocs_.bytes += tls_allocs.bytes - start_allocs_.bytes;
            running_ = false;
        }
    }

    steady::duration elapsed() const { return elapsed_; }
    alloc_stats allocs() const { return allocs_; }

private:
    void mark() {
        start_allocs_ = tls_allocs;
        start_ = steady::now();
    }
    bool running_ = false;
    steady::time_point start_{};
    steady::duration elapsed_{};
    alloc_stats start_allocs_;
    alloc_stats allocs_;
};

struct bench_case {
    std::string name; // Go's name without "Benchmark"
    std::function<void(bench_state&)> fn;
};

struct result {
    std::int64_t n = 0;
    double ns_per_op = 0;
    double allocs_per_op = 0;
    double bytes_per_op = 0;
};

/// How long to run each case: a duration, or a fixed count of iterations (Go's -benchtime).
struct bench_time {
    steady::duration d = std::chrono::seconds(1);
    std::int64_t n = 0; // > 0: exactly n iterations

    /// Returns the value of Go's -benchtime flag: "1s", "0.1s" or "100x".
    std::string flag() const {
        if (n > 0) {
            return fmt::format("{}x", n);
        }
        return fmt::format("{}s", std::chrono::duration<double>(d).count());
    }
};

struct run_stats {
    steady::duration elapsed;
    alloc_stats allocs;
};

run_stats run_n(const bench_case& c, std::int64_t n) {
    bench_state b(n);
    b.start_timer();
    c.fn(b);
    b.stop_timer();
    return {b.elapsed(), b.allocs()};
}

// Runs `c` the way Go's testing.B does: n = 1 first, then n from the last run's time, 1.2x
// what that predicts, at most 100x the last n and at least one more, until a run lasts
// `bt.d`. A fixed count runs once.
result measure(const bench_case& c, bench_time bt) {
    std::int64_t n = bt.n > 0 ? bt.n : 1;
    run_stats s = run_n(c, n);
    const std::int64_t goal = std::chrono::nanoseconds(bt.d).count();
    while (bt.n == 0 && s.elapsed < bt.d && n < 1'000'000'000) {
        std::int64_t last = n;
        std::int64_t prev_ns =
            std::max<std::int64_t>(std::chrono::nanoseconds(s.elapsed).count(), 1);
        // Multiply first: for fast cases n and the nanoseconds are close.
        auto next = static_cast<std::int64_t>(static_cast<double>(goal) * static_cast<double>(n) /
                                              static_cast<double>(prev_ns));
        next += next / 5;
        next = std::min(next, 100 * last);
        next = std::max(next, last + 1);
        n = std::min<std::int64_t>(next, 1'000'000'000);
        s = run_n(c, n);
    }
    double dn = static_cast<double>(n);
    return {n, static_cast<double>(std::chrono::nanoseconds(s.elapsed).count()) / dn,
            static_cast<double>(s.allocs.count) / dn, static_cast<double>(s.allocs.bytes) / dn};
}

// ---- the workloads -------------------------------------------------------------------------
//
// Each follows the loop of the Go benchmark of the same name. Where Go drops a CancelFunc, a
// cancel_handle can't be dropped without canceling (that is its point), so the handles are
// kept until the end of the op and destroyed there, inside the timed loop: Go pays for its
// garbage inside the loop too.

using tether::background;
using tether::cancel_handle;
using tether::context;
using tether::context_key;

// Go's CommonParentCancel does 2 x 100 dependent integer divisions per op besides the context
// work, to space the operations out; so do we, with `x` hidden from the optimizer as Go's is.
void busy_work(std::int64_t& x) {
    for (int i = 0; i < 100; ++i) {
        x /= x + 1;
    }
}

const context_key<std::string> common_key{"key"};

void common_parent_cancel(bench_state& b) {
    context root = tether::with_value(background(), common_key, std::string("value"));
    auto [shared, shared_cancel] = tether::with_cancel(root);
    b.reset_timer();
    std::int64_t x = 0;
    escape(&x);
    for (std::int64_t i = 0; i < b.n; ++i) {
        auto [ctx, cancel] = tether::with_cancel(shared);
        const std::string* v = ctx.value(common_key);
        if (v == nullptr || *v != "value") {
            std::fputs("CommonParentCancel: value not found\n", stderr);
            std::abort();
        }
        busy_work(x);
        cancel();
        busy_work(x);
    }
    escape(&x);
}

// The busy work of CommonParentCancel alone, to tell how much of that case is context work.
void common_parent_cancel_busy_work(bench_state& b) {
    std::int64_t x = 0;
    escape(&x);
    for (std::int64_t i = 0; i < b.n; ++i) {
        busy_work(x);
        escape(&x); // the context calls in between make x a memory operand there too
        busy_work(x);
        escape(&x);
    }
}

// Go spreads the `concurrency` long-lived timeouts over GOMAXPROCS goroutines and runs the
// loop on each P; with -cpu 1 that is one goroutine, and here one thread.
void with_timeout(bench_state& b, int concurrency) {
    context root = background();
    std::vector<cancel_handle> ccf;
    ccf.reserve(static_cast<std::size_t>(concurrency));
    for (int j = 0; j < concurrency; ++j) {
        ccf.push_back(tether::with_timeout(root, 1h).second);
    }
    b.reset_timer();
    {
        std::array<cancel_handle, 10> wcf;
        for (std::int64_t i = 0; i < b.n; ++i) {
            for (cancel_handle& f : wcf) {
                f = tether::with_timeout(root, 1h).second;
            }
            for (const cancel_handle& f : wcf) {
                f();
            }
        }
        b.stop_timer();
    }
    ccf.clear(); // cancels them
}

// Go's buildContextTree: a chain of `depth` with_cancel children under `root`.
void build_context_tree(context root, int depth, std::vector<cancel_handle>& keep) {
    for (int d = 0; d < depth; ++d) {
        auto [ctx, cancel] = tether::with_cancel(root);
        root = std::move(ctx);
        keep.push_back(std::move(cancel));
    }
}

enum class tree_root { background, open_canceler, closed_canceler };

void cancel_tree(bench_state& b, int depth, tree_root kind) {
    std::vector<cancel_handle> keep;
    keep.reserve(static_cast<std::size_t>(depth));
    b.reset_timer();
    for (std::int64_t i = 0; i < b.n; ++i) {
        switch (kind) {
        case tree_root::background:
            build_context_tree(background(), depth, keep);
            break;
        case tree_root::open_canceler: {
            auto [ctx, cancel] = tether::with_cancel(background());
            build_context_tree(ctx, depth, keep);
            cancel();
            break;
        }
        case tree_root::closed_canceler: {
            auto [ctx, cancel] = tether::with_cancel(background());
            cancel();
            build_context_tree(ctx, depth, keep);
            break;
        }
        }
        keep.clear();
    }
}

void check_canceled_err(bench_state& b) {
    auto [ctx, cancel] = tether::with_cancel(background());
    cancel();
    b.reset_timer();
    for (std::int64_t i = 0; i < b.n; ++i) {
        std::error_code e = ctx.err();
        escape(&e);
    }
}

// Go: select { case <-ctx.Done(): default: }
void check_canceled_done(bench_state& b) {
    auto [ctx, cancel] = tether::with_cancel(background());
    cancel();
    b.reset_timer();
    for (std::int64_t i = 0; i < b.n; ++i) {
        bool done = static_cast<bool>(ctx.done());
        escape(&done);
    }
}

// Go runs it with RunParallel; with -cpu 1 that is one goroutine.
void context_cancel_done(bench_state& b) {
    auto [ctx, cancel] = tether::with_cancel(background());
    b.reset_timer();
    for (std::int64_t i = 0; i < b.n; ++i) {
        bool done = static_cast<bool>(ctx.done());
        escape(&done);
    }
}

// Go's keys are the ints 0..depth-1 and it looks up -1, which is in no node; tether's keys
// compare by identity, so each depth gets distinct key objects and one that is never stored.
constexpr int max_value_depth = 100;
const std::array<context_key<int>, max_value_depth> value_keys{};
const context_key<int> missing_key{"missing"};

void deep_value_same_goroutine(bench_state& b, int depth) {
    context ctx = background();
    for (int i = 0; i < depth; ++i) {
        ctx = tether::with_value(ctx, value_keys[static_cast<std::size_t>(i)], i);
    }
    b.reset_timer();
    for (std::int64_t i = 0; i < b.n; ++i) {
        const int* v = ctx.value(missing_key);
        escape(&v);
    }
}

std::vector<bench_case> all_cases() {
    std::vector<bench_case> cases;
    cases.push_back({"CommonParentCancel", common_parent_cancel});
    for (int c = 40; c <= 400'000; c *= 100) {
        cases.push_back({fmt::format("WithTimeout/concurrency={}", c),
                         [c](bench_state& b) { with_timeout(b, c); }});
    }
    for (int d : {1, 10, 100, 1000}) {
        for (auto [kind, name] : {std::pair{tree_root::background, "Background"},
                                  std::pair{tree_root::open_canceler, "OpenCanceler"},
                                  std::pair{tree_root::closed_canceler, "ClosedCanceler"}}) {
            cases.push_back({fmt::format("CancelTree/depth={}/Root={}", d, name),
                             [d, kind = kind](bench_state& b) { cancel_tree(b, d, kind); }});
        }
    }
    cases.push_back({"CheckCanceled/Err", check_canceled_err});
    cases.push_back({"CheckCanceled/Done", check_canceled_done});
    cases.push_back({"ContextCancelDone", context_cancel_done});
    for (int d : {10, 20, 30, 50, 100}) {
        cases.push_back({fmt::format("DeepValueSameGoRoutine/depth={}", d),
                         [d](bench_state& b) { deep_value_same_goroutine(b, d); }});
    }
    return cases;
}

// Go's cases that time something other than the context (a goroutine per op), shown with
// Go's numbers only.
constexpr std::string_view not_run_prefix = "DeepValueNewGoRoutine/";

// ---- Go's -bench pattern -------------------------------------------------------------------

// Splits at the slashes that are outside brackets, as Go's testing package splits patterns.
std::vector<std::string> split_pattern(const std::string& p) {
    std::vector<std::string> parts;
    std::string cur;
    int depth = 0;
    for (char ch : p) {
        if (ch == '[') {
            ++depth;
        } else if (ch == ']' && depth > 0) {
            --depth;
        }
        if (ch == '/' && depth == 0) {
            parts.push_back(cur);
            cur.clear();
        } else {
            cur += ch;
        }
    }
    parts.push_back(cur);
    return parts;
}

// Returns true if `name` ("CancelTree/depth=1/Root=Background") matches `pattern` the way
// `go test -bench pattern` selects it: each slash-separated element is an unanchored regex
// for the name's element at that level, the first one against "Benchmark" + the name.
bool matches(const std::vector<std::regex>& pattern, std::string_view name) {
    std::size_t level = 0;
    std::size_t start = 0;
    while (level < pattern.size()) {
        std::size_t slash = name.find('/', start);
        std::string elem(name.substr(start, slash - start));
        if (level == 0) {
            elem = "Benchmark" + elem;
        }
        if (!std::regex_search(elem, pattern[level])) {
            return false;
        }
        ++level;
        if (slash == std::string_view::npos) {
            break;
        }
        start = slash + 1;
    }
    return true;
}

// ---- Go side by side -----------------------------------------------------------------------

struct go_result {
    double ns_per_op = 0;
    double allocs_per_op = 0;
    double bytes_per_op = 0;
    std::int64_t n = 0;
};

/// Go's results by case name, in the order Go printed them.
using go_results = std::vector<std::pair<std::string, go_result>>;

// Runs `argv` in `cwd` with `env`, calling `on_line` for each line of its stdout and stderr.
// Returns its exit status, or -1 if it couldn't be started.
// Parses "BenchmarkX/y-4   123   45.6 ns/op   7 B/op   8 allocs/op" into the case name
// without "Benchmark" and the -GOMAXPROCS suffix.
std::optional<std::pair<std::string, go_result>> parse_go_line(const std::string& line) {
    static const std::regex re(R"(^Benchmark(\S+?)(-\d+)?\s+(\d+)\s+([0-9.]+) ns/op)"
                               R"((?:\s+([0-9.]+) B/op)?(?:\s+([0-9.]+) allocs/op)?)");
    std::smatch m;
    if (!std::regex_search(line, m, re)) {
        return std::nullopt;
    }
    go_result r;
    r.n = std::stoll(m[3].str());
    r.ns_per_op = std::stod(m[4].str());
    if (m[5].matched) {
        r.bytes_per_op = std::stod(m[5].str());
    }
    if (m[6].matched) {
        r.allocs_per_op = std::stod(m[6].str());
    }
    return std::pair{m[1].str(), r};
}

// CommonParentCancel's loop without the context calls, as a Go module of its own, so that
// the context work of that case can be told apart from the divisions on both sides.
constexpr std::string_view busy_work_go = R"(package busywork

import "testing"

func BenchmarkBusyWork(b *testing.B) {
	b.RunParallel(func(pb *testing.PB) {
		x := 0
		for pb.Next() {
			for i := 0; i < 100; i++ {
				x /= x + 1
			}
			for i := 0; i < 100; i++ {
				x /= x + 1
			}
		}
	})
}
)";

bool write_file(const std::string& path, std::string_view text) {
    std::FILE* f = std::fopen(path.c_str(), "w");
    if (f == nullptr) {
        return false;
    }
    bool ok = std::fwrite(text.data(), 1, text.size(), f) == text.size();
    return std::fclose(f) == 0 && ok;
}

// Go's side: builds the test binaries of Go's context package and of the busy work once, then
// runs one case at a time, right after tether's, so that both sides of a row see the same
// machine (other work on a shared machine comes and goes within a run).
class go_runner {
public:
    /// Finds go and builds the test binaries; check ok(), else note() says why not.
    explicit go_runner(bench_time bt) : bt_(bt) { prepare(); }
    go_runner(const go_runner&) = delete;
    go_runner& operator=(const go_runner&) = delete;
    ~go_runner() {
        if (!tmp_.empty()) {
            ::unlink((tmp_ + "/go.mod").c_str());
            ::unlink((tmp_ + "/busy_test.go").c_str());
            ::rmdir(tmp_.c_str());
        }
    }

    bool ok() const { return ok_; }
    /// Why there are no Go numbers; empty if ok().
    const std::string& note() const { return note_; }
    /// True if Go was there but failed, an error rather than a skip.
    bool failed() const { return failed_; }
    const std::string& version() const { return version_; }

    /// Runs Go's benchmark `name` ("CancelTree/depth=1/Root=Background"); a name that is a
    /// prefix runs every case under it. Returns the results by case name.
    go_results run(const std::string& name) {
        go_results out;
        if (!ok_) {
            return out;
        }
        std::vector<std::string> argv{
            context_test_,    "-test.run", "XXX", "-test.bench",     anchored(name),
            "-test.benchmem", "-test.cpu", "1",   "-test.benchtime", bt_.flag()};
        if (!run_test(argv, out)) {
            out.clear();
        }
        for (const auto& [n, r] : out) {
            fmt::print(stderr, "  go      {:<45} {:>12.1f} ns/op\n", n, r.ns_per_op);
        }
        return out;
    }

    /// Runs the busy work of CommonParentCancel alone.
    std::optional<go_result> run_busy_work() {
        go_results out;
        if (!ok_ || busy_test_.empty()) {
            return std::nullopt;
        }
        std::vector<std::string> argv{busy_test_,    "-test.run",       "XXX",
                                      "-test.bench", "BusyWork",        "-test.cpu",
                                      "1",           "-test.benchtime", bt_.flag()};
        if (!run_test(argv, out) || out.empty()) {
            return std::nullopt;
        }
        return out.front().second;
    }

private:
    // Go's -bench pattern that selects exactly `name` (and what is under it).
    static std::string anchored(const std::string& name) {
        std::string out;
        std::size_t start = 0;
        for (bool first = true;; first = false) {
            std::size_t slash = name.find('/', start);
            std::string elem = name.substr(start, slash - start);
            out += first ? "^Benchmark" : "/^";
            for (char ch : elem) {
                if (std::strchr(R"(\.+*?()|[]{}^$)", ch) != nullptr) {
                    out += '\\';
                }
                out += ch;
            }
            out += '$';
            if (slash == std::string::npos) {
                return out;
            }
            start = slash + 1;
        }
    }

    void keep_tail(const std::string& line) {
        tail_.push_back(line);
        if (tail_.size() > 20) {
            tail_.erase(tail_.begin());
        }
    }

    // Runs a command with Go's environment; on failure, records why and returns false.
    bool run_go_command(const std::vector<std::string>& argv, const std::string& cwd,
                        const std::function<void(const std::string&)>& on_line) {
        tail_.clear();
        int st = run_command(argv, env_, cwd, [&](const std::string& line) {
            keep_tail(line);
            on_line(line);
        });
        if (st != 0) {
            ok_ = false;
            failed_ = true;
            note_ = fmt::format("`{}` failed (status {}); its last lines:\n  {}",
                                fmt::join(argv, " "), st, fmt::join(tail_, "\n  "));
            return false;
        }
        return true;
    }

    bool run_test(const std::vector<std::string>& argv, go_results& out) {
        return run_go_command(argv, cache_, [&](const std::string& line) {
            if (auto r = parse_go_line(line)) {
                out.push_back(std::move(*r));
            }
        });
    }

    void prepare() {
        std::optional<std::string> go = find_go();
        if (!go) {
            note_ = "Go columns skipped: `go` is not in PATH (Debian: apt-get install golang-go)";
            return;
        }
        cache_ = go_cache_dir("context-bench");
        env_ = go_environment(cache_);
        env_.push_back("GOMAXPROCS=1");
        ok_ = true;
        std::string version;
        if (!run_go_command({*go, "version"}, cache_, [&](const std::string& line) {
                if (version.empty()) {
                    version = line;
                }
            })) {
            return;
        }
        version_ = version;
        context_test_ = cache_ + "/context.test";
        fmt::print(stderr, "building Go's context benchmark: GOCACHE={} go test -c context\n",
                   cache_);
        if (!run_go_command({*go, "test", "-c", "-o", context_test_, "context"}, cache_,
                            [](const std::string&) {})) {
            return;
        }
        // The busy work is optional: without it CommonParentCancel just has no breakdown.
        std::string tmp = std::getenv("TMPDIR") ? std::getenv("TMPDIR") : "/tmp";
        tmp += "/context_bench.XXXXXX";
        if (::mkdtemp(tmp.data()) != nullptr) {
            tmp_ = tmp;
            std::string bin = cache_ + "/busywork.test";
            std::vector<std::string> argv{*go, "test", "-c", "-o", bin};
            if (write_file(tmp_ + "/go.mod", "module busywork\n\ngo 1.19\n") &&
                write_file(tmp_ + "/busy_test.go", busy_work_go) &&
                run_command(argv, env_, tmp_, [](const std::string&) {}) == 0) {
                busy_test_ = bin;
            }
        }
    }

    bench_time bt_;
    bool ok_ = false;
    bool failed_ = false;
    std::string note_;
    std::string version_;
    std::string cache_;
    std::string tmp_;
    std::vector<std::string> env_;
    std::string context_test_;
    std::string busy_test_;
    std::vector<std::string> tail_;
};

// ---- output --------------------------------------------------------------------------------

struct row {
    std::string name;
    std::optional<result> tether; // the round with the median time
    std::optional<go_result> go;
    std::vector<double> tether_ns; // ns/op of every round
    std::vector<double> go_ns;
    std::optional<double> ratio() const {
        if (tether && go && tether->ns_per_op > 0) {
            return go->ns_per_op / tether->ns_per_op;
        }
        return std::nullopt;
    }
};

// Prints a time per op with three significant digits, as Go does for small values.
std::string format_ns(double ns) {
    if (ns >= 100) {
        return fmt::format("{:.0f}", ns);
    }
    if (ns >= 10) {
        return fmt::format("{:.1f}", ns);
    }
    return fmt::format("{:.2f}", ns);
}

// Go prints allocs/op truncated to an integer; so do we, the JSON has the exact figure.
std::string format_allocs(double a) {
    return fmt::format("{}", static_cast<std::int64_t>(a));
}

constexpr double target_ratio = 3.0;

// Returns the sample with the median time per op (the lower one of an even count), or nullopt
// if there is none.
template <class R>
std::optional<R> median_sample(std::vector<R> v) {
    if (v.empty()) {
        return std::nullopt;
    }
    std::sort(v.begin(), v.end(), [](const R& a, const R& b) { return a.ns_per_op < b.ns_per_op; });
    return v[(v.size() - 1) / 2];
}

// "min..max" of the rounds' times, "-" without any.
std::string format_spread(const std::vector<double>& ns) {
    if (ns.empty()) {
        return "-";
    }
    auto [lo, hi] = std::minmax_element(ns.begin(), ns.end());
    return format_ns(*lo) + ".." + format_ns(*hi);
}

void print_table(const std::vector<row>& rows) {
    std::size_t w = 4;
    std::size_t sw = 8; // the spread columns
    for (const auto& r : rows) {
        w = std::max(w, r.name.size());
        sw = std::max({sw, format_spread(r.tether_ns).size(), format_spread(r.go_ns).size()});
    }
    fmt::print("\n{:<{}} | {:>12} | {:>{}} | {:>9} | {:>12} | {:>{}} | {:>12} | {:>16}\n", "case",
               w, "tether ns/op", "min..max", sw, "allocs/op", "Go ns/op", "min..max", sw,
               "Go allocs/op", "ratio (Go/tether)");
    fmt::print("{:-<{}}-|-{:->12}-|-{:->{}}-|-{:->9}-|-{:->12}-|-{:->{}}-|-{:->12}-|-{:->16}\n", "",
               w, "", "", sw, "", "", "", sw, "", "");
    for (const auto& r : rows) {
        std::string t_ns = r.tether ? format_ns(r.tether->ns_per_op) : "n/a";
        std::string t_al = r.tether ? format_allocs(r.tether->allocs_per_op) : "n/a";
        std::string g_ns = r.go ? format_ns(r.go->ns_per_op) : "-";
        std::string g_al = r.go ? format_allocs(r.go->allocs_per_op) : "-";
        std::string ratio = "-";
        if (auto q = r.ratio()) {
            ratio = fmt::format("{:.1f}x{}", *q, *q < target_ratio ? " (<3x)" : "");
        }
        fmt::print("{:<{}} | {:>12} | {:>{}} | {:>9} | {:>12} | {:>{}} | {:>12} | {:>16}\n", r.name,
                   w, t_ns, r.tether ? format_spread(r.tether_ns) : "n/a", sw, t_al, g_ns,
                   format_spread(r.go_ns), sw, g_al, ratio);
    }
}

// What the Go side came to, for the output.
struct go_summary {
    bool asked = false;  // --go
    bool ran = false;    // every Go case ran
    bool failed = false; // go was there but failed: an error, not a skip
    std::string note;    // why there are no (or not all) Go numbers
    std::string version;
    std::optional<go_result> busy_work;
};

bool write_json(const std::string& file, const std::vector<row>& rows, const go_summary& g,
                const std::optional<result>& busy, bench_time bt, int rounds,
                const std::vector<std::string>& notes) {
    std::string out = "{\n";
    out += fmt::format("  \"benchtime\": \"{}\",\n  \"rounds\": {},\n", bt.flag(), rounds);
    out += fmt::format("  \"go\": {{\"ran\": {}, \"version\": \"{}\", \"note\": \"{}\"}},\n",
                       g.ran ? "true" : "false", json_escape(g.version), json_escape(g.note));
    out += fmt::format("  \"target_ratio\": {},\n", target_ratio);
    // CommonParentCancel's busy work alone, in ns/op; null where not measured.
    auto ns_or_null = [](auto&& r) { return r ? fmt::format("{:.3f}", r->ns_per_op) : "null"; };
    out += fmt::format("  \"common_parent_cancel_busy_work\": {{\"tether\": {}, \"go\": {}}},\n",
                       ns_or_null(busy), ns_or_null(g.busy_work));
    out += "  \"cases\": [\n";
    for (std::size_t i = 0; i < rows.size(); ++i) {
        const row& r = rows[i];
        out += fmt::format("    {{\"name\": \"{}\"", json_escape(r.name));
        if (r.tether) {
            out += fmt::format(", \"tether\": {{\"ns_per_op\": {:.3f}, \"allocs_per_op\": {:.3f}, "
                               "\"bytes_per_op\": {:.1f}, \"iterations\": {}}}",
                               r.tether->ns_per_op, r.tether->allocs_per_op, r.tether->bytes_per_op,
                               r.tether->n);
        } else {
            out += ", \"tether\": null";
        }
        if (r.go) {
            out += fmt::format(", \"go\": {{\"ns_per_op\": {:.3f}, \"allocs_per_op\": {:.0f}, "
                               "\"bytes_per_op\": {:.0f}, \"iterations\": {}}}",
                               r.go->ns_per_op, r.go->allocs_per_op, r.go->bytes_per_op, r.go->n);
        } else {
            out += ", \"go\": null";
        }
        out += fmt::format(", \"tether_samples_ns\": [{:.3f}], \"go_samples_ns\": [{:.3f}]",
                           fmt::join(r.tether_ns, ", "), fmt::join(r.go_ns, ", "));
        if (auto q = r.ratio()) {
            out += fmt::format(", \"ratio\": {:.3f}", *q);
        } else {
            out += ", \"ratio\": null";
        }
        out += i + 1 < rows.size() ? "},\n" : "}\n";
    }
    out += "  ],\n  \"notes\": [";
    for (std::size_t i = 0; i < notes.size(); ++i) {
        out += fmt::format("{}\"{}\"", i ? ", " : "", json_escape(notes[i]));
    }
    out += "]\n}\n";
    std::FILE* f = std::fopen(file.c_str(), "w");
    if (f == nullptr) {
        fmt::print(stderr, "context_bench: can't write {}: {}\n", file, std::strerror(errno));
        return false;
    }
    bool ok = std::fwrite(out.data(), 1, out.size(), f) == out.size();
    ok = std::fclose(f) == 0 && ok;
    if (!ok) {
        fmt::print(stderr, "context_bench: can't write {}\n", file);
    }
    return ok;
}

void usage(std::FILE* to) {
    fmt::print(
        to, "usage: context_bench [--quick] [--rounds N] [--benchtime T] [--bench PATTERN]\n"
            "                     [--go] [--json FILE] [--list]\n"
            "  --quick          one round of about 0.1 s per case instead of 3 of 1 s\n"
            "  --rounds N       run every case N times (default 3, 1 with --quick); the table\n"
            "                   shows the median and the spread (min..max)\n"
            "  --benchtime T    T seconds per case (\"0.5\", \"0.5s\"), or \"Nx\": N iterations\n"
            "  --bench PATTERN  only the cases matching PATTERN (Go's -bench syntax)\n"
            "  --go             also run Go's benchmark (go test -bench context) and print\n"
            "                   the ratio Go/tether per case\n"
            "  --json FILE      also write the results to FILE\n"
            "  --list           print the case names and exit\n");
}

} // namespace

int main(int argc, char** argv) {
    bench_time bt;
    int rounds = 0; // 0: 3, or 1 with --quick
    bool quick = false;
    std::string pattern = ".";
    std::string json_file;
    bool with_go = false; // Go's benchmark side by side
    bool list = false;
    for (int i = 1; i < argc; ++i) {
        std::string_view a = argv[i];
        auto value = [&](std::string_view flag) -> std::string {
            if (i + 1 >= argc) {
                fmt::print(stderr, "context_bench: {} needs a value\n", flag);
                std::exit(2);
            }
            return argv[++i];
        };
        if (a == "--quick") {
            bt.d = 100ms;
            quick = true;
        } else if (a == "--rounds") {
            rounds = std::atoi(value(a).c_str());
            if (rounds < 1) {
                fmt::print(stderr, "context_bench: --rounds needs a count of at least 1\n");
                return 2;
            }
        } else if (a == "--benchtime") {
            // Go's syntax: seconds ("0.5", "0.5s"), or "100x" for exactly 100 iterations.
            std::string v = value(a);
            char* end = nullptr;
            double s = std::strtod(v.c_str(), &end);
            std::string_view unit(end);
            if (end == v.c_str() || !(s > 0) || (unit != "" && unit != "s" && unit != "x")) {
                fmt::print(stderr, "context_bench: bad --benchtime {}\n", v);
                return 2;
            }
            if (unit == "x") {
                bt.n = static_cast<std::int64_t>(s);
            } else {
                bt.d =
                    std::chrono::duration_cast<steady::duration>(std::chrono::duration<double>(s));
            }
        } else if (a == "--bench") {
            pattern = value(a);
        } else if (a == "--go") {
            with_go = true;
        } else if (a == "--json") {
            json_file = value(a);
        } else if (a == "--list") {
            list = true;
        } else if (a == "--help" || a == "-h") {
            usage(stdout);
            return 0;
        } else {
            fmt::print(stderr, "context_bench: unknown argument {}\n", a);
            usage(stderr);
            return 2;
        }
    }

    std::vector<std::regex> compiled;
    try {
        for (const auto& p : split_pattern(pattern)) {
            compiled.emplace_back(p, std::regex::ECMAScript);
        }
    } catch (const std::regex_error& e) {
        fmt::print(stderr, "context_bench: bad --bench pattern {}: {}\n", pattern, e.what());
        return 2;
    }

    std::vector<bench_case> cases;
    for (auto& c : all_cases()) {
        if (matches(compiled, c.name)) {
            cases.push_back(std::move(c));
        }
    }
    if (list) {
        for (const auto& c : cases) {
            fmt::print("{}\n", c.name);
        }
        return 0;
    }

    if (rounds == 0) {
        // One round with --quick: WithTimeout's setup (up to 400,000 timers per run, on both
        // sides) would take most of a quick suite's two minutes if repeated.
        rounds = quick ? 1 : 3;
    }
    fmt::print(stderr, "context_bench: {} cases, {} rounds of {} each\n", cases.size(), rounds,
               bt.flag());
    std::optional<go_runner> go;
    if (with_go) {
        go.emplace(bt);
        if (!go->ok()) {
            fmt::print(stderr, "context_bench: {}\n", go->note());
        }
    }
    // A B A B: every round runs each case on tether and then on Go, so that both sides of a
    // row see the same machine; the table shows the median round and the spread.
    std::vector<row> rows;
    for (const auto& c : cases) {
        row r;
        r.name = c.name;
        std::vector<result> t;
        std::vector<go_result> gs;
        for (int round = 0; round < rounds; ++round) {
            t.push_back(measure(c, bt));
            r.tether_ns.push_back(t.back().ns_per_op);
            fmt::print(stderr, "  tether  {:<45} {:>12.1f} ns/op\n", c.name, t.back().ns_per_op);
            if (go && go->ok()) {
                for (auto& [name, res] : go->run(c.name)) {
                    if (name == c.name) {
                        gs.push_back(res);
                        r.go_ns.push_back(res.ns_per_op);
                    }
                }
            }
        }
        r.tether = median_sample(std::move(t));
        r.go = median_sample(std::move(gs));
        rows.push_back(std::move(r));
    }
    go_summary g;
    std::optional<result> busy;
    if (matches(compiled, "CommonParentCancel")) {
        busy = measure({"busy work", common_parent_cancel_busy_work}, bt);
        if (go && go->ok()) {
            g.busy_work = go->run_busy_work();
        }
    }
    if (go && go->ok() && matches(compiled, std::string(not_run_prefix))) {
        std::vector<std::pair<std::string, std::vector<go_result>>> go_only;
        for (int round = 0; round < rounds; ++round) {
            for (const auto& [name, res] :
                 go->run(std::string(not_run_prefix.substr(0, not_run_prefix.size() - 1)))) {
                if (!matches(compiled, name)) {
                    continue;
                }
                auto it = std::find_if(go_only.begin(), go_only.end(),
                                       [&](const auto& e) { return e.first == name; });
                if (it == go_only.end()) {
                    it = go_only.insert(go_only.end(), {name, {}});
                }
                it->second.push_back(res);
            }
        }
        for (auto& [name, results] : go_only) {
            row r;
            r.name = name;
            for (const auto& res : results) {
                r.go_ns.push_back(res.ns_per_op);
            }
            r.go = median_sample(std::move(results));
            rows.push_back(std::move(r));
        }
    }
    if (go) {
        g.asked = true;
        g.ran = go->ok();
        g.failed = go->failed();
        g.note = go->note();
        g.version = go->version();
    }

    std::vector<std::string> notes;
    notes.push_back("one thread; Go ran with GOMAXPROCS=1 (-cpu 1), so its RunParallel cases "
                    "(CommonParentCancel, WithTimeout, ContextCancelDone) ran one goroutine, and "
                    "tether runs the same loop on one thread (WithTimeout/concurrency=N: N timers "
                    "pending on the real clock, made by that thread)");
    if (g.ran) {
        notes.push_back(fmt::format(
            "A B A B over {} round{}: each case ran on tether and then on Go, from Go's own "
            "test binary (go test -c context), so both sides of a row saw the same machine; "
            "ns/op is the median round, min..max the spread",
            rounds, rounds == 1 ? "" : "s"));
    }
    notes.push_back("allocs/op: calls to operator new on the benchmark thread; Go: mallocs");
    notes.push_back("CancelTree: Go drops the cancel funcs; a cancel_handle cancels when "
                    "destroyed, so they are kept to the end of each op and destroyed inside the "
                    "timed loop");
    std::optional<double> context_work_ratio;
    if (busy && g.busy_work) {
        const row* cpc = nullptr;
        for (const auto& r : rows) {
            if (r.name == "CommonParentCancel" && r.tether && r.go) {
                cpc = &r;
            }
        }
        if (cpc != nullptr) {
            double t = cpc->tether->ns_per_op - busy->ns_per_op;
            double gw = cpc->go->ns_per_op - g.busy_work->ns_per_op;
            if (t > 0 && gw > 0) {
                context_work_ratio = gw / t;
            }
            std::string split =
                t > 0 && gw > 0
                    ? fmt::format("which leaves {} ns/op of context work for tether and {} for Go "
                                  "({:.1f}x)",
                                  format_ns(t), format_ns(gw), *context_work_ratio)
                    : std::string("and the rest is too small to tell from the noise of this run");
            notes.push_back(fmt::format(
                "CommonParentCancel is mostly its busy work, 200 dependent integer divisions per "
                "op, the same on both sides: alone it costs tether {} and Go {} ns/op, {}",
                format_ns(busy->ns_per_op), format_ns(g.busy_work->ns_per_op), split));
        }
    } else if (busy) {
        notes.push_back(fmt::format(
            "CommonParentCancel is mostly its busy work, 200 dependent integer divisions per op, "
            "which cost {} ns/op alone here",
            format_ns(busy->ns_per_op)));
    }
    if (g.ran) {
        notes.push_back("DeepValueNewGoRoutine times starting and waiting for a goroutine around "
                        "one lookup; tether's counterpart, spawning a task on a loop, is the "
                        "runtime's cost, not the context's, so that case is shown for Go only");
    }

    print_table(rows);
    fmt::print("\n");
    for (const auto& n : notes) {
        fmt::print("note: {}\n", n);
    }
    if (g.asked) {
        if (!g.note.empty()) {
            fmt::print("note: {}\n", g.note);
        }
        if (!g.version.empty()) {
            fmt::print("go: {}\n", g.version);
        }
        std::vector<std::string> misses;
        int compared = 0;
        for (const auto& r : rows) {
            if (auto q = r.ratio()) {
                ++compared;
                if (*q < target_ratio) {
                    misses.push_back(fmt::format("{} ({:.1f}x)", r.name, *q));
                }
            }
        }
        if (compared > 0) {
            fmt::print("target {:.0f}x faster than Go: {} of {} cases meet it{}{}\n", target_ratio,
                       compared - static_cast<int>(misses.size()), compared,
                       misses.empty() ? "" : "; below: ", fmt::join(misses, ", "));
        }
    }

    bool ok = true;
    if (!json_file.empty()) {
        ok = write_json(json_file, rows, g, busy, bt, rounds, notes);
    }
    // Asked for Go and go was there but failed: that is an error, not a quiet skip.
    if (g.failed) {
        ok = false;
    }
    return ok ? 0 : 1;
}
