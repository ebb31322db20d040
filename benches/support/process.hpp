#pragma once
// What the benchmarks that run Go side by side share: finding `go`, its environment and
// build cache, running a program with its output read line by line, and the bits of output
// (medians, JSON strings) every table and result file uses.

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdlib>
#include <fcntl.h>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

namespace tether::bench {

/// Runs `argv` (argv[0] a path) with exactly `env` as its environment, in `cwd` (the current
/// directory if empty), calling `on_line` with each line of its stdout and stderr. Returns
/// its exit status (128 + signal if killed), or -1 if it could not be started.
inline int run_command(const std::vector<std::string>& argv, const std::vector<std::string>& env,
                       const std::string& cwd,
                       const std::function<void(const std::string&)>& on_line) {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) {
        return -1;
    }
    std::vector<char*> args;
    for (const auto& a : argv) {
        args.push_back(const_cast<char*>(a.c_str()));
    }
    args.push_back(nullptr);
    std::vector<char*> envp;
    for (const auto& e : env) {
        envp.push_back(const_cast<char*>(e.c_str()));
    }
    envp.push_back(nullptr);
    pid_t pid = ::fork();
    if (pid < 0) {
        ::close(fds[0]);
        ::close(fds[1]);
        return -1;
    }
    if (pid == 0) {
        // Only async-signal-safe calls from here: the real clock's thread may exist.
        ::dup2(fds[1], 1);
        ::dup2(fds[1], 2);
        if (!cwd.empty() && ::chdir(cwd.c_str()) != 0) {
            ::_exit(127);
        }
        ::execve(args[0], args.data(), envp.data());
        ::_exit(127);
    }
    ::close(fds[1]);
    std::string pending;
    std::array<char, 4096> buf{};
    for (;;) {
        ssize_t r = ::read(fds[0], buf.data(), buf.size());
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r <= 0) {
            break;
        }
        pending.append(buf.data(), static_cast<std::size_t>(r));
        std::size_t nl;
        while ((nl = pending.find('\n')) != std::string::npos) {
            on_line(pending.substr(0, nl));
            pending.erase(0, nl + 1);
        }
    }
    if (!pending.empty()) {
        on_line(pending);
    }
    ::close(fds[0]);
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/// Like the above, in the current directory.
inline int run_command(const std::vector<std::string>& argv, const std::vector<std::string>& env,
                       const std::function<void(const std::string&)>& on_line) {
    return run_command(argv, env, std::string(), on_line);
}

/// Returns the path of `go` found through PATH, or nothing.
inline std::optional<std::string> find_go() {
    const char* p = std::getenv("PATH");
    std::string path = p ? p : "/usr/local/bin:/usr/bin:/bin";
    std::size_t start = 0;
    for (;;) {
        std::size_t colon = path.find(':', start);
        std::string dir = path.substr(start, colon - start);
        std::string candidate = (dir.empty() ? std::string(".") : dir) + "/go";
        if (::access(candidate.c_str(), X_OK) == 0) {
            return candidate;
        }
        if (colon == std::string::npos) {
            return std::nullopt;
        }
        start = colon + 1;
    }
}

/// The directory of this executable ("." if unknown): where Go's build cache is kept
/// between runs.
inline std::string exe_dir() {
    std::array<char, 4096> buf{};
    ssize_t len = ::readlink("/proc/self/exe", buf.data(), buf.size() - 1);
    if (len <= 0) {
        return ".";
    }
    std::string path(buf.data(), static_cast<std::size_t>(len));
    std::size_t slash = path.rfind('/');
    return slash == std::string::npos ? "." : path.substr(0, slash);
}

/// Go's build cache for the benchmark `name`: `go-cache` next to this executable, or
/// `/tmp/tether-NAME-go-cache` where that can't be made.
inline std::string go_cache_dir(std::string_view name) {
    std::string cache = exe_dir() + "/go-cache";
    if (::mkdir(cache.c_str(), 0755) != 0 && errno != EEXIST) {
        cache = fmt::format("/tmp/tether-{}-go-cache", name);
        ::mkdir(cache.c_str(), 0755);
    }
    return cache;
}

