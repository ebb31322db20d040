#pragma once

#include <cstddef>

namespace tether::detail {

/// Allocates coroutine frames from per-thread free lists of size classes 16 bytes apart (frames
/// up to 2 KiB); larger frames go to operator new. A frame may be freed on another thread: the
/// block joins that thread's list.
///
/// The common case (a block of the class on the list, or room for one) is inline: one
/// %fs-relative load and a list pop or push, no call. Under AddressSanitizer or
/// ThreadSanitizer every frame goes to operator new, so use-after-free stays visible.
void* allocate_frame(std::size_t n);
/// Returns a frame to the calling thread's free list.
void deallocate_frame(void* p, std::size_t n) noexcept;

/// A thread's free lists: one per size class of 16k + 8 bytes (24, 40, ..., 2040).
struct frame_lists {
    struct block {
        block* next;
    };
    static constexpr std::size_t granule = 16;
    static constexpr std::size_t classes = 128; // up to 2 KiB
    static constexpr std::size_t max_cached_per_class = 4096;
    static constexpr std::size_t class_of(std::size_t n) noexcept {
        return (n + granule / 2 - 1) / granule;
    }
    block* head[classes] = {};
    std::size_t count[classes] = {};
};

/// The calling thread's lists: null before its first frame, after its lists are destroyed,
/// and always when frames are not recycled (sanitizers). initial-exec: 8 bytes of static TLS,
/// reached with one %fs-relative load (libtether is linked, or dlopen'ed with room for them).
[[gnu::tls_model("initial-exec")]] extern constinit thread_local frame_lists* tls_frame_lists;

/// What allocate_frame does when the class's list is empty (or there is none yet).
void* allocate_frame_slow(std::size_t n);
/// What deallocate_frame does when the class's list is full (or there is none).
void deallocate_frame_slow(void* p, std::size_t n) noexcept;

inline void* allocate_frame(std::size_t n) {
    if (frame_lists* l = tls_frame_lists) {
        const std::size_t c = frame_lists::class_of(n);
        if (c < frame_lists::classes) {
            if (frame_lists::block* b = l->head[c]) {
                l->head[c] = b->next;
                --l->count[c];
                return b;
            }
        }
    }
    return allocate_frame_slow(n);
}

inline void deallocate_frame(void* p, std::size_t n) noexcept {
    if (frame_lists* l = tls_frame_lists) {
        const std::size_t c = frame_lists::class_of(n);
        if (c < frame_lists::classes && l->count[c] < frame_lists::max_cached_per_class) {
            auto* b = static_cast<frame_lists::block*>(p);
            b->next = l->head[c];
            l->head[c] = b;
            ++l->count[c];
            return;
        }
    }
    deallocate_frame_slow(p, n);
}

} // namespace tether::detail
