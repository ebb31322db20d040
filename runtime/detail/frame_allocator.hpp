#pragma once

#include <cstddef>

namespace tether::detail {

/// Allocates coroutine frames from per-thread free lists of size classes 16 bytes apart (frames
/// up to 2 KiB); larger frames go to operator new. A frame may be freed on another thread: the
/// block joins that thread's list.
///
/// Under AddressSanitizer every frame goes to operator new, so use-after-free stays visible.
void* allocate_frame(std::size_t n);
/// Returns a frame to the calling thread's free list.
void deallocate_frame(void* p, std::size_t n) noexcept;

} // namespace tether::detail
