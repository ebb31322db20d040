#pragma once
// pipe_fds: a pipe for a test, closed at the end of its scope.

#include <doctest/doctest.h>

#include <fcntl.h>
#include <unistd.h>

namespace tether::test {

/// Both ends of a pipe (O_CLOEXEC); fails the test if the pipe can't be made.
struct pipe_fds {
    int r = -1;
    int w = -1;
    pipe_fds() {
        int fds[2];
        REQUIRE(::pipe2(fds, O_CLOEXEC) == 0);
        r = fds[0];
        w = fds[1];
    }
    ~pipe_fds() {
        ::close(r);
        ::close(w);
    }
    pipe_fds(const pipe_fds&) = delete;
    pipe_fds& operator=(const pipe_fds&) = delete;
};

} // namespace tether::test
