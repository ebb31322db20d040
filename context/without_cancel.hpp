#pragma once
// without_cancel: keep the values, drop cancellation and deadline.

#include "context/context.hpp"

namespace tether {

/// Returns a child of `parent` that keeps its values but is never done and has no
/// deadline, even when `parent` is canceled.
///
/// Use it for cleanup that must run after a request is canceled (flush, log, close)
/// while keeping the request ID and user. `cause()` of the result is always empty.
///
/// Errors: throws std::bad_alloc if the node can't be allocated (one allocation).
[[nodiscard]] context without_cancel(const context& parent);

} // namespace tether
