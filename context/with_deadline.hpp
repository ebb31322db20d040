#pragma once
// with_deadline, with_timeout and their _cause variants.

#include "context/with_cancel.hpp"

#include <system_error>
#include <utility>

namespace tether {

/// Returns a child of `parent` that is done at `d` on the parent's clock, and the handle
/// that cancels it.
///
/// The child is done when `d` passes (err: `errc::deadline_exceeded`), when `parent` is
/// done, or when `cancel` is called or destroyed, whichever happens first. If `parent`'s
/// deadline is already earlier than `d`, the result is equivalent to `with_cancel(parent)`.
/// A deadline equal to the parent's is the child's own, as in Go: when the parent's timer
/// fires first the child gets the parent's error and cause through propagation
/// (`errc::deadline_exceeded`), else its own timer gives it its own cause. A deadline already
/// reached gives a child born with `errc::deadline_exceeded`.
///
/// The deadline takes effect with nobody calling cancel: a timer on the tree's clock fires
/// it (the loop's timers for a loop's contexts, a background thread for `real_clock()`).
///
/// Errors: throws std::bad_alloc if the node can't be allocated (one allocation).
[[nodiscard]] std::pair<context, cancel_handle> with_deadline(const context& parent, time_point d);

/// Like `with_deadline`, but when the deadline passes `tether::cause()` reports `cause`
/// (an empty cause means `errc::deadline_exceeded`).
[[nodiscard]] std::pair<context, cancel_handle>
with_deadline_cause(const context& parent, time_point d, std::error_code cause);

/// Returns `with_deadline(parent, parent.clock().now() + timeout)`.
///
/// A zero or negative `timeout` gives a child that is already done.
///
/// Example:
///
///     auto [ctx, cancel] = tether::with_timeout(parent, 2s);
[[nodiscard]] std::pair<context, cancel_handle> with_timeout(const context& parent,
                                                             duration timeout);

/// Like `with_timeout`, with the cause reported when the timeout passes.
[[nodiscard]] std::pair<context, cancel_handle>
with_timeout_cause(const context& parent, duration timeout, std::error_code cause);

} // namespace tether
