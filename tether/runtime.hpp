#pragma once
// The runtime: the io_uring loop, task<T>, timers, structured concurrency and I/O.

#include "runtime/file.hpp"
#include "runtime/io.hpp"
#include "runtime/loop.hpp"
#include "runtime/offload.hpp"
#include "runtime/result.hpp"
#include "runtime/signal.hpp"
#include "runtime/sleep.hpp"
#include "runtime/spawn.hpp"
#include "runtime/task.hpp"
#include "runtime/task_group.hpp"
#include "runtime/when_all.hpp"
#include "runtime/when_any.hpp"
#include "tether/context.hpp"
