#pragma once
// manual_loop: a loop whose clock only moves when the test says so, the fixture of the runtime
// tests that time sleeps and deadlines without waiting for them.

#include "context/manual_clock.hpp"
#include "runtime/loop.hpp"

namespace tether::test {

/// A loop on a `manual_clock`: `clk.advance(d)` makes `d` pass for every timer and deadline
/// of the loop and of contexts rooted on `l.background()`.
struct manual_loop {
    manual_clock clk;
    loop l{{.clock = &clk}};
};

} // namespace tether::test
