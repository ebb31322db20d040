#include "runtime/detail/frame_allocator.hpp"

#include <cstdlib>
#include <new>

namespace tether::detail {

// Null for as long as the thread has no lists (and always when frames are not recycled).
[[gnu::tls_model("initial-exec")]] constinit thread_local frame_lists* tls_frame_lists = nullptr;

namespace {

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr bool recycle = false;
#else
constexpr bool recycle = true;
#endif

// Size classes are 16k + 8 bytes (24, 40, ..., 2040): malloc adds an 8-byte header and rounds
// the chunk to 16, so a block of 16k + 8 fills its chunk exactly and a frame wastes at most 15
// bytes to rounding (64-byte classes wasted up to 63, 32 on average: a tenth of a small frame).
constexpr std::size_t granule = frame_lists::granule;
constexpr std::size_t classes = frame_lists::classes;
constexpr std::size_t max_cached_per_class = frame_lists::max_cached_per_class;

constexpr std::size_t class_of(std::size_t n) {
    return frame_lists::class_of(n);
}
constexpr std::size_t class_size(std::size_t c) {
    return c * granule + granule / 2;
}
static_assert(class_size(class_of(296)) == 296 && class_size(class_of(297)) == 312);
static_assert(class_size(class_of(1)) >= sizeof(void*));

using free_block = frame_lists::block;

[[gnu::tls_model("initial-exec")]] constinit thread_local bool tls_finished = false;

// The lists themselves are 3 KiB of dynamic TLS (a shared library reaches them through
// __tls_get_addr, a fifth of the cost of awaiting a task that completes at once): only
// tls_frame_lists, set at the thread's first frame, is read per frame.
struct owned_lists : frame_lists {
    ~owned_lists() {
        tls_frame_lists = nullptr;
        tls_finished = true; // frames freed later in this thread's exit go to operator delete
        for (std::size_t c = 0; c < classes; ++c) {
            while (free_block* b = head[c]) {
                head[c] = b->next;
                ::operator delete(b);
            }
        }
    }
};

thread_local owned_lists tls_lists;

// Returns the thread's lists, making them at its first frame; null once they are destroyed
// (and always without recycling).
frame_lists* lists() noexcept {
    if (frame_lists* l = tls_frame_lists) {
        return l;
    }
    if (!recycle || tls_finished) {
        return nullptr;
    }
    tls_frame_lists = &tls_lists; // registers its destructor for this thread
    return tls_frame_lists;
}

} // namespace

void* allocate_frame_slow(std::size_t n) {
    std::size_t c = class_of(n);
    if (!recycle || c >= classes) {
        return ::operator new(n);
    }
    frame_lists* l = lists();
    if (l == nullptr) {
        return ::operator new(class_size(c));
    }
    if (free_block* b = l->head[c]) { // the thread's first frame of the class
        l->head[c] = b->next;
        --l->count[c];
        return b;
    }
    return ::operator new(class_size(c));
}

void deallocate_frame_slow(void* p, std::size_t n) noexcept {
    std::size_t c = class_of(n);
    if (!recycle || c >= classes) {
        ::operator delete(p);
        return;
    }
    frame_lists* l = lists();
    if (l == nullptr || l->count[c] >= max_cached_per_class) {
        ::operator delete(p);
        return;
    }
    auto* b = static_cast<free_block*>(p);
    b->next = l->head[c];
    l->head[c] = b;
    ++l->count[c];
}

} // namespace tether::detail