/// The environment to run `go` and the Go side's programs in: the caller's, without the
/// variables that would skew a measurement or change what gets built (GOMAXPROCS, GOGC,
/// GODEBUG, GOFLAGS such as -race, GO111MODULE, GOCACHE), with `cache` as the build cache
/// and a HOME for Go's config when the caller has none (CI). The caller adds GOMAXPROCS and,
/// for a lone main package, GO111MODULE=off.
inline std::vector<std::string> go_environment(const std::string& cache) {
    std::vector<std::string> env;
    for (char** e = environ; *e != nullptr; ++e) {
        std::string_view v(*e);
        if (v.starts_with("GOMAXPROCS=") || v.starts_with("GOCACHE=") ||
            v.starts_with("GOFLAGS=") || v.starts_with("GO111MODULE=") || v.starts_with("GOGC=") ||
            v.starts_with("GODEBUG=")) {
            continue;
        }
        env.emplace_back(v);
    }
    env.push_back("GOCACHE=" + cache);
    env.push_back("GOFLAGS=");
    if (std::getenv("HOME") == nullptr) {
        env.push_back("HOME=" + cache);
    }
    return env;
}

/// A Go program built for a benchmark's Go side: `ready` once `binary` exists, `note` (why
/// there are no Go numbers) otherwise; `env` is what to run it with.
struct go_program {
    bool ready = false;
    std::string note;
    std::string binary;
    std::vector<std::string> env;
};

/// Builds `src_dir`/main.go into `binary_name` next to this executable (GO111MODULE=off: a
/// lone main package needs no module and no download), with Go's build cache for `bench`
/// there too (go_cache_dir). The program runs with GOMAXPROCS=`gomaxprocs`.
inline go_program build_go_program(const std::string& src_dir, std::string_view bench,
                                   const std::string& binary_name, int gomaxprocs) {
    go_program g;
    std::optional<std::string> go = find_go();
    if (!go) {
        g.note = "Go columns skipped: `go` is not in PATH (Debian: apt-get install golang-go)";
        return g;
    }
    std::string src = src_dir + "/main.go";
    if (::access(src.c_str(), R_OK) != 0) {
        g.note = fmt::format("Go columns skipped: {} is missing", src);
        return g;
    }
    std::vector<std::string> env = go_environment(go_cache_dir(bench));
    env.push_back("GO111MODULE=off");
    g.binary = exe_dir() + "/" + binary_name;
    std::vector<std::string> out;
    int st = run_command({*go, "build", "-o", g.binary, src}, env,
                         [&](const std::string& line) { out.push_back(line); });
    if (st != 0) {
        g.note = fmt::format("Go columns skipped: `go build {}` failed (status {}):\n  {}", src, st,
                             fmt::join(out, "\n  "));
        return g;
    }
    env.push_back(fmt::format("GOMAXPROCS={}", gomaxprocs));
    g.env = std::move(env);
    g.ready = true;
    return g;
}

/// The median of `v` (0 if empty).
inline double median(std::vector<double> v) {
    if (v.empty()) {
        return 0;
    }
    std::sort(v.begin(), v.end());
    std::size_t m = v.size() / 2;
    return v.size() % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
}

/// `s` as the inside of a JSON string.
inline std::string json_escape(std::string_view s) {
    std::string out;
    for (char c : s) {
        switch (c) {
        case '"':
            out += "\\\"";
            break;
        case '\\':
            out += "\\\\";
            break;
        case '\n':
            out += "\\n";
            break;
        default:
            if (static_cast<unsigned char>(c) < 0x20) {
                out += fmt::format("\\u{:04x}", static_cast<unsigned>(c));
            } else {
                out += c;
            }
        }
    }
    return out;
}

} // namespace tether::bench
