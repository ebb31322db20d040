#pragma once
// The whole context package: Go's context for C++.

#include "context/after_func.hpp"
#include "context/clock.hpp"
#include "context/context.hpp"
#include "context/errc.hpp"
#include "context/format.hpp"
#include "context/manual_clock.hpp"
#include "context/with_cancel.hpp"
#include "context/with_deadline.hpp"
#include "context/with_value.hpp"
#include "context/without_cancel.hpp"
