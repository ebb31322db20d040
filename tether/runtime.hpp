#pragma once
// The runtime: the io_uring loop, task<T>, timers, structured concurrency and sync.

#include "tether/context.hpp"
