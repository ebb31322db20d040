#pragma once
// tether's whole public API.

#include "tether/context.hpp"
#include "tether/net.hpp"
#include "tether/runtime.hpp"
