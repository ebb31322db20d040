#pragma once
// child_process: runs an example binary with its stdout on a pipe, for the example checks.

#include <doctest/doctest.h>

#include <cerrno>
#include <chrono>
#include <csignal>
#include <poll.h>
#include <spawn.h>
#include <string>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

extern char** environ;

namespace check {

/// A child process whose stdout the test reads line by line.
class child_process {
public:
    /// Starts `path` with `args`; fails the test if it can't.
    child_process(const char* path, std::vector<std::string> args) {
        int fds[2];
        REQUIRE(::pipe(fds) == 0);
        posix_spawn_file_actions_t fa;
        posix_spawn_file_actions_init(&fa);
        posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
        posix_spawn_file_actions_addclose(&fa, fds[0]);
        std::vector<char*> argv{const_cast<char*>(path)};
        for (auto& a : args) {
            argv.push_back(a.data());
        }
        argv.push_back(nullptr);
        int rc = posix_spawn(&pid_, path, &fa, nullptr, argv.data(), environ);
        posix_spawn_file_actions_destroy(&fa);
        ::close(fds[1]);
        out_ = fds[0];
        REQUIRE(rc == 0);
    }
    child_process(const child_process&) = delete;
    child_process& operator=(const child_process&) = delete;
    ~child_process() {
        if (pid_ > 0) {
            ::kill(pid_, SIGKILL);
            ::waitpid(pid_, nullptr, 0);
        }
        ::close(out_);
    }

    /// Reads the next line of the child's stdout into `line` (without its newline); returns
    /// false at EOF, or if no line came within `timeout`.
    bool next_line(std::string& line,
                   std::chrono::milliseconds timeout = std::chrono::seconds(30)) {
        line.clear();
        char ch = 0;
        pollfd p{out_, POLLIN, 0};
        for (;;) {
            int n = ::poll(&p, 1, static_cast<int>(timeout.count()));
            if (n != 1) {
                return false;
            }
            ssize_t got = ::read(out_, &ch, 1);
            if (got != 1) {
                return false;
            }
            if (ch == '\n') {
                all_ += line;
                all_ += '\n';
                return true;
            }
            line += ch;
        }
    }

    /// Reads lines until one starts with `prefix`; returns it (empty if none came).
    std::string wait_for(const std::string& prefix) {
        std::string line;
        while (next_line(line)) {
            if (line.rfind(prefix, 0) == 0) {
                return line;
            }
        }
        return {};
    }

    /// Reads the rest of stdout and waits for the child to exit; returns its exit status, or
    /// -1 if it did not exit normally. A child still running 60 s after its last line is
    /// killed and the test fails with what it printed, rather than hanging until meson's
    /// timeout says nothing useful.
    int wait() {
        std::string line;
        while (next_line(line)) {
        }
        int status = 0;
        pid_t got = 0;
        for (int i = 0; i < 600 && got == 0; ++i) {
            got = ::waitpid(pid_, &status, WNOHANG);
            if (got == 0) {
                ::poll(nullptr, 0, 100);
            }
        }
        if (got == 0) {
            ::kill(pid_, SIGKILL);
            ::waitpid(pid_, nullptr, 0);
            pid_ = -1;
            FAIL("the child did not exit; its output:\n" << all_);
        }
        REQUIRE(got == pid_);
        pid_ = -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    }

    /// Sends `sig` to the child.
    void signal(int sig) const { REQUIRE(::kill(pid_, sig) == 0); }

    /// Everything read from stdout so far.
    const std::string& output() const noexcept { return all_; }

private:
    pid_t pid_ = -1;
    int out_ = -1;
    std::string all_;
};

} // namespace check
