// The main() of every test executable: probes io_uring, then runs doctest.
//
// If a ring can't be set up (an old kernel, io_uring_disabled, a seccomp profile that blocks
// io_uring_setup) the suite prints one line saying why and exits 77, which Meson counts as a
// skip, as liburing's and libcamera's tests do. With TETHER_REQUIRE_URING=1, which CI sets, it
// fails instead.

#define DOCTEST_CONFIG_IMPLEMENT

#include <liburing.h>

#include <doctest/doctest.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string_view>

namespace {

constexpr int exit_skip = 77; // Meson's (and automake's) "skipped"

// Returns 0 if a ring can be set up and torn down, or the negative errno of the failure.
int probe_uring() noexcept {
    io_uring ring;
    int r = io_uring_queue_init(8, &ring, 0);
    if (r == 0) {
        io_uring_queue_exit(&ring);
    }
    return r;
}

bool uring_required() noexcept {
    const char* v = std::getenv("TETHER_REQUIRE_URING");
    return v != nullptr && std::string_view(v) == "1";
}

} // namespace

int main(int argc, char** argv) {
    if (int r = probe_uring(); r < 0) {
        if (uring_required()) {
            std::fprintf(stderr,
                         "io_uring unavailable (io_uring_queue_init: %s) and "
                         "TETHER_REQUIRE_URING=1\n",
                         std::strerror(-r));
            return EXIT_FAILURE;
        }
        std::printf("skipped: io_uring unavailable (io_uring_queue_init: %s)\n", std::strerror(-r));
        return exit_skip;
    }
    doctest::Context ctx(argc, argv);
    return ctx.run();
}
