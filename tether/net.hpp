#pragma once
// Networking on io_uring.

#include "tether/runtime.hpp"
