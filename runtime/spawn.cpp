#include "runtime/spawn.hpp"

#include "runtime/loop.hpp"

#include <cassert>

namespace tether::detail {

void spawn_base::complete() noexcept {
    done = true;
    cancel.reset(); // releases the context's registration on its parent
    if (waiter* j = std::exchange(joiner, nullptr)) {
        j->finish({});
    }
}

void spawn_base::start(std::coroutine_handle<> h) {
    lp = current_loop();
    assert(lp != nullptr && "spawn needs a running loop");
    lp->schedule(h);
}

} // namespace tether::detail
